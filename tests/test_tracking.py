"""The MLflow facade: legal metric names, and tracking errors never break a stage."""

from __future__ import annotations

import logging

import pytest

from raygen import tracking


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


def test_the_helper_ends_a_run_killed_when_the_stage_vanishes(tracking_store):
    import io
    import json

    start = {
        "op": "start",
        "args": [],
        "kwargs": {
            "uri": tracking_store,
            "experiment": "raygen-smoke",
            "run_name": "synthesize",
            "tags": {},
            "params": {"k": "1"},
        },
    }
    metric = {"op": "log_metrics", "args": [{"loss": 1.5}], "kwargs": {"step": 3}}
    report = io.StringIO()
    tracking.serve(iter([json.dumps(start), json.dumps(metric)]), report)  # no end_run: the stage was killed
    (run,) = _runs(tracking_store)
    assert run.info.status == "KILLED" and run.data.metrics == {"loss": 1.5} and report.getvalue() == ""
