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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=repo_root()
        )
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


@contextlib.contextmanager
def start_run(
    stage: str, profile: str, params: dict[str, Any] | None = None, enabled: bool = True
) -> Iterator[Tracker]:
    """Open an MLflow run for ``stage`` in experiment ``raygen-<profile>``; yield a :class:`Tracker`.

    Tracking problems (a locked database, a missing package) are logged and the stage goes on
    untracked: MLflow is never an input of the pipeline.
    """
    params = params or {}
    if not (enabled and enabled_by_env()):
        yield Tracker(None)
        return
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(f"raygen-{profile}")
        mlflow.start_run(run_name=stage)
    except Exception as err:  # noqa: BLE001 - tracking must never break a stage
        log.warning("MLflow tracking disabled for this run: %s", err)
        yield Tracker(None)
        return
    tracker = Tracker(mlflow)
    status = "FAILED"
    try:
        tracker.set_tags({
            "raygen.stage": stage,
            "raygen.profile": profile,
            "raygen.pipeline_run": os.environ.get("RAYGEN_PIPELINE_RUN", "manual"),
            "raygen.params_hash": params_hash(params),
            "mlflow.source.git.commit": git_commit(),
        })
        flat = flatten(params)
        for i in range(0, len(flat), 100):  # MLflow caps one batch at 100 params
            mlflow.log_params(dict(list(flat.items())[i : i + 100]))
        yield tracker
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)
