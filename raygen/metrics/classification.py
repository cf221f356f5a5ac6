"""Multi-label classifier metrics: per-class and macro AUROC, F1 at validation-chosen thresholds, percentile
bootstrap confidence intervals, and paired bootstrap differences between two arms.

Inputs: ``y_true`` (N, K) 0/1 ints and ``y_score`` (N, K) floats (probabilities or logits; only their
order matters for AUROC, thresholds are in the same units), columns in ``classes`` order
(:data:`raygen.data.labels.CLASSES`).

Undefined is never scored: a class with no positives or no negatives in the evaluated set has no AUROC
(a class with no positives has no F1); it is left out of the macro average and listed in ``excluded``,
never counted as 0 or 0.5. In a bootstrap resample, a class that loses its positives (or negatives) is
skipped for that resample, and the macro of a resample in which any scored class is undefined is skipped
too (so every macro value averages the same classes); the skip counts are reported.

Resampling (:mod:`raygen.metrics.resampling`): with ``groups`` (cluster ids such as subject_id) every
resample draws whole clusters with replacement, taking all their rows; without, it draws rows. A paired
difference scores both arms on the same resamples, so its interval reflects how much the arms differ
on the same patients, not how hard each resample's patients happen to be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from raygen.metrics.resampling import bootstrap_indices, clusters

log = logging.getLogger(__name__)

__all__ = [
    "BootstrapCI",
    "ClassScores",
    "ClassificationReport",
    "PairedDelta",
    "ROC_GRID",
    "Thresholds",
    "auroc",
    "bootstrap_ci",
    "choose_thresholds",
    "class_roc_curves",
    "evaluate_classifier",
    "f1_at_thresholds",
    "macro_roc",
    "paired_delta",
    "report_dict",
]

ROC_GRID = np.linspace(0.0, 1.0, 101)  # false-positive rates of the macro-average ROC curves


@dataclass(frozen=True)
class ClassScores:
    """One metric per class (only classes where it is defined), their unweighted mean, and the classes
    left out because the metric is undefined on this set (``macro`` is NaN when every class is)."""

    metric: str
    per_class: dict[str, float]
    macro: float
    excluded: tuple[str, ...]


@dataclass(frozen=True)
class Thresholds:
    """Per-class decision thresholds (predict positive when score >= threshold) that maximise F1 on the
    validation set, the validation F1 they reach, and classes without validation positives (no threshold)."""

    per_class: dict[str, float]
    val_f1: dict[str, float]
    excluded: tuple[str, ...]


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile bootstrap intervals over resampled test images (or whole clusters of them).

    ``per_class[c] = (low, high)``; ``skipped[c]``: resamples where ``c`` was undefined;
    ``macro_skipped``: resamples without a macro value (some scored class undefined);
    ``n_clusters``: clusters drawn per resample (patients), None when images were drawn one by one.
    """

    metric: str
    per_class: dict[str, tuple[float, float]]
    macro: tuple[float, float]
    level: float
    n_boot: int
    seed: int
    skipped: dict[str, int]
    macro_skipped: int
    n_clusters: int | None = None


@dataclass(frozen=True)
class PairedDelta:
    """An arm's metric minus a reference arm's on the same test rows, with paired percentile intervals.

    ``delta``: macro(arm) - macro(reference) on the full test set (the same classes in both, since the
    labels are shared); ``interval``: its bootstrap interval, each resample scoring both arms on the
    same drawn rows or clusters; ``per_class`` / ``per_class_interval`` likewise per class;
    ``macro_skipped``: resamples without a macro value; ``n_clusters`` as in :class:`BootstrapCI`.
    """

    metric: str
    delta: float
    interval: tuple[float, float]
    per_class: dict[str, float]
    per_class_interval: dict[str, tuple[float, float]]
    level: float
    n_boot: int
    seed: int
    macro_skipped: int
    n_clusters: int | None = None


@dataclass(frozen=True)
class ClassificationReport:
    """Everything the evaluate stage reports for one classifier arm on the test set."""

    auroc: ClassScores
    auroc_ci: BootstrapCI
    thresholds: Thresholds
    f1: ClassScores
    f1_ci: BootstrapCI
    n_test: int


# --------------------------------------------------------------------------------------------
# Column-wise kernels: (N, K) -> (K,) with NaN where undefined


def _check(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape or y.shape[1] != len(classes):
        raise ValueError(f"expected (N, {len(classes)}) labels and scores, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (map uncertain / blank labels before scoring)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(bool), s


def _auroc_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per column (ties count one half): (N, K) bool, (N, K) float -> (K,)."""
    pos = y.sum(0).astype(np.float64)
    neg = len(y) - pos
    ranks = rankdata(s, axis=0)  # average ranks for ties
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(0) - pos * (pos + 1) / 2) / (pos * neg)
    auc[(pos == 0) | (neg == 0)] = np.nan
    return auc


def _f1_columns(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 per column with fixed thresholds (positive when s >= t): -> (K,), NaN where no positives."""
    pred = s >= thresholds[None, :]
    tp = (pred & y).sum(0).astype(np.float64)
    pos = y.sum(0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (pred.sum(0) + pos)
    f1[(pos == 0) | np.isnan(thresholds)] = np.nan
    return f1


def _scores(metric: str, values: np.ndarray, classes: Sequence[str]) -> ClassScores:
    defined = ~np.isnan(values)
    return ClassScores(
        metric=metric,
        per_class={c: float(v) for c, v, d in zip(classes, values, defined) if d},
        macro=float(values[defined].mean()) if defined.any() else float("nan"),
        excluded=tuple(c for c, d in zip(classes, defined) if not d),
    )


# --------------------------------------------------------------------------------------------
# Public metrics


def auroc(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str]) -> ClassScores:
    """Per-class AUROC and their macro mean; classes without positives or negatives are excluded and listed."""
    y, s = _check(y_true, y_score, classes)
    scores = _scores("auroc", _auroc_columns(y, s), classes)
    if scores.excluded:
        log.warning("AUROC undefined (no positives or no negatives) for: %s", ", ".join(scores.excluded))
    return scores


def _best_threshold(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Threshold among the observed scores maximising F1 of ``s >= t`` for one class; the highest such
    threshold on ties. (N,) bool, (N,) float -> (threshold, F1)."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # last index of each distinct score (descending)
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    predicted = (np.flatnonzero(last) + 1).astype(np.float64)
    f1 = 2 * tp / (predicted + y.sum())
    best = int(np.argmax(f1))  # first maximum = highest threshold
    return float(s_sorted[last][best]), float(f1[best])


def choose_thresholds(y_val: np.ndarray, score_val: np.ndarray, classes: Sequence[str]) -> Thresholds:
    """Per class, the validation score threshold that maximises validation F1 (classes without validation
    positives get none and are listed in ``excluded``)."""
    y, s = _check(y_val, score_val, classes)
    per_class, val_f1, excluded = {}, {}, []
    for k, name in enumerate(classes):
        if not y[:, k].any():
            excluded.append(name)
            continue
        per_class[name], val_f1[name] = _best_threshold(y[:, k], s[:, k])
    return Thresholds(per_class=per_class, val_f1=val_f1, excluded=tuple(excluded))


def _threshold_array(thresholds: Thresholds, classes: Sequence[str]) -> np.ndarray:
    return np.array([thresholds.per_class.get(c, np.nan) for c in classes], dtype=np.float64)


def f1_at_thresholds(
    y_true: np.ndarray, y_score: np.ndarray, thresholds: Thresholds, classes: Sequence[str]
) -> ClassScores:
    """Per-class F1 on (test) data at the given (validation) thresholds; classes without test positives
    or without a threshold are excluded and listed."""
    y, s = _check(y_true, y_score, classes)
    return _scores("f1", _f1_columns(y, s, _threshold_array(thresholds, classes)), classes)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` percentile interval of the non-NaN entries of (B,) ``values``; NaNs when none."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2 * 100
    low, high = np.percentile(v, [alpha, 100 - alpha])
    return float(low), float(high)


def _column_fn(
    metric: str, thresholds: Thresholds | None, classes: Sequence[str]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The (N, K) -> (K,) kernel of ``metric`` ("auroc", or "f1" with ``thresholds``)."""
    if metric == "auroc":
        return _auroc_columns
    if metric == "f1" and thresholds is not None:
        thr = _threshold_array(thresholds, classes)
        return lambda yy, ss: _f1_columns(yy, ss, thr)
    raise ValueError(f"metric must be 'auroc' or 'f1' (with thresholds), got {metric!r}")


def _resampled(
    column: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y: np.ndarray,
    scores: list[np.ndarray],
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> list[np.ndarray]:
    """(n_boot, K) metric values per score matrix, every matrix scored on the same resampled rows."""
    values = [np.empty((n_boot, y.shape[1])) for _ in scores]
    for b, idx in enumerate(bootstrap_indices(len(y), groups, n_boot, seed)):
        for v, s in zip(values, scores):
            v[b] = column(y[idx], s[idx])
    return values


def _n_clusters(groups: np.ndarray | None) -> int | None:
    return None if groups is None else clusters(groups).count


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    classes: Sequence[str],
    metric: str = "auroc",
    thresholds: Thresholds | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> BootstrapCI:
    """Percentile bootstrap CI of per-class and macro ``metric`` ("auroc" or "f1"; F1 needs ``thresholds``).

    ``groups``: (N,) cluster ids (e.g. subject_id). Given, each resample draws as many clusters as there
    are, with replacement, and takes all their rows (patient-clustered bootstrap); None draws N rows with
    replacement (image-level). numpy Generator seeded with ``seed``: deterministic per seed. Classes
    excluded from the point estimate get no interval.
    """
    y, s = _check(y_true, y_score, classes)
    column = _column_fn(metric, thresholds, classes)
    scored = ~np.isnan(column(y, s))  # classes with a point estimate
    (values,) = _resampled(column, y, [s], groups, n_boot, seed)  # (n_boot, K)
    undefined = np.isnan(values) & scored
    macro_ok = ~undefined.any(1)
    nan_pair = (float("nan"), float("nan"))
    return BootstrapCI(
        metric=metric,
        per_class={c: _percentile_interval(values[:, k], level) for k, c in enumerate(classes) if scored[k]},
        macro=_percentile_interval(values[macro_ok][:, scored].mean(1), level) if scored.any() else nan_pair,
        level=level,
        n_boot=n_boot,
        seed=seed,
        skipped={c: int(undefined[:, k].sum()) for k, c in enumerate(classes) if scored[k]},
        macro_skipped=int((~macro_ok).sum()),
        n_clusters=_n_clusters(groups),
    )


def paired_delta(
    y_true: np.ndarray,
    score_reference: np.ndarray,
    score_arm: np.ndarray,
    classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> PairedDelta:
    """AUROC of ``score_arm`` minus ``score_reference`` on the same (N, K) labels, with paired intervals.

    Rows must be aligned (row i is the same test image for both). Each resample (rows, or whole
    ``groups`` clusters, as :func:`bootstrap_ci`) scores both arms on the same drawn rows; a class
    undefined in a resample is skipped there for both, and the macro of such a resample is skipped.
    Identical scores give a delta of exactly 0 with a [0, 0] interval.
    """
    y, ref = _check(y_true, score_reference, classes)
    _, arm = _check(y_true, score_arm, classes)
    point_ref, point_arm = _auroc_columns(y, ref), _auroc_columns(y, arm)
    scored = ~np.isnan(point_ref)  # the labels decide, so the same classes for both arms
    v_ref, v_arm = _resampled(_auroc_columns, y, [ref, arm], groups, n_boot, seed)
    diff = v_arm - v_ref  # (n_boot, K), NaN where the class is undefined in that resample
    macro_ok = ~(np.isnan(diff) & scored).any(1)
    nan_pair = (float("nan"), float("nan"))
    return PairedDelta(
        metric="auroc",
        delta=float(point_arm[scored].mean() - point_ref[scored].mean()) if scored.any() else float("nan"),
        interval=_percentile_interval(diff[macro_ok][:, scored].mean(1), level) if scored.any() else nan_pair,
        per_class={c: float(point_arm[k] - point_ref[k]) for k, c in enumerate(classes) if scored[k]},
        per_class_interval={c: _percentile_interval(diff[:, k], level) for k, c in enumerate(classes) if scored[k]},
        level=level,
        n_boot=n_boot,
        seed=seed,
        macro_skipped=int((~macro_ok).sum()),
        n_clusters=_n_clusters(groups),
    )


def evaluate_classifier(
    y_val: np.ndarray,
    score_val: np.ndarray,
    y_test: np.ndarray,
    score_test: np.ndarray,
    classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> ClassificationReport:
    """AUROC and F1 (thresholds from validation) on test, each with bootstrap CIs over test images, or
    over whole clusters of them when ``groups`` ((N_test,) ids, e.g. subject_id) is given."""
    thresholds = choose_thresholds(y_val, score_val, classes)
    boot = {"n_boot": n_boot, "seed": seed, "level": level, "groups": groups}
    return ClassificationReport(
        auroc=auroc(y_test, score_test, classes),
        auroc_ci=bootstrap_ci(y_test, score_test, classes, "auroc", **boot),
        thresholds=thresholds,
        f1=f1_at_thresholds(y_test, score_test, thresholds, classes),
        f1_ci=bootstrap_ci(y_test, score_test, classes, "f1", thresholds, **boot),
        n_test=len(y_test),
    )


def report_dict(report: ClassificationReport) -> dict[str, Any]:
    """A ClassificationReport as plain JSON values (tuples to lists)."""
    return {
        "auroc": asdict(report.auroc),
        "auroc_ci": asdict(report.auroc_ci),
        "f1": asdict(report.f1),
        "f1_ci": asdict(report.f1_ci),
        "thresholds": asdict(report.thresholds),
        "n_test": report.n_test,
    }


# --------------------------------------------------------------------------------------------
# ROC curves


def macro_roc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mean TPR over the classes with both labels at :data:`ROC_GRID` false-positive rates."""
    curves = [
        np.interp(ROC_GRID, *roc_curve(y[:, k], s[:, k], drop_intermediate=False)[:2])
        for k in range(y.shape[1])
        if 0 < y[:, k].sum() < len(y)
    ]
    return np.mean(curves, axis=0) if curves else np.full_like(ROC_GRID, np.nan)


def class_roc_curves(
    y: np.ndarray, s: np.ndarray, scores: ClassScores, classes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per scored class: (false-positive rates, true-positive rates, AUROC) of its ROC curve."""
    return {
        c: (*roc_curve(y[:, k], s[:, k])[:2], scores.per_class[c])
        for k, c in enumerate(classes)
        if c in scores.per_class
    }
