"""The MLflow facade: legal metric names, and tracking errors never break a stage."""

from __future__ import annotations

import logging

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
