"""AUROC / F1 / bootstrap CIs for the classifier arms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from raygen.metrics.classification import (
    Thresholds, auroc, bootstrap_ci, choose_thresholds, evaluate_classifier, f1_at_thresholds,
)

CLASSES = ("A", "B", "C")


def make(n: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) labels with prevalence 0.3 and scores = signal * label + noise, with rounded scores (ties)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(int)
    s = np.round(signal * y + rng.normal(size=(n, 3)), 1)
    return y, s


def test_auroc_equals_sklearn_per_class_with_ties():
    y, s = make(200, 0)
    result = auroc(y, s, CLASSES)
    for k, c in enumerate(CLASSES):
        assert result.per_class[c] == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
    assert result.macro == pytest.approx(np.mean([roc_auc_score(y[:, k], s[:, k]) for k in range(3)]))
    assert result.excluded == ()


def test_macro_excludes_and_lists_classes_without_positives_or_negatives():
    y, s = make(100, 1)
    y[:, 1] = 0  # B: no positives
    y[:, 2] = 1  # C: no negatives
    result = auroc(y, s, CLASSES)
    assert set(result.per_class) == {"A"} and result.excluded == ("B", "C")
    assert result.macro == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))  # not averaged with 0 or 0.5
    ci = bootstrap_ci(y, s, CLASSES, n_boot=50)
    assert set(ci.per_class) == {"A"}


def test_f1_threshold_chosen_on_val_applied_to_test_by_hand():
    classes = ("A",)
    y_val = np.array([[0], [0], [1], [0], [1], [1]])
    s_val = np.array([[0.1], [0.4], [0.35], [0.8], [0.9], [0.7]])
    # By hand, s >= t: t=0.9 -> F1 2/4=.5; 0.8 -> 2/5; 0.7 -> 4/6; 0.4 -> 4/7; 0.35 -> 6/8=.75; 0.1 -> 6/9.
    thr = choose_thresholds(y_val, s_val, classes)
    assert thr.per_class["A"] == 0.35 and thr.val_f1["A"] == pytest.approx(0.75)
    y_test = np.array([[1], [0], [1], [0], [1]])
    s_test = np.array([[0.5], [0.36], [0.2], [0.1], [0.35]])
    # predicted positive: 0.5, 0.36, 0.35 -> TP 2, FP 1, FN 1 -> F1 = 4 / 6
    f1 = f1_at_thresholds(y_test, s_test, thr, classes)
    assert f1.per_class["A"] == pytest.approx(2 / 3)
    assert f1.per_class["A"] == pytest.approx(f1_score(y_test[:, 0], s_test[:, 0] >= 0.35))


def test_threshold_maximises_val_f1_against_brute_force():
    y, s = make(150, 2, signal=0.8)
    thr = choose_thresholds(y, s, CLASSES)
    for k, c in enumerate(CLASSES):
        best = max(f1_score(y[:, k], s[:, k] >= t) for t in np.unique(s[:, k]))
        assert thr.val_f1[c] == pytest.approx(best)
        assert f1_score(y[:, k], s[:, k] >= thr.per_class[c]) == pytest.approx(best)


def test_class_without_val_positives_gets_no_threshold_and_no_f1():
    y, s = make(60, 3)
    y[:, 2] = 0
    thr = choose_thresholds(y, s, CLASSES)
    assert thr.excluded == ("C",) and "C" not in thr.per_class
    y_test, s_test = make(60, 4)
    f1 = f1_at_thresholds(y_test, s_test, thr, CLASSES)
    assert f1.excluded == ("C",) and math.isclose(f1.macro, np.mean(list(f1.per_class.values())))


def test_bootstrap_ci_brackets_estimate_is_deterministic_and_narrows():
    y, s = make(200, 5)
    point = auroc(y, s, CLASSES)
    a = bootstrap_ci(y, s, CLASSES, n_boot=300, seed=7)
    b = bootstrap_ci(y, s, CLASSES, n_boot=300, seed=7)
    c = bootstrap_ci(y, s, CLASSES, n_boot=300, seed=8)
    assert a == b and a != c
    for cls in CLASSES:
        low, high = a.per_class[cls]
        assert low < point.per_class[cls] < high
    assert a.macro[0] < point.macro < a.macro[1]
    y_big, s_big = make(3000, 5)
    big = bootstrap_ci(y_big, s_big, CLASSES, n_boot=300, seed=7)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(big.macro) < 0.5 * width(a.macro)


def test_bootstrap_skips_resamples_where_a_class_loses_its_positives():
    y, s = make(40, 6)
    y[:, 1] = 0
    y[0, 1] = 1  # B: a single positive, absent from ~37% of resamples
    ci = bootstrap_ci(y, s, CLASSES, n_boot=200, seed=0)
    assert 40 < ci.skipped["B"] < 110 and ci.macro_skipped >= ci.skipped["B"]
    assert not any(math.isnan(v) for v in ci.per_class["B"])


def test_evaluate_classifier_bundles_everything():
    y_val, s_val = make(120, 9)
    y_test, s_test = make(120, 10)
    report = evaluate_classifier(y_val, s_val, y_test, s_test, CLASSES, n_boot=100, seed=0)
    assert report.n_test == 120 and report.f1_ci.metric == "f1" and set(report.f1.per_class) == set(CLASSES)
    assert report.thresholds == choose_thresholds(y_val, s_val, CLASSES)
    assert isinstance(report.thresholds, Thresholds)
    with pytest.raises(ValueError):
        auroc(y_test * 2, s_test, CLASSES)  # labels must be 0/1
