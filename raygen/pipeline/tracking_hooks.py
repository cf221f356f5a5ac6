"""Snakemake's side of MLflow tracking: ``onstart`` opens this invocation's parent run, ``onsuccess`` /
``onerror`` end it (workflow/rules/common.smk). No stage imports this module, so an edit here reruns nothing.

The parent run lives in a helper process (``python -m raygen.tracking_helper``, Snakemake's own interpreter).
It takes the store's lock before it imports MLflow and says so at once: onstart waits only for that, and each
job's helper waits on the lock until the parent exists, so parallel jobs never race to create a fresh SQLite
store and never miss the parent. Where the helper fails (no MLflow beside Snakemake, a ``--use-conda`` run),
the first stage creates the parent instead, as under DVC. Never raises: a problem is a warning.

Standard library only at import time (:mod:`raygen.tracking` and :mod:`raygen.tracking_helper` are too): the
Snakefile imports this module before any environment is activated.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from pathlib import Path

from raygen import tracking
from raygen.tracking_helper import READY

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0  # how long onstart waits for the helper to hold the store's lock


class PipelineRun(tracking.RunProcess):
    """The parent run's helper, which onstart waits for until it holds the store's lock."""

    def wait_ready(self, timeout: float) -> None:
        """Wait until the helper says it holds the lock (or dies; what it said is logged as a warning).

        Read from the raw pipe, not through the text wrapper, so that :meth:`close` later finds nothing
        of the helper's output held in a buffer."""
        fd, data, deadline = self._proc.stdout.fileno(), b"", time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while (READY.encode() + b"\n") not in data:
                left = deadline - time.monotonic()
                chunk = os.read(fd, 65536) if left > 0 and sel.select(left) else b""
                if not chunk:
                    log.warning("MLflow: no parent run after %.0f s (or the helper died); jobs make it", timeout)
                    break
                data += chunk
        for line in data.decode(errors="replace").splitlines():
            if line != READY:
                log.warning("%s", line)


def start_pipeline(profile: str, params_file: str | Path) -> PipelineRun | None:
    """onstart: a new parent run for this invocation (``RAYGEN_PIPELINE_RUN``), recording ``params_file``'s
    every stage section; returns it (end it with :func:`end_pipeline`), or None when tracking is off."""
    run_id, _ = tracking.pipeline_run_id()
    if not (tracking.enabled_by_env() and run_id):
        return None
    try:
        spec = tracking.pipeline_spec(run_id, "snakemake", profile, "snakemake", params_file, tracking.git_commit())
        run = PipelineRun(role="pipeline", experiment=f"raygen-{profile}", pipeline=spec)
        run.wait_ready(READY_TIMEOUT_S)
        return run
    except Exception as err:  # noqa: BLE001 - tracking must never stop a pipeline
        log.warning("MLflow: no parent run for this pipeline run: %s", err)
        return None


def end_pipeline(run: PipelineRun | None, status: str) -> None:
    """onsuccess (``FINISHED``) / onerror (``FAILED``): end the parent run, after the helper is done with it."""
    if run is not None:
        run.status = status
        run.close()
