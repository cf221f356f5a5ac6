"""The MLflow side of :mod:`raygen.tracking`: the helper process that a tracked stage (and Snakemake's
``onstart``) starts with ``python -m raygen.tracking_helper``. The only module that imports MLflow.

It replays the JSON-line calls it reads on stdin on MLflow, and writes each problem as one line on stdout,
which the caller logs as a warning. No stage imports this module, so it is in no stage's code deps:
tracking never changes what a stage writes, and an edit here reruns nothing.

What is created is created once, under a file lock: a fresh SQLite store (two processes creating its
schema at the same moment is a known MLflow failure, and one of them loses its run), the experiment, and the
pipeline's parent run, which every stage of one invocation finds by its ``raygen.pipeline_run`` tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raygen import tracking

LOCK_WAIT_S = 120.0  # past this, a holder is taken to be stuck and the helper goes on without the lock
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # the UI's "machine learning" kind
ROLE_TAG = "raygen.role"  # "pipeline" on a parent run
OWNER_TAG = "raygen.parent_owner"  # who ends the parent: "snakemake" (its hooks) or "stages" (DVC, each stage)

Report = Callable[[str], None]


def lock_path(uri: str, root: Path) -> Path:
    """Beside a SQLite file (everyone who writes that store meets on one lock), else in the checkout."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        return db.with_name(db.name + ".lock")
    return root / ".raygen" / "mlflow.lock"


@contextlib.contextmanager
def store_lock(path: Path, report: Report) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``. Where none can be had (a filesystem without locks, a
    holder stuck past :data:`LOCK_WAIT_S`), say so and go on: the run matters more than the lock."""
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - the open handle is the lock
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    report(f"MLflow: {path} still locked after {LOCK_WAIT_S:.0f} s; going on without the lock")
                    break
                time.sleep(0.05)
    except OSError as err:
        report(f"MLflow: cannot lock {path} ({err}); going on without the lock")
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


def ensure_experiment(client: Any, name: str) -> str:
    """The experiment's id, created if missing, marked as a training-runs experiment for MLflow's UI."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags={KIND_TAG: KIND})
    if exp.lifecycle_stage == "deleted":
        raise RuntimeError(f"experiment {name} is deleted: restore it (`mlflow experiments restore`) or purge it")
    if KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    return exp.experiment_id


def pipeline_params(params_file: str, profile: str, report: Report) -> dict[str, Any]:
    """Every stage's result-shaping params (base section + the profile's overlay, as Snakemake and DVC
    track them), by stage, plus the pretrained inputs: what tells one pipeline run from another."""
    try:
        from raygen.config import read_params, scientific_section
        from raygen.stages import STAGE_NAMES

        raw = read_params(params_file)
        sections = {name: scientific_section(raw, name, profile) for name in STAGE_NAMES}
        return {"profile": profile, "inputs": raw.get("inputs") or {}, **sections}
    except Exception as err:  # noqa: BLE001 - a parent without params beats no parent
        report(f"MLflow: the pipeline's parent run records no params: {err}")
        return {}


def parent_run(client: Any, experiment_id: str, pipeline: dict[str, Any], report: Report) -> Any:
    """This invocation's parent run: the run tagged with its id, or a new one holding every stage's params."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`raygen.pipeline_run` = '{pipeline['id']}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    if found:
        return found[0]
    from mlflow.entities import Param

    params = pipeline_params(pipeline["params_file"], pipeline["profile"], report)
    tags = {**pipeline["tags"], ROLE_TAG: "pipeline", OWNER_TAG: pipeline["owner"]}
    tags["raygen.params_hash"] = tracking.params_hash(params)
    run = client.create_run(experiment_id, run_name=f"pipeline {pipeline['id']}", tags=tags)
    flat = [Param(key, value) for key, value in tracking.flatten(params).items()]
    for i in range(0, len(flat), 100):  # MLflow caps one batch at 100 params
        client.log_batch(run.info.run_id, params=flat[i : i + 100])
    return client.get_run(run.info.run_id)


class Session:
    """The helper's open run, and the parent run it reports to (None for a stage run by hand)."""

    def __init__(self, mlflow: Any, client: Any, parent_id: str | None, owns_parent: bool) -> None:
        self.mlflow, self.client, self.parent_id, self.owns_parent = mlflow, client, parent_id, owns_parent

    def call(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        if op == "end_run":
            self.end(kwargs.get("status", "FINISHED"))
        elif op == "log_parent_metrics":
            self.log_parent_metrics(*args, **kwargs)
        else:
            getattr(self.mlflow, op)(*args, **kwargs)

    def log_parent_metrics(self, metrics: dict[str, float], timestamp: int) -> None:
        if self.parent_id:
            from mlflow.entities import Metric

            batch = [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
            self.client.log_batch(self.parent_id, metrics=batch)

    def end(self, status: str) -> None:
        self.mlflow.end_run(status=status)
        if self.owns_parent:  # under DVC the parent reads as its latest stage: running, finished or failed
            self.client.set_terminated(self.parent_id, status)


def start(kw: dict[str, Any], report: Report) -> Session | None:
    """Open the store, the experiment and the parent run (under the lock), then the run itself: a stage's
    run nested under the parent, or (``role="pipeline"``, Snakemake's onstart) the parent itself."""
    mlflow = None
    try:
        import mlflow as module
        from mlflow import MlflowClient

        root = Path(kw["root"])
        os.chdir(root)  # MLflow puts a new experiment's artifacts in ./mlruns: the repository's, never a copy's
        module.set_tracking_uri(kw["uri"])
        pipeline = kw.get("pipeline")
        with store_lock(lock_path(kw["uri"], root), report):
            client = MlflowClient(kw["uri"])  # opens the store, creating a fresh one's schema
            experiment_id = ensure_experiment(client, kw["experiment"])
            parent = parent_run(client, experiment_id, pipeline, report) if pipeline else None
        mlflow = module
        if kw["role"] == "pipeline":
            module.start_run(run_id=parent.info.run_id)
            return Session(module, client, None, False)
        parent_id = parent.info.run_id if parent else None
        module.start_run(experiment_id=experiment_id, run_name=kw["run_name"], parent_run_id=parent_id, tags=kw["tags"])
        items = list(kw["params"].items())
        for i in range(0, len(items), 100):  # MLflow caps one batch at 100 params
            module.log_params(dict(items[i : i + 100]))
        owns = parent is not None and parent.data.tags.get(OWNER_TAG) == "stages"
        if owns:
            client.update_run(parent_id, status="RUNNING")
        return Session(module, client, parent_id, owns)
    except Exception as err:  # noqa: BLE001 - tracking must never break a stage
        report(f"MLflow tracking disabled for this run: {err}")
        if mlflow is not None:
            with contextlib.suppress(Exception):
                mlflow.end_run(status="FAILED")
        return None


def serve(lines: Iterator[str], out: Any) -> None:
    """The helper's loop: ``start``, then the run's calls, until ``end_run`` (or the caller vanishes)."""

    def report(message: str) -> None:
        print(message, file=out, flush=True)

    session = None
    for line in lines:
        msg = json.loads(line)
        op, args, kwargs = msg["op"], msg["args"], msg["kwargs"]
        if op == "start":
            session = start(kwargs, report)
            if kwargs.get("role") == "pipeline":
                report(tracking.READY)
            continue
        if session is None:
            if op == "end_run":
                return
            continue
        try:
            session.call(op, args, kwargs)
        except Exception as err:  # noqa: BLE001
            report(f"MLflow {op} failed (the stage's outputs are unaffected): {err}")
        if op == "end_run":
            return
    if session is not None:  # the stage died without ending its run
        with contextlib.suppress(Exception):
            session.end("KILLED")


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage's to handle; it then ends the run FAILED
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(sys.stdin, sys.stdout)
