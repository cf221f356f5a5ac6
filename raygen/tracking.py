"""MLflow tracking that the pipeline never depends on.

Runs go to ``sqlite:///<repo>/mlflow.db`` (MLflow's file store is deprecated and refuses to start),
one experiment per profile, tagged with the stage, the pipeline run id, the params hash and the git
commit. Set ``RAYGEN_TRACKING=off`` (or pass ``enabled=False``) and every call becomes a no-op, so a
stage works the same without MLflow. ``MLFLOW_TRACKING_URI`` overrides the store (a tracking server is
the safe choice on a cluster: SQLite on a shared filesystem is not).

Every pipeline invocation gets one id (:func:`pipeline_run_id`) and one parent run that holds every
stage's params and the headline metrics; each stage run is nested under it (``mlflow.parentRunId``):

* Snakemake draws the id once per invocation (``RAYGEN_PIPELINE_RUN``, which every job inherits, SLURM
  jobs through ``sbatch --export=ALL``); its ``onstart`` creates a new parent run before any job looks for
  one, ``onsuccess`` / ``onerror`` end it (:mod:`raygen.pipeline.tracking_hooks`, which no stage imports).
* ``dvc exp run``: the experiment's name; plain ``dvc repro``: the DVC process (its pid and start time).
  DVC has no hook before its first stage, so the first stage's helper creates the parent, under a file
  lock that also keeps two helpers from creating a fresh store at once; each stage's end sets its status.
* A stage run by hand is a pipeline of its own: a ``manual-...`` id and no parent run.

A stage joins the newest parent with its invocation's id whose params hash is that of its own params file;
when none has (an id reused with other params), it creates one, so a parent's params are never stale.

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
PIPELINE_ENV = "RAYGEN_PIPELINE_RUN"
HELPER = "raygen.tracking_helper"  # the module the helper process runs; the only one that imports MLflow

# Keys whose values must never reach MLflow, whatever a caller passes.
_SECRET_WORDS = ("password", "passwd", "token", "secret", "credential", "user", "netrc")


def repo_root() -> Path:
    """The repository root: ``RAYGEN_ROOT`` (Snakemake's jobs), else ``DVC_ROOT`` (DVC's stages; under
    ``dvc exp run --temp`` or a queued experiment the stage runs in a throw-away copy, and its runs must
    land in the repository's store, not the copy's), else the current working directory."""
    return Path(os.environ.get("RAYGEN_ROOT") or os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


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
        return (out.returncode == 0 and out.stdout.strip()) or "unknown"  # a repository without commits: unknown
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


def _clean_id(text: str) -> str:
    """An id that is safe inside an MLflow search filter (it is looked up by tag)."""
    return re.sub(r"[^\w.@+:-]", "_", text)[:200]


def pipeline_run_id(environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """(id, what drew it) for the pipeline invocation this process belongs to; id None for a stage run by hand.

    ``RAYGEN_PIPELINE_RUN`` first (Snakemake sets it once per invocation; a user may set it too), then
    DVC's own variables: ``DVC_EXP_NAME`` under ``dvc exp run`` (with the baseline commit, since a name
    is unique only per baseline), and for a plain ``dvc repro``, which names nothing, the DVC process
    that runs the stages: every stage of one ``dvc repro`` is its child.
    """
    env = os.environ if environ is None else environ
    if env.get(PIPELINE_ENV):
        return _clean_id(env[PIPELINE_ENV]), PIPELINE_ENV
    if env.get("DVC_EXP_NAME"):
        baseline = env.get("DVC_EXP_BASELINE_REV", "")[:7]
        return _clean_id(env["DVC_EXP_NAME"] + (f"@{baseline}" if baseline else "")), "dvc exp run"
    if env.get("DVC_STAGE"):
        pid, started = _dvc_process()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) if started else "unknown"
        return f"dvc-repro-{stamp}-{pid}", "dvc repro"
    return None, "by hand"


def _dvc_process() -> tuple[int, float | None]:
    """The DVC process that runs this stage, and when it started: the nearest ancestor without
    ``DVC_STAGE`` in its environment (DVC sets it for the stage's command only; a shell may sit between).
    Where ``/proc`` is missing, the parent process, and no start time."""
    pid = os.getppid()
    try:
        for _ in range(8):
            if b"\0DVC_STAGE=" not in b"\0" + Path(f"/proc/{pid}/environ").read_bytes():
                break
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return pid, boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return os.getppid(), None


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

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, headline: bool = False) -> None:
        """Log on this stage's run; ``headline=True`` also logs them on the pipeline's parent run, where runs
        of whole pipelines are compared (the evaluate stage's summary)."""
        if self._mlflow:
            clean = {metric_name(k): float(v) for k, v in metrics.items() if v is not None}
            self._call("log_metrics", self._mlflow.log_metrics, clean, step=step)
            if headline:
                self._call("log_headline", lambda: self._mlflow.log_headline(clean))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._mlflow and Path(path).exists():
            self._call("log_artifact", self._mlflow.log_artifact, str(path), artifact_path=artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        if self._mlflow:
            self._call("log_dict", self._mlflow.log_dict, obj, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._mlflow:
            self._call("set_tags", self._mlflow.set_tags, tags)


class RunProcess:
    """One MLflow run driven by a helper process (``python -m raygen.tracking_helper``), so that importing
    MLflow and opening the sqlite store (seconds each, docs/benchmarks.md) overlap the stage's own work
    instead of preceding it.

    Calls go to the helper as JSON lines, in order; metric timestamps are taken when the stage logs them.
    A separate interpreter, not a thread: the stages fork (DataLoader workers, render pools), and a
    child forked while a thread is half-way through an import inherits a module lock nobody releases.
    The helper reports problems on its stdout; :meth:`close` logs them as warnings.
    """

    def __init__(self, **start: Any) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        self.status = "FAILED"
        self._send("start", uri=tracking_uri(), root=str(repo_root()), **start)

    def _send(self, op: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._proc.stdin.write(json.dumps({"op": op, "args": args, "kwargs": kwargs}, default=str) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the helper died; close() logs what it said
            pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._send("log_metrics", metrics, step=step, timestamp=int(time.time() * 1000))

    def log_headline(self, metrics: dict[str, float]) -> None:
        self._send("log_parent_metrics", metrics, timestamp=int(time.time() * 1000))

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


def run_tags(run_id: str, profile: str, commit: str) -> dict[str, str]:
    """The tags a stage's run and a parent run share: the invocation, the profile, the git commit."""
    return {"raygen.pipeline_run": run_id, "raygen.profile": profile, "mlflow.source.git.commit": commit}


def pipeline_spec(
    run_id: str, launcher: str, profile: str, owner: str, params_file: str | Path, commit: str
) -> dict[str, Any]:
    """What the helper needs to find the pipeline's parent run, or to create it: its id, its tags, and the
    params file whose every stage section it records. ``owner`` ends it: Snakemake's hooks, or the stages."""
    tags = {**run_tags(run_id, profile, commit), "raygen.launcher": launcher}
    for env, tag in (("DVC_EXP_NAME", "raygen.dvc_exp"), ("DVC_EXP_BASELINE_REV", "raygen.dvc_baseline")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    params_file = str(Path(params_file).resolve())
    return {"id": run_id, "profile": profile, "owner": owner, "params_file": params_file, "tags": tags}


@contextlib.contextmanager
def start_run(
    stage: str,
    profile: str,
    params: dict[str, Any] | None = None,
    enabled: bool = True,
    instance: str | None = None,
    params_file: str | Path = "params.yaml",
) -> Iterator[Tracker]:
    """Open an MLflow run for ``stage`` in experiment ``raygen-<profile>``, nested under this pipeline
    invocation's parent run; yield a :class:`Tracker`. ``instance`` names one of a stage's jobs (the
    classifier's arm): the run is called ``stage[instance]``. ``params_file`` is the stage's ``--params``: the
    whole pipeline's params, whose hash picks the parent to join and which a parent this stage creates records
    (every stage command runs with ``--params params.yaml`` from its working directory: the experiment's copy
    under ``dvc exp run --temp``).

    The run lives in a helper process (:class:`RunProcess`): the stage starts working at once, and
    leaving the block waits for the helper to finish the calls. Tracking problems (a locked database, a missing
    package) are logged and the stage goes on untracked: MLflow is never an input of the pipeline.
    """
    params = params or {}
    if not (enabled and enabled_by_env()):
        yield Tracker(None)
        return
    run_id, launcher = pipeline_run_id()
    commit = git_commit()
    tags = run_tags(run_id or f"manual-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", profile, commit)
    tags.update({"raygen.stage": stage, "raygen.params_hash": params_hash(params)})
    if instance:
        tags["raygen.instance"] = instance
    pipeline = pipeline_spec(run_id, launcher, profile, "stages", params_file, commit) if run_id else None
    run = RunProcess(
        role="stage",
        experiment=f"raygen-{profile}",
        run_name=f"{stage}[{instance}]" if instance else stage,
        tags=tags,
        params=flatten(params),
        pipeline=pipeline,
    )
    try:
        yield Tracker(run)
        run.status = "FINISHED"
    finally:
        run.close()
