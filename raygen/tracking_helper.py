"""The MLflow side of :mod:`raygen.tracking`: the helper process that a tracked stage (and Snakemake's
``onstart``, :mod:`raygen.pipeline.tracking_hooks`) starts with ``python -m raygen.tracking_helper``. The only
module that imports MLflow.

It replays the JSON-line calls it reads on stdin on MLflow, and writes each problem as one line on stdout,
which the caller logs as a warning. No stage imports this module, so it is in no stage's code deps:
tracking never changes what a stage writes, and an edit here reruns nothing.

What is created is created under a file lock: a fresh SQLite store (two processes creating its schema at the
same moment is a known MLflow failure, and one of them loses its run), the experiment, and the pipeline's
parent run, which every stage of one invocation finds by its ``raygen.pipeline_run`` tag. Looking up what
exists needs no lock: a stage's helper waits only for a creator that holds the lock at that moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raygen import tracking

LOCK_WAIT_S = 120.0  # past this, a holder is taken to be stuck and the helper goes on without the lock
READY = "raygen-tracking-ready"  # the word a parent's helper says once it holds the lock (Snakemake waits for it)
ROLE_TAG = "raygen.role"  # "pipeline" on a parent run
OWNER_TAG = "raygen.parent_owner"  # who ends the parent: "snakemake" (its hooks) or "stages" (DVC, each stage)
HASH_TAG = "raygen.params_hash"

Report = Callable[[str], None]


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def lock_path(uri: str, root: Path) -> Path:
    """Beside a SQLite file (everyone who writes that store meets on one lock), else in the checkout."""
    db = sqlite_file(uri)
    return db.with_name(db.name + ".lock") if db else root / ".raygen" / "mlflow.lock"


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


def ensure_experiment(client: Any, name: str, root: Path, uri: str, create: bool) -> str | None:
    """The experiment's id; created if missing and ``create``, else None. A local store's new experiment keeps
    its artifacts in the repository's ``mlruns/`` (MLflow's default, ``./mlruns``, would follow the working
    directory: a throw-away copy under ``dvc exp run --temp``); a tracking server chooses its own place."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        if not create:
            return None
        server = uri.startswith(("http://", "https://", "databricks"))
        return client.create_experiment(name, artifact_location=None if server else (root / "mlruns").as_uri())
    if exp.lifecycle_stage == "deleted":
        raise RuntimeError(f"experiment {name} is deleted: restore it (`mlflow experiments restore`) or purge it")
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


def log_params(client: Any, run_id: str, flat: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in flat.items()]
    for i in range(0, len(items), 100):  # MLflow caps one batch at 100 params
        client.log_batch(run_id, params=items[i : i + 100])


def find_parent(client: Any, experiment_id: str, pipeline: dict[str, Any], params_hash: str) -> Any | None:
    """The newest parent run of this invocation id that records these params. Only such a parent is reused:
    an id used again with other params (a reused ``RAYGEN_PIPELINE_RUN`` or experiment name) gets a new one."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`raygen.pipeline_run` = '{pipeline['id']}' and tags.`{ROLE_TAG}` = 'pipeline'"
        f" and tags.`{HASH_TAG}` = '{params_hash}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return found[0] if found else None


def create_parent(client: Any, experiment_id: str, pipeline: dict[str, Any], params: dict[str, Any]) -> Any:
    """A new parent run for this invocation, holding every stage's params."""
    tags = {**pipeline["tags"], ROLE_TAG: "pipeline", OWNER_TAG: pipeline["owner"]}
    tags[HASH_TAG] = tracking.params_hash(params)
    run = client.create_run(experiment_id, run_name=f"pipeline {pipeline['id']}", tags=tags)
    log_params(client, run.info.run_id, tracking.flatten(params))
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


def _lookup(client: Any, kw: dict[str, Any], params: dict[str, Any], create: bool) -> tuple[str, Any] | None:
    """(experiment id, parent run or None for a stage run by hand); what is missing is created with ``create``,
    else the answer is None. Snakemake's onstart always creates a new parent, so its params are this call's."""
    experiment_id = ensure_experiment(client, kw["experiment"], Path(kw["root"]), kw["uri"], create)
    pipeline = kw.get("pipeline")
    if experiment_id is None or not pipeline:
        return (experiment_id, None) if experiment_id else None
    parent = None
    if kw["role"] != "pipeline":
        parent = find_parent(client, experiment_id, pipeline, tracking.params_hash(params))
    if parent is None and create:
        parent = create_parent(client, experiment_id, pipeline, params)
    return (experiment_id, parent) if parent else None


def stage_store(kw: dict[str, Any], params: dict[str, Any], report: Report) -> tuple[Any, str, Any]:
    """(client, experiment id, parent run) for a stage: looked up without the lock, since they mostly exist,
    and looked up again under the lock, then created, only when the store is new or something is missing."""
    from mlflow import MlflowClient

    lock = lock_path(kw["uri"], Path(kw["root"]))
    db = sqlite_file(kw["uri"])
    # Looked at before waiting: whoever made the file holds the lock until the store is whole.
    fresh = db is not None and not db.exists()
    # Wait for a creator holding the lock now (Snakemake's onstart takes it before any job starts), so that
    # what it makes is found: a reused invocation id must not lead a stage to an older parent.
    with store_lock(lock, report):
        pass
    client = None if fresh else MlflowClient(kw["uri"])
    found = None if fresh else _lookup(client, kw, params, create=False)
    if found is None:
        with store_lock(lock, report):
            client = client or MlflowClient(kw["uri"])  # opens the store, creating a fresh one's schema
            found = _lookup(client, kw, params, create=True)
    return client, *found


def start_parent(kw: dict[str, Any], report: Report) -> Session:
    """Snakemake's onstart: a new parent run for this call. The lock is taken before MLflow is even imported and
    READY said at once, so onstart waits only for this interpreter to start; every job's helper waits on the
    lock until the parent exists."""
    with store_lock(lock_path(kw["uri"], Path(kw["root"])), report):
        report(READY)
        import mlflow
        from mlflow import MlflowClient

        params = pipeline_params(kw["pipeline"]["params_file"], kw["pipeline"]["profile"], report)
        client = MlflowClient(kw["uri"])  # opens the store, creating a fresh one's schema
        _, parent = _lookup(client, kw, params, create=True)
    mlflow.set_tracking_uri(kw["uri"])
    mlflow.start_run(run_id=parent.info.run_id)
    return Session(mlflow, client, None, False)


def start_stage(kw: dict[str, Any], report: Report) -> Session:
    """A stage's run, nested under its invocation's parent run (found, or created by the first stage)."""
    import mlflow

    pipeline = kw.get("pipeline")
    params = pipeline_params(pipeline["params_file"], pipeline["profile"], report) if pipeline else {}
    client, experiment_id, parent = stage_store(kw, params, report)
    parent_id = parent.info.run_id if parent else None
    mlflow.set_tracking_uri(kw["uri"])
    run = mlflow.start_run(
        experiment_id=experiment_id, run_name=kw["run_name"], parent_run_id=parent_id, tags=kw["tags"]
    )
    log_params(client, run.info.run_id, kw["params"])
    owns = parent is not None and parent.data.tags.get(OWNER_TAG) == "stages"
    if owns:
        client.update_run(parent_id, status="RUNNING")
    return Session(mlflow, client, parent_id, owns)


def start(kw: dict[str, Any], report: Report) -> Session | None:
    """Open the run: Snakemake's parent run (``role="pipeline"``) or a stage's; None, said why, when it fails."""
    try:
        return (start_parent if kw["role"] == "pipeline" else start_stage)(kw, report)
    except Exception as err:  # noqa: BLE001 - tracking must never break a stage
        report(f"MLflow tracking disabled for this run: {err}")
        if "mlflow" in sys.modules:  # a run started before the failure ends as failed
            with contextlib.suppress(Exception):
                sys.modules["mlflow"].end_run(status="FAILED")
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
