"""The classifier arms (real, real+50, real+100) scored on the same real test patients.

Each arm's ``<split>_predictions.csv`` (written by train_classifier) is read; the arms' test predictions
are aligned by ``dicom_id`` (differing test sets are an error), so every bootstrap resample draws the
same patients for every arm, and each augmented arm's macro AUROC minus the reference arm's gets a
paired interval from those shared resamples (:mod:`raygen.metrics.classification`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygen.data.classifier_config import ARMS
from raygen.data.labels import CLASSES
from raygen.metrics.classification import (
    ClassificationReport,
    class_roc_curves,
    evaluate_classifier,
    macro_roc,
    paired_delta,
    report_dict,
)

log = logging.getLogger(__name__)

__all__ = [
    "REFERENCE_ARM",
    "ArmScores",
    "align_test_predictions",
    "labels_and_scores",
    "read_prediction_frame",
    "read_predictions",
    "score_arms",
    "training_facts",
]

REFERENCE_ARM = "real"  # the arm every augmented arm is compared with


@dataclass(frozen=True)
class ArmScores:
    """What :func:`score_arms` found.

    reports: per arm, its classification report and training facts (metrics.json ``classifier``);
    deltas: per augmented arm, its paired macro AUROC difference from the reference arm (``delta_auroc``);
    curves: per arm and scored class, (false-positive rates, true-positive rates, AUROC);
    macro_tpr: per arm, the macro-average true-positive rate at :data:`~raygen.metrics.classification.ROC_GRID`.
    """

    reports: dict[str, Any]
    deltas: dict[str, Any]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]]
    macro_tpr: dict[str, np.ndarray]


def read_prediction_frame(folder: Path, split: str) -> pd.DataFrame:
    """``<split>_predictions.csv`` as written by train_classifier (dicom_id as text)."""
    return pd.read_csv(folder / f"{split}_predictions.csv", dtype={"dicom_id": str})


def labels_and_scores(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, K) int, probabilities (N, K) float) of a predictions frame."""
    return frame[list(CLASSES)].to_numpy(dtype=np.int64), frame[[f"prob_{c}" for c in CLASSES]].to_numpy(np.float64)


def read_predictions(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, K) int, probabilities (N, K) float) from ``<split>_predictions.csv``."""
    return labels_and_scores(read_prediction_frame(folder, split))


def align_test_predictions(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every arm's test predictions in the reference arm's row order, so row i is the same image everywhere.

    The arms were tested on the same real test patients; a different set of ``dicom_id`` values, a
    duplicate, different labels or a missing ``subject_id`` (the bootstrap's cluster id) is an error.
    """
    reference = frames[REFERENCE_ARM]
    for arm, frame in frames.items():
        if "subject_id" not in frame.columns:
            raise ValueError(
                f"arm {arm}: test_predictions.csv has no subject_id column, which the "
                "patient-clustered bootstrap needs; rerun train_classifier (it writes subject_id)"
            )
        if frame["dicom_id"].duplicated().any():
            raise ValueError(f"arm {arm}: test_predictions.csv lists some dicom_id more than once")
    return {arm: _aligned(reference, frame, arm) for arm, frame in frames.items()}


def _aligned(reference: pd.DataFrame, frame: pd.DataFrame, arm: str) -> pd.DataFrame:
    """``frame`` reordered to ``reference``'s dicom_id order, after checking both hold the same images."""
    ref_ids, ids = set(reference["dicom_id"]), set(frame["dicom_id"])
    if ref_ids != ids:
        missing, extra = sorted(ref_ids - ids), sorted(ids - ref_ids)
        raise ValueError(
            f"arm {arm} was tested on other images than arm {REFERENCE_ARM}: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]}); paired comparisons need "
            "the same test set, so retrain the arms on one cohort"
        )
    out = frame.set_index("dicom_id").loc[reference["dicom_id"]].reset_index()
    same = ["subject_id", *CLASSES]
    if not np.array_equal(out[same].to_numpy(), reference[same].to_numpy()):
        raise ValueError(
            f"arm {arm}: the same test images carry other labels or patients than in arm "
            f"{REFERENCE_ARM}; retrain the arms on one cohort"
        )
    return out


def training_facts(folder: Path) -> dict[str, Any]:
    """Counts and the training seed from an arm's train_classifier ``metrics.json`` (seed None if unrecorded)."""
    trained = json.loads((folder / "metrics.json").read_text())
    return {
        "train_images": trained["train_images"],
        "synthetic_train_images": trained["synthetic_train_images"],
        "best_epoch": trained["best_epoch"],
        "optimizer_steps": trained.get("optimizer_steps"),
        "synthetic_use": trained.get("synthetic_use", "mixed"),  # runs before the option mixed their images
        "train_seeds": [trained["seed"]] if "seed" in trained else None,
    }


def score_arms(classifiers: Path, n_boot: int, seed: int, level: float) -> ArmScores:
    """Every arm's report (patient-clustered intervals) and each augmented arm's paired AUROC delta.

    ``classifiers`` holds one train_classifier folder per arm. All arms are scored on the reference
    arm's row order with the same seed, so resample b draws the same patients for every arm.
    """
    test = align_test_predictions({arm: read_prediction_frame(classifiers / arm, "test") for arm in ARMS})
    groups = test[REFERENCE_ARM]["subject_id"].to_numpy()  # (N,) cluster ids
    boot = {"n_boot": n_boot, "seed": seed, "level": level, "groups": groups}
    reports: dict[str, Any] = {}
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]] = {}
    macro_tpr: dict[str, np.ndarray] = {}
    for arm in ARMS:
        y_test, s_test = labels_and_scores(test[arm])
        report = _score_arm(classifiers / arm, arm, y_test, s_test, boot)
        reports[arm] = report_dict(report) | training_facts(classifiers / arm)
        curves[arm] = class_roc_curves(y_test, s_test, report.auroc, CLASSES)
        macro_tpr[arm] = macro_roc(y_test, s_test)
    return ArmScores(reports=reports, deltas=_paired_deltas(test, boot), curves=curves, macro_tpr=macro_tpr)


def _score_arm(
    folder: Path, arm: str, y_test: np.ndarray, s_test: np.ndarray, boot: dict[str, Any]
) -> ClassificationReport:
    """One arm's AUROC and F1 (thresholds from its validation predictions) with bootstrap intervals."""
    y_val, s_val = read_predictions(folder, "val")
    report = evaluate_classifier(y_val, s_val, y_test, s_test, CLASSES, **boot)
    log.info(
        "arm %s: macro AUROC %.4f [%.4f, %.4f], macro F1 %.4f (%d test images, %d patients)",
        arm,
        report.auroc.macro,
        *report.auroc_ci.macro,
        report.f1.macro,
        report.n_test,
        report.auroc_ci.n_clusters,
    )
    return report


def _paired_deltas(test: dict[str, pd.DataFrame], boot: dict[str, Any]) -> dict[str, Any]:
    """Each augmented arm's macro AUROC minus the reference arm's, on the same resamples."""
    y, s_ref = labels_and_scores(test[REFERENCE_ARM])
    deltas = {}
    for arm in (a for a in ARMS if a != REFERENCE_ARM):
        delta = paired_delta(y, s_ref, labels_and_scores(test[arm])[1], CLASSES, **boot)
        deltas[arm] = asdict(delta) | {"reference": REFERENCE_ARM}
        log.info(
            "arm %s - %s: macro AUROC %+.4f [%+.4f, %+.4f] (paired, patient-clustered)",
            arm,
            REFERENCE_ARM,
            delta.delta,
            *delta.interval,
        )
    return deltas
