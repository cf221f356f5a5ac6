"""MLflow tracking that the pipeline never depends on.

Runs go to ``sqlite:///<repo>/mlflow.db`` (MLflow's file store is deprecated and refuses to start),
one experiment per profile, tagged with the stage, the pipeline run id, the params hash and the git
commit. Set ``RAYGEN_TRACKING=off`` (or pass ``enabled=False``) and every call becomes a no-op, so a
stage works the same without MLflow. ``MLFLOW_TRACKING_URI`` overrides the store.

Usage in a stage::

    with tracking.start_run("vqgan", profile, params=to_dict(cfg)) as tr:
        tr.log_metrics({"loss": 0.1}, step=10)
        tr.log_artifact(grid_png)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 300.0  # how long a finished stage waits for the MLflow helper

# Keys whose values must never reach MLflow, whatever a caller passes.
_SECRET_WORDS = ("password", "passwd", "token", "secret", "credential", "user", "netrc")


def repo_root() -> Path:
    """The repository root: ``RAYGEN_ROOT`` if set, else the current working directory."""
    return Path(os.environ.get("RAYGEN_ROOT", os.getcwd())).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def enabled_by_env() -> bool:
    return os.environ.get("RAYGEN_TRACKING", "on").lower() not in ("0", "off", "false", "no")


def params_hash(params: dict[str, Any]) -> str:
    """A short stable hash of a stage's resolved params (tags runs with identical settings)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=repo_root())
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as ``a.b.c`` keys with string values, secrets removed."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if any(word in key.lower() for word in _SECRET_WORDS):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def metric_name(name: str) -> str:
    """An MLflow-legal metric name: ``+`` becomes ``_plus_`` (arm ``real+50`` -> ``real_plus_50``),
    anything else but letters, digits, ``_``, ``-``, ``.``, space, ``:`` and ``/`` becomes ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "_plus_"))


class Tracker:
    """A thin facade over an active MLflow run; every method is a no-op when disabled, and a tracking
    error is logged as a warning, never raised: MLflow must not break a stage that has done its work."""

    def __init__(self, mlflow_module: Any | None) -> None:
        self._mlflow = mlflow_module

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never break a stage
            log.warning("MLflow %s failed (the stage's outputs are unaffected): %s", what, err)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._mlflow:
            clean = {metric_name(k): float(v) for k, v in metrics.items() if v is not None}
            self._call("log_metrics", self._mlflow.log_metrics, clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._mlflow and Path(path).exists():
            self._call("log_artifact", self._mlflow.log_artifact, str(path), artifact_path=artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        if self._mlflow:
            self._call("log_dict", self._mlflow.log_dict, obj, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._mlflow:
            self._call("set_tags", self._mlflow.set_tags, tags)


class _RunProcess:
    """One MLflow run driven by a helper process (``python -m raygen.tracking``), so that importing MLflow
    and opening the sqlite store (seconds each, docs/benchmarks.md) overlap the stage's own work instead of
    preceding it.

    Calls go to the helper as JSON lines, in order; metric timestamps are taken when the stage logs them.
    A separate interpreter, not a thread: the stages fork (DataLoader workers, render pools), and a
    child forked while a thread is half-way through an import inherits a module lock nobody releases.
    The helper reports problems on its stdout; :meth:`close` logs them as warnings.
    """

    def __init__(self, stage: str, profile: str, tags: dict[str, str], params: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "raygen.tracking"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        self.status = "FAILED"
        self._send(
            "start", uri=tracking_uri(), experiment=f"raygen-{profile}", run_name=stage, tags=tags, params=params
        )

    def _send(self, op: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._proc.stdin.write(json.dumps({"op": op, "args": args, "kwargs": kwargs}, default=str) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the helper died; close() logs what it said
            pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._send("log_metrics", metrics, step=step, timestamp=int(time.time() * 1000))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._send("log_artifact", str(Path(path).resolve()), artifact_path=artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        self._send("log_dict", obj, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send("set_tags", tags)

    def close(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Send the end of the run (``self.status``), wait for the helper, log what it reported."""
        self._send("end_run", status=self.status)
        try:
            out, _ = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
            log.warning("MLflow did not finish within %.0f s; this run's tracking may be incomplete", timeout)
        for line in (out or "").splitlines():
            log.warning("%s", line)
        if self._proc.returncode not in (0, None) and not out:
            log.warning("the MLflow helper exited with status %s; this run may be untracked", self._proc.returncode)


def _pythonpath() -> str:
    """The helper must import this very package (an editable install, a conda job, or a checkout)."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


def serve(lines: Iterator[str], report: Any) -> None:
    """The helper's loop: replay JSON-line calls on MLflow's fluent API until ``end_run``."""
    mlflow = None
    for line in lines:
        msg = json.loads(line)
        op, args, kwargs = msg["op"], msg["args"], msg["kwargs"]
        if op == "start":
            try:
                import mlflow as module

                module.set_tracking_uri(kwargs["uri"])
                module.set_experiment(kwargs["experiment"])
                module.start_run(run_name=kwargs["run_name"])
                mlflow = module
                mlflow.set_tags(kwargs["tags"])
                items = list(kwargs["params"].items())
                for i in range(0, len(items), 100):  # MLflow caps one batch at 100 params
                    mlflow.log_params(dict(items[i : i + 100]))
            except Exception as err:  # noqa: BLE001 - tracking must never break a stage
                print(f"MLflow tracking disabled for this run: {err}", file=report, flush=True)
                if mlflow is not None:
                    with contextlib.suppress(Exception):
                        mlflow.end_run(status="FAILED")
                mlflow = None
            continue
        if mlflow is None:
            if op == "end_run":
                return
            continue
        try:
            getattr(mlflow, op)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            print(f"MLflow {op} failed (the stage's outputs are unaffected): {err}", file=report, flush=True)
        if op == "end_run":
            return
    if mlflow is not None:  # the stage died without ending its run
        with contextlib.suppress(Exception):
            mlflow.end_run(status="KILLED")


@contextlib.contextmanager
def start_run(
    stage: str, profile: str, params: dict[str, Any] | None = None, enabled: bool = True
) -> Iterator[Tracker]:
    """Open an MLflow run for ``stage`` in experiment ``raygen-<profile>``; yield a :class:`Tracker`.

    The run lives in a helper process (:class:`_RunProcess`): the stage starts working at once, and
    leaving the block waits for the helper to finish the calls. Tracking problems (a locked database, a missing
    package) are logged and the stage goes on untracked: MLflow is never an input of the pipeline.
    """
    params = params or {}
    if not (enabled and enabled_by_env()):
        yield Tracker(None)
        return
    tags = {
        "raygen.stage": stage,
        "raygen.profile": profile,
        "raygen.pipeline_run": os.environ.get("RAYGEN_PIPELINE_RUN", "manual"),
        "raygen.params_hash": params_hash(params),
        "mlflow.source.git.commit": git_commit(),
    }
    run = _RunProcess(stage, profile, tags, flatten(params))
    try:
        yield Tracker(run)
        run.status = "FINISHED"
    finally:
        run.close()


if __name__ == "__main__":  # the helper process of _RunProcess
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage's to handle; it then ends the run FAILED
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(sys.stdin, sys.stdout)
