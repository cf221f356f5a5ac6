"""AUROC / F1 / bootstrap CIs (image-level and patient-clustered) and paired deltas for the classifier arms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from raygen.metrics.classification import (
    Thresholds,
    auroc,
    bootstrap_ci,
    choose_thresholds,
    evaluate_classifier,
    f1_at_thresholds,
    paired_delta,
)
from raygen.metrics.resampling import bootstrap_indices

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


# --------------------------------------------------------------------------------------------
# Patient-clustered bootstrap and paired differences


def one_patient_many_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 single-image patients plus one patient with 60 identical images (a positive scored low).

    Image-level resampling treats that patient's 60 copies as 60 independent cases, so its weight barely
    moves between resamples; drawn as one patient it is absent, once, twice, ... and the AUROC swings.
    """
    rng = np.random.default_rng(seed)
    y = np.r_[rng.integers(0, 2, 60), np.ones(60, dtype=int)][:, None]
    s = np.r_[y[:60, 0] + rng.normal(size=60), np.full(60, -1.0)][:, None]
    groups = np.r_[np.arange(60), np.full(60, 1000)]
    return y, s, groups


def test_clustered_interval_is_wider_than_the_image_level_one():
    y, s, groups = one_patient_many_images()
    images = bootstrap_ci(y, s, ("A",), n_boot=400, seed=0)
    patients = bootstrap_ci(y, s, ("A",), n_boot=400, seed=0, groups=groups)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(patients.macro) > 1.5 * width(images.macro)
    assert images.n_clusters is None and patients.n_clusters == 61
    assert patients == bootstrap_ci(y, s, ("A",), n_boot=400, seed=0, groups=groups)  # seeded


def test_clustered_resamples_draw_whole_patients():
    _, _, groups = one_patient_many_images()
    groups = np.r_[groups[:40], np.repeat([7000, 7001], [3, 17]), groups[60:]]  # a few mid-size patients too
    for idx in bootstrap_indices(len(groups), groups, n_boot=20, seed=3):
        copies = np.bincount(idx, minlength=len(groups))  # (N,) times each image was drawn
        per_patient = {g: set(copies[groups == g]) for g in np.unique(groups)}
        assert all(len(c) == 1 for c in per_patient.values()), "a patient was split"
        assert sum(c.pop() for c in per_patient.values()) == len(per_patient)  # G patients drawn per resample


def test_identical_arms_have_a_zero_delta_with_a_zero_interval():
    y, s = make(200, 11)
    groups = np.arange(200) // 3  # patients of three images
    same = paired_delta(y, s, s.copy(), CLASSES, n_boot=200, seed=0, groups=groups)
    assert same.delta == 0.0 and same.interval == (0.0, 0.0) and set(same.per_class.values()) == {0.0}
    monotone = paired_delta(y, s, 2 * s + 1, CLASSES, n_boot=200, seed=0, groups=groups)  # same ranking
    assert monotone.delta == 0.0 and monotone.interval == (0.0, 0.0)
    assert same.n_clusters == 67 and same.macro_skipped == 0


def test_uniformly_better_arm_has_a_positive_paired_interval():
    y, s = make(300, 12, signal=0.5)
    better = s + 1.5 * y  # every positive moves up: a better ranking in every class
    groups = np.arange(300) // 2
    delta = paired_delta(y, s, better, CLASSES, n_boot=300, seed=1, groups=groups)
    point = auroc(y, better, CLASSES).macro - auroc(y, s, CLASSES).macro
    assert delta.delta == pytest.approx(point) and delta.delta > 0
    assert 0 < delta.interval[0] < delta.delta < delta.interval[1]
    assert all(low > 0 for low, _ in delta.per_class_interval.values())
    # Pairing: both arms drawn on the same patients, so the delta's interval is far narrower than
    # what the two arms' own intervals would suggest.
    ci_ref = bootstrap_ci(y, s, CLASSES, n_boot=300, seed=1, groups=groups)
    ci_arm = bootstrap_ci(y, better, CLASSES, n_boot=300, seed=1, groups=groups)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(delta.interval) < width(ci_ref.macro) + width(ci_arm.macro)


def test_paired_delta_skips_resamples_where_a_class_loses_its_positives():
    y, s = make(40, 6)
    y[:, 1] = 0
    y[0, 1] = 1  # B: a single positive
    delta = paired_delta(y, s, s + 0.5 * y, CLASSES, n_boot=200, seed=0)
    assert 40 < delta.macro_skipped < 110 and not any(math.isnan(v) for v in delta.interval)
