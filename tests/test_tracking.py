"""The MLflow facade: legal metric names, and tracking errors never break a stage."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pytest

from raygen import tracking
from raygen.pipeline import tracking_hooks


class FakeMlflow:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.metrics = fail, {}

    def log_metrics(self, metrics, step=None):
        if self.fail:
            raise RuntimeError("database is locked")
        self.metrics.update(metrics)


def test_arm_names_become_legal_metric_names():
    assert tracking.metric_name("real+50/macro_auroc") == "real_plus_50/macro_auroc"
    assert tracking.metric_name("conditional_fidelity/per_report") == "conditional_fidelity/per_report"
    assert tracking.metric_name("a%b") == "a_b"


def test_metrics_are_cleaned_and_none_dropped():
    fake = FakeMlflow()
    tracking.Tracker(fake).log_metrics({"real+100/macro_auroc": 0.8, "fid": None})
    assert fake.metrics == {"real_plus_100/macro_auroc": 0.8}


def test_a_tracking_error_is_a_warning_not_a_crash(caplog):
    with caplog.at_level(logging.WARNING):
        tracking.Tracker(FakeMlflow(fail=True)).log_metrics({"loss": 1.0})
    assert "database is locked" in caplog.text


def _runs(uri: str) -> list:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["raygen-smoke"], output_format="list")


def _square(x: int) -> int:
    return x * x


def test_a_run_on_the_worker_thread_records_everything_and_survives_a_fork(tracking_store):
    import multiprocessing as mp

    with tracking.start_run("vqgan", "smoke", params={"lr": 0.1, "net": {"depth": 2}, "password": "x"}) as tr:
        tr.log_metrics({"loss": 2.0}, step=1)
        with mp.get_context("fork").Pool(2) as pool:  # DataLoader workers and render pools fork mid-run
            assert pool.map(_square, range(4)) == [0, 1, 4, 9]
        tr.log_metrics({"real+50/auroc": 0.5, "fid": None}, step=2)
        tr.set_tags({"raygen.arm": "real+50"})
    (run,) = _runs(tracking_store)
    assert run.info.status == "FINISHED" and run.info.run_name == "vqgan"
    assert run.data.metrics == {"loss": 2.0, "real_plus_50/auroc": 0.5}
    assert run.data.params == {"lr": "0.1", "net.depth": "2"}  # the secret never reaches MLflow
    assert run.data.tags["raygen.stage"] == "vqgan" and run.data.tags["raygen.arm"] == "real+50"


def test_a_failing_stage_ends_its_run_failed(tracking_store):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.start_run("evaluate", "smoke") as tr:
            tr.log_metrics({"x": 1.0})
            raise RuntimeError("boom")
    (run,) = _runs(tracking_store)
    assert run.info.status == "FAILED" and run.data.metrics == {"x": 1.0}


def test_an_unusable_store_is_a_warning_and_the_stage_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RAYGEN_TRACKING", "on")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    with caplog.at_level(logging.WARNING):
        with tracking.start_run("tables", "smoke") as tr:
            tr.log_metrics({"x": 1.0})
    assert "MLflow tracking disabled for this run" in caplog.text


def test_the_helper_ends_a_run_killed_when_the_stage_vanishes(tracking_store, tmp_path):
    import io
    import json

    from raygen import tracking_helper

    start = {
        "op": "start",
        "args": [],
        "kwargs": {
            "uri": tracking_store,
            "root": str(tmp_path),
            "role": "stage",
            "experiment": "raygen-smoke",
            "run_name": "synthesize",
            "tags": {},
            "params": {"k": "1"},
        },
    }
    metric = {"op": "log_metrics", "args": [{"loss": 1.5}], "kwargs": {"step": 3}}
    report = io.StringIO()
    tracking_helper.serve(iter([json.dumps(start), json.dumps(metric)]), report)  # no end_run: the stage was killed
    (run,) = _runs(tracking_store)
    assert run.info.status == "KILLED" and run.data.metrics == {"loss": 1.5} and report.getvalue() == ""


# ---- pipeline runs: one id per invocation, one parent run holding the stages ----------------------------

PIPELINE_VARS = ("RAYGEN_PIPELINE_RUN", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE", "DVC_ROOT", "RAYGEN_ROOT")


@pytest.fixture()
def no_pipeline(monkeypatch):
    """No pipeline id from the test's own environment (the suite itself may run under a tool)."""
    for name in PIPELINE_VARS:
        monkeypatch.delenv(name, raising=False)


def test_the_pipeline_id_comes_from_snakemake_then_dvc_and_a_stage_run_by_hand_has_none():
    both = {"RAYGEN_PIPELINE_RUN": "4f2a", "DVC_EXP_NAME": "x"}
    assert tracking.pipeline_run_id(both) == ("4f2a", "RAYGEN_PIPELINE_RUN")
    exp = {"DVC_EXP_NAME": "lusty-bowl", "DVC_EXP_BASELINE_REV": "3f2a1b9c0d", "DVC_STAGE": "evaluate"}
    assert tracking.pipeline_run_id(exp) == ("lusty-bowl@3f2a1b9", "dvc exp run")
    assert tracking.pipeline_run_id({"RAYGEN_PIPELINE_RUN": "a'b c"})[0] == "a_b_c"  # safe in a search filter
    assert tracking.pipeline_run_id({}) == (None, "by hand")


# A stand-in for `dvc repro`: a process without DVC_STAGE that runs each "stage" with DVC_STAGE set, the
# first through a shell, as DVC does on systems whose shell does not exec its last command.
FAKE_DVC = """
import os, subprocess, sys
code = "from raygen import tracking; print(tracking.pipeline_run_id()[0])"
env = {**os.environ, "DVC_STAGE": "s", "DVC_ROOT": os.getcwd()}
ids = [subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
       for cmd in (["sh", "-c", f"{sys.executable} -c '{code}'; true"], [sys.executable, "-c", code])]
print(os.getpid(), *ids)
"""


def test_every_stage_of_one_dvc_repro_shares_the_dvc_process_id(no_pipeline, repo_root):
    import subprocess
    import sys

    def fake_dvc() -> list[str]:
        out = subprocess.run([sys.executable, "-c", FAKE_DVC], cwd=repo_root, capture_output=True, text=True)
        return out.stdout.split()

    pid, first, second = fake_dvc()
    assert first == second and first.startswith("dvc-repro-") and first.endswith(f"-{pid}")
    assert fake_dvc()[1] != first  # the next `dvc repro` is another pipeline run


def test_under_dvc_the_store_is_the_repository_s_even_from_an_experiment_s_copy(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYGEN_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"


def _all_runs(uri: str) -> dict[str, object]:
    """Runs of raygen-smoke by name."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["raygen-smoke"], output_format="list")}


def _parents(uri: str, stage: str | None = None) -> list:
    """The parent runs of raygen-smoke, oldest first; with ``stage``, that stage's runs instead."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(
        experiment_names=["raygen-smoke"],
        filter_string=f"tags.`raygen.stage` = '{stage}'" if stage else "tags.`raygen.role` = 'pipeline'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )


def test_snakemake_s_parent_run_holds_the_stages_params_and_headline_metrics(
    tracking_store, no_pipeline, monkeypatch, repo_root, tmp_path, caplog
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYGEN_PIPELINE_RUN", "4f2a")
    params = repo_root / "params.yaml"
    with caplog.at_level(logging.WARNING):
        parent = tracking_hooks.start_pipeline("smoke", params)  # onstart
        # Two jobs at once, as Snakemake runs them, then a job that fails.
        with tracking.start_run(
            "train_classifier", "smoke", {"lr": 0.1}, instance="real+50", params_file=params
        ) as arm:
            with tracking.start_run("evaluate", "smoke", params_file=params) as evaluate:
                arm.log_metrics({"val_auroc": 0.6})
                evaluate.log_metrics({"real+50/macro_auroc": 0.7, "fid": 9.0}, headline=True)
        with pytest.raises(RuntimeError, match="boom"):
            with tracking.start_run("tables", "smoke", params_file=params):
                raise RuntimeError("boom")
        # Snakemake's parent is its hooks' to end: no job's end touches it, a failed job's included.
        assert [p.info.status for p in _parents(tracking_store)] == ["RUNNING"]
        tracking_hooks.end_pipeline(parent, "FINISHED")  # the hook's status, whatever the jobs' were
    assert not caplog.records, caplog.text
    runs = _all_runs(tracking_store)
    (top,) = _parents(tracking_store)
    assert top.info.run_name == "pipeline 4f2a" and top.info.status == "FINISHED"
    assert top.data.tags["raygen.launcher"] == "snakemake"
    assert top.data.metrics == {"real_plus_50/macro_auroc": 0.7, "fid": 9.0}
    assert top.data.params["profile"] == "smoke" and "train_decoder.steps" in top.data.params
    assert top.data.params["inputs.chexnet"] == "weights/chexnet"
    arm = runs["train_classifier[real+50]"]
    assert arm.data.tags["raygen.instance"] == "real+50" and arm.data.tags["raygen.stage"] == "train_classifier"
    assert arm.info.status == runs["evaluate"].info.status == "FINISHED" and runs["tables"].info.status == "FAILED"
    for stage in (arm, runs["evaluate"], runs["tables"]):
        assert stage.data.tags["mlflow.parentRunId"] == top.info.run_id
        assert stage.data.tags["raygen.pipeline_run"] == "4f2a" and stage.data.tags["raygen.profile"] == "smoke"


def test_a_reused_snakemake_pipeline_id_gets_a_new_parent_with_the_new_params(
    tracking_store, no_pipeline, monkeypatch, repo_root, tmp_path
):
    import yaml

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYGEN_PIPELINE_RUN", "again")
    old, new = repo_root / "params.yaml", tmp_path / "params.yaml"
    raw = yaml.safe_load(old.read_text())
    n_boot = raw["profiles"]["smoke"]["evaluate"]["n_boot"]
    raw["profiles"]["smoke"]["evaluate"]["n_boot"] = n_boot + 1
    new.write_text(yaml.safe_dump(raw))
    for params in (old, new):
        parent = tracking_hooks.start_pipeline("smoke", params)  # onstart
        with tracking.start_run("tables", "smoke", params_file=params):  # a job starting at once
            pass
        tracking_hooks.end_pipeline(parent, "FINISHED")
    parents = _parents(tracking_store)
    assert [p.info.run_name for p in parents] == ["pipeline again"] * 2
    assert [p.data.params["evaluate.n_boot"] for p in parents] == [str(n_boot), str(n_boot + 1)]
    jobs = _parents(tracking_store, stage="tables")
    assert [j.data.tags["mlflow.parentRunId"] for j in jobs] == [p.info.run_id for p in parents]


def test_a_job_waits_for_the_parent_that_onstart_s_helper_creates_under_the_lock(
    tracking_store, no_pipeline, monkeypatch, repo_root, tmp_path
):
    """onstart returns once its helper holds the store's lock, before the parent exists; a job's helper must
    wait for it rather than take an older parent of the same id and params (a reused id)."""
    import time

    from mlflow import MlflowClient

    from raygen import tracking_helper

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYGEN_PIPELINE_RUN", "held")
    params = repo_root / "params.yaml"
    tracking_hooks.end_pipeline(tracking_hooks.start_pipeline("smoke", params), "FINISHED")  # an older call
    client = MlflowClient(tracking_store)
    experiment_id = client.get_experiment_by_name("raygen-smoke").experiment_id
    spec = tracking.pipeline_spec("held", "snakemake", "smoke", "snakemake", params, "commit")
    with contextlib.ExitStack() as stack:
        with tracking_helper.store_lock(tracking_helper.lock_path(tracking_store, tmp_path), print):  # onstart's
            stack.enter_context(tracking.start_run("tables", "smoke", params_file=params))  # a job starts
            deadline = time.monotonic() + 8  # long enough for its helper to look, were it not waiting
            while time.monotonic() < deadline and not _parents(tracking_store, stage="tables"):
                time.sleep(0.2)
            pipeline_params = tracking_helper.pipeline_params(str(params), "smoke", print)
            new = tracking_helper.create_parent(client, experiment_id, spec, pipeline_params)
    (job,) = _parents(tracking_store, stage="tables")
    assert job.data.tags["mlflow.parentRunId"] == new.info.run_id


def test_under_dvc_the_first_stage_creates_the_parent_and_each_stage_s_end_sets_its_status(
    tracking_store, no_pipeline, monkeypatch, repo_root
):
    monkeypatch.chdir(repo_root)  # DVC runs the stages from the repository (params.yaml)
    monkeypatch.setenv("DVC_EXP_NAME", "lusty-bowl")
    monkeypatch.setenv("DVC_STAGE", "train_decoder")
    with tracking.start_run("train_decoder", "smoke"):
        pass
    assert _all_runs(tracking_store)["pipeline lusty-bowl"].info.status == "FINISHED"
    with pytest.raises(RuntimeError):
        with tracking.start_run("synthesize", "smoke"):
            raise RuntimeError("boom")
    runs = _all_runs(tracking_store)
    top = runs["pipeline lusty-bowl"]
    assert top.info.status == "FAILED" and top.data.tags["raygen.dvc_exp"] == "lusty-bowl"
    assert top.data.tags["raygen.launcher"] == "dvc exp run" and "evaluate.n_boot" in top.data.params
    assert {runs[s].data.tags["mlflow.parentRunId"] for s in ("train_decoder", "synthesize")} == {top.info.run_id}


# Two stages of one pipeline starting at the same moment on a fresh store; each logs an artifact.
STAGE = """
import logging, sys, time
from pathlib import Path
from raygen import tracking
logging.basicConfig(format="RAYGEN-WARNING %(message)s", level=logging.WARNING)
Path(sys.argv[1]).write_text("x")
while time.time() < float(sys.argv[2]):
    time.sleep(0.01)
with tracking.start_run(sys.argv[1], "smoke") as tr:
    tr.log_metrics({"x": 1.0})
    tr.log_artifact(sys.argv[1])
"""


def test_two_stages_starting_together_on_a_fresh_store_both_land_under_one_parent(
    no_pipeline, monkeypatch, repo_root, tmp_path
):
    import subprocess
    import sys
    import time

    repo, copy = tmp_path / "repo", tmp_path / "copy"  # under `dvc exp run --temp` stages run in a copy
    repo.mkdir()
    copy.mkdir()
    (copy / "params.yaml").write_text((repo_root / "params.yaml").read_text())
    monkeypatch.setenv("RAYGEN_TRACKING", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = {**os.environ, "PYTHONPATH": str(repo_root), "DVC_ROOT": str(repo), "DVC_EXP_NAME": "twin", "DVC_STAGE": "s"}
    go = str(time.time() + 3)  # past both interpreters' start
    procs = [
        subprocess.Popen([sys.executable, "-c", STAGE, name, go], cwd=copy, env=env, stderr=subprocess.PIPE, text=True)
        for name in ("train_classifier", "embed_text")
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and "RAYGEN-WARNING" not in "".join(errors), errors
    runs = _all_runs(f"sqlite:///{repo / 'mlflow.db'}")
    top = runs["pipeline twin"]
    for name in ("train_classifier", "embed_text"):
        assert runs[name].data.tags["mlflow.parentRunId"] == top.info.run_id and runs[name].data.metrics == {"x": 1.0}
        artifacts = Path(runs[name].info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(repo) and (artifacts / name).is_file()  # the repository's, not the copy's
    assert len(runs) == 3 and len(_parents(f"sqlite:///{repo / 'mlflow.db'}")) == 1  # two stages, one parent


# The submitting Snakemake parses the Snakefile, then starts "jobs" that parse it again: one in the environment
# the submitting process has when it submits (what `sbatch --export=ALL` hands a SLURM job), one in the
# environment it was started in.
PARSE = """
import os, subprocess, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ResourceSettings

started_in = dict(os.environ)
root = Path(sys.argv[1])
with SnakemakeApi() as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=root / "workflow/Snakefile",
                            workdir=root)._workflow
    print(workflow.globals["RUN_ID"], flush=True)
if sys.argv[2:] != ["job"]:
    for env in (dict(os.environ), started_in):
        subprocess.run([sys.executable, __file__, str(root), "job"], env=env, check=True)
"""


@pytest.mark.slow
def test_a_cluster_job_keeps_the_pipeline_id_of_the_run_that_submitted_it(no_pipeline, tmp_path):
    """A SLURM job gets the id of the Snakemake that submitted it only through its environment: parsing the
    Snakefile puts the id into the process environment, and the plugin submits with ``--export=ALL``, which
    hands the job that environment. A job given the environment Snakemake started in draws an id of its own."""
    import subprocess
    import sys

    from slurm_local import submitting_env_profile
    from test_slurm import sbatch_calls
    from workflow_copy import make_copy

    root = make_copy(tmp_path / "wf", "smoke", git=False)
    script = tmp_path / "parse.py"
    script.write_text(PARSE)
    out = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    submitter, job, without = out.stdout.split()
    assert submitter == job != without and len(submitter) == 12
    submitting_env_profile(root)  # no conda here
    options = sbatch_calls(root, "smoke")  # what the SLURM plugin hands to sbatch, job by job
    assert options and all(o.get("--export") == "ALL" for o in options.values()), options
