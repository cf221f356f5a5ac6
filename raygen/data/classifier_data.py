"""Classifier data: real cohort rows, optional synthetic rows, in-memory images and train-time augmentation.

Real rows come from the cohort's ``classifier.csv`` (dicom_id, subject_id, study_id, split, view, path,
the 10 :data:`CLASSES` as 0/1; extra columns, such as the demo's ``true_*`` labels, are carried along).
Synthetic rows come from a manifest CSV with ``path`` (absolute, or relative to a root folder) and the
10 class columns; they join the TRAINING split only, and only for the arms that ask for them:

    real       real training images only
    real+50    plus the first half (``n // 2``) of each class's synthetic images (the paper's 50% arm)
    real+100   plus every synthetic image (the paper's 100% arm)

The synthetic manifest is the 100% set (the synthesize stage's ``aug_100.csv``); a row's class is the
class it was generated for, its ``prompt_class`` column (the synthesize stage writes it for both
``prompts: class_name`` and ``prompts: impression``, and its meta.json counts the 50% arm the same
way); only a manifest without that column falls back to the first positive label, which is the same
thing for one-hot class-name images but not for impression prompts, whose rows keep the source
study's labels. Validation and test are real only, and patients never cross splits (checked).

Which labels of a synthetic row train the classifier: all of them (the paper), or only the class it
was generated for (``train_classifier.synthetic_labels: prompted``, :func:`loss_mask`).

Augmentation (training only, seeded by an explicit ``torch.Generator``): a small random affine map
(rotation, translation, isotropic scale; its determinant is always positive, so it never mirrors)
and brightness / contrast. No flips, ever: a flipped chest X-ray puts the heart on the wrong side.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raygen.data.classifier_config import ARMS, AugmentConfig
from raygen.data.datasets import CohortImages, load_all
from raygen.data.images import signed_to_unit, unit_to_signed
from raygen.data.labels import CLASSES
from raygen.errors import ManifestError

log = logging.getLogger(__name__)

__all__ = [
    "ClassifierImages",
    "ClassifierSplits",
    "COHORT_COLUMNS",
    "arm_groups",
    "augment_batch",
    "build_splits",
    "check_patient_disjoint",
    "load_images",
    "loss_mask",
    "read_classifier_manifest",
    "read_synthetic_manifest",
    "synthetic_for_arm",
]

COHORT_COLUMNS = ("dicom_id", "subject_id", "study_id", "split", "view", "path")


# --------------------------------------------------------------------------------------------
# Manifests


def _check_labels(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in CLASSES if c not in frame.columns]
    if missing:
        raise ManifestError(f"{source}: lacks class column(s) {missing}")
    labels = frame[list(CLASSES)]
    if labels.isna().any().any() or not labels.isin([0, 1]).all().all():
        raise ManifestError(f"{source}: class columns must be 0/1 (blank and -1 are resolved by the cohort stage)")
    frame[list(CLASSES)] = labels.astype(np.int64)
    return frame


def read_classifier_manifest(path: str | Path) -> pd.DataFrame:
    """The cohort's classifier.csv: one row per image, ``source`` = "real", labels as int64 0/1."""
    frame = pd.read_csv(path, dtype={"dicom_id": str, "path": str, "split": str, "view": str})
    missing = [c for c in COHORT_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: classifier manifest lacks column(s) {missing}")
    bad = sorted(set(frame["split"]) - {"train", "val", "test"})
    if bad:
        raise ManifestError(f"{path}: unknown split value(s) {bad}; expected train, val, test")
    duplicated = frame["dicom_id"][frame["dicom_id"].duplicated()].unique()
    if len(duplicated):
        raise ManifestError(
            f"{path}: {len(duplicated)} dicom_id(s) listed more than once (e.g. "
            f"{', '.join(duplicated[:3])}); each image must appear once, or it is trained on or "
            "scored several times"
        )
    frame = _check_labels(frame, str(path))
    frame["source"] = "real"
    return frame


def read_synthetic_manifest(path: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """A synthetic manifest: ``path`` resolved to absolute (relative ones against ``root``, default the
    CSV's folder), ``dicom_id`` made up as ``syn-<row>`` when absent, split "train", source "synthetic"."""
    path = Path(path)
    frame = pd.read_csv(path, dtype={"path": str})
    if "path" not in frame.columns:
        raise ValueError(f"{path}: synthetic manifest lacks a 'path' column")
    frame = _check_labels(frame, str(path))
    base = Path(root) if root is not None else path.parent
    frame["path"] = [str(p if Path(p).is_absolute() else (base / p).resolve()) for p in frame["path"]]
    if "dicom_id" not in frame.columns:
        frame["dicom_id"] = [f"syn-{i:06d}" for i in range(len(frame))]
    frame["dicom_id"] = frame["dicom_id"].astype(str)
    frame["split"], frame["source"] = "train", "synthetic"
    return frame


def arm_groups(synthetic: pd.DataFrame) -> np.ndarray:
    """(N,) the class each synthetic row was generated for: ``prompt_class`` when the manifest has it.

    Without that column (a hand-made manifest), the row's first positive label, "" when it has none.
    Impression-prompted rows carry their source study's labels, so their first positive label is often
    another class than the one they were generated for: the column is the truth.
    """
    if "prompt_class" in synthetic.columns:
        return synthetic["prompt_class"].fillna("").astype(str).to_numpy()
    labels = synthetic[list(CLASSES)].to_numpy()
    first = np.asarray(CLASSES, dtype=object)[labels.argmax(axis=1)]
    return np.where(labels.any(axis=1), first, "").astype(str)


def synthetic_for_arm(synthetic: pd.DataFrame, arm: str, fraction: float = 1.0) -> pd.DataFrame:
    """The synthetic rows an arm trains on: per class (:func:`arm_groups`: ``prompt_class``, else the first
    positive label; none = its own group), the first ``floor(n_c * share)`` rows in manifest order,
    ``share`` = ARMS[arm] * ``fraction``. The 50% arm takes ``n_c // 2`` (the paper's first half of each
    class, as the synthesize stage's meta.json counts it). ``fraction`` < 1 scales the set down with the
    real training set (``max_train_images``)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {list(ARMS)}")
    share = ARMS[arm] * fraction
    if share <= 0.0 or synthetic.empty:
        return synthetic.iloc[:0]
    group = arm_groups(synthetic)  # (N,)
    keep = np.zeros(len(synthetic), dtype=bool)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        keep[rows[: math.floor(len(rows) * share + 1e-9)]] = True
    return synthetic[keep]


def check_patient_disjoint(frame: pd.DataFrame) -> None:
    """Raise ValueError when a real patient (subject_id) appears in more than one split."""
    real = frame[frame["source"] == "real"]
    splits_per_subject = real.groupby("subject_id")["split"].nunique()
    leaked = splits_per_subject[splits_per_subject > 1]
    if len(leaked):
        raise ValueError(
            f"{len(leaked)} patient(s) appear in several splits (e.g. {list(leaked.index[:5])}); "
            "the classifier must be split by patient"
        )


@dataclass(frozen=True)
class ClassifierSplits:
    """Rows of each split: train (real, plus synthetic for augmented arms), val and test (real only)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    n_real_train: int
    n_synthetic: int


def build_splits(
    manifest: pd.DataFrame, arm: str, synthetic: pd.DataFrame | None = None, max_train_images: int = 0, seed: int = 0
) -> ClassifierSplits:
    """Assemble one arm's data from the real manifest and (for augmented arms) the synthetic manifest.

    ``max_train_images`` > 0 keeps a seeded random subset of the real training rows (CPU budgets); the
    synthetic rows shrink by the same fraction. ``arm == "real"`` ignores ``synthetic`` (with a warning);
    an augmented arm without ``synthetic`` is an error.
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {list(ARMS)}")
    check_patient_disjoint(manifest)
    real_train = manifest[manifest["split"] == "train"]
    n_all = len(real_train)
    if 0 < max_train_images < n_all:
        rows = np.sort(np.random.default_rng(seed).choice(n_all, size=max_train_images, replace=False))
        real_train = real_train.iloc[rows]
    if arm == "real":
        if synthetic is not None:
            log.warning("arm 'real' trains on real images only: the synthetic manifest is ignored")
        syn = None
    elif synthetic is None:
        raise ValueError(f"arm {arm!r} needs a synthetic manifest (--synthetic)")
    else:
        syn = synthetic_for_arm(synthetic, arm, fraction=len(real_train) / max(n_all, 1))
    real_train = real_train.assign(synthetic=False)  # train_classifier's epoch_size: real counts these
    train = (
        pd.concat([real_train, syn.assign(synthetic=True)], ignore_index=True)
        if syn is not None
        else real_train.reset_index(drop=True)
    )
    return ClassifierSplits(
        train=train,
        val=manifest[manifest["split"] == "val"].reset_index(drop=True),
        test=manifest[manifest["split"] == "test"].reset_index(drop=True),
        n_real_train=len(real_train),
        n_synthetic=0 if syn is None else len(syn),
    )


# --------------------------------------------------------------------------------------------
# Images in memory


@dataclass(frozen=True)
class ClassifierImages:
    """Decoded images of one split. pixels: (N, C, R, R) in ``pixels.dtype`` (fp16 in RAM), values in
    [-1, 1]; labels: (N, K) float32 0/1; frame: the N readable rows (unreadable ones dropped);
    loss_mask: (N, K) float32, which labels a row's loss counts (:func:`loss_mask`)."""

    pixels: torch.Tensor
    labels: torch.Tensor
    frame: pd.DataFrame
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.frame)


def loss_mask(frame: pd.DataFrame, synthetic_labels: str) -> torch.Tensor:
    """(N, K) 0/1: which of a row's labels train the classifier.

    ``all`` (the paper): every label of every row. ``prompted``: a synthetic row counts only for the class
    it was generated for (:func:`arm_groups`); its other labels are not known to be true (an image asked
    to show an effusion may show a cardiomegaly too, and a class-name prompt says nothing of the rest),
    so they give no loss either way. Real rows always count on every label.
    """
    mask = np.ones((len(frame), len(CLASSES)), dtype=np.float32)
    if synthetic_labels == "prompted":
        synthetic = (frame["source"] == "synthetic").to_numpy()
        if synthetic.any():
            group = arm_groups(frame[synthetic])
            rows = np.zeros((len(group), len(CLASSES)), dtype=np.float32)
            for k, name in enumerate(CLASSES):
                rows[group == name, k] = 1.0
            rows[group == ""] = 1.0  # a row generated for no class (a normal impression) keeps its labels
            mask[synthetic] = rows
    return torch.from_numpy(mask)


def load_images(
    frame: pd.DataFrame,
    jpg_root: str | Path,
    resolution: int,
    channels: int,
    workers: int,
    progress: bool = True,
    synthetic_labels: str = "all",
) -> ClassifierImages:
    """Decode and preprocess (raygen.data.images.preprocess: shortest side to R, centre crop) every row
    once into RAM. Real ``path`` values are relative to ``jpg_root``; synthetic ones are absolute.
    Unreadable files are logged, counted and dropped."""
    data = CohortImages(frame, jpg_root, resolution, channels)
    loaded = load_all(data, batch_size=32, workers=workers, dtype=torch.float16, progress=progress)
    if loaded.unreadable:
        log.warning("dropped %d unreadable image(s) of %d", len(loaded.unreadable), len(frame))
    kept = frame.iloc[loaded.rows].reset_index(drop=True)
    labels = torch.from_numpy(kept[list(CLASSES)].to_numpy(dtype=np.float32))
    return ClassifierImages(loaded.pixels, labels, kept, loss_mask(kept, synthetic_labels))


# --------------------------------------------------------------------------------------------
# Augmentation


def _uniform(n: int, half_width: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2.0 - 1.0) * half_width  # (n,) in [-w, w]


def augment_batch(pixels: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Randomly transform a (B, C, R, R) float batch in [-1, 1]; same shape, still in [-1, 1].

    Affine: ``A = s * R(theta)`` plus a shift, so ``det A = s^2 > 0``: rotations, shifts and zooms only,
    never a mirror image. Border pixels are replicated into uncovered corners. Random numbers come from
    ``generator`` (a CPU generator) only, so a batch's augmentation is a function of its state.
    """
    if not cfg.enabled:
        return pixels
    b = pixels.shape[0]
    theta = _uniform(b, math.radians(cfg.rotate_deg), generator)  # (B,)
    zoom = 1.0 + _uniform(b, cfg.scale, generator)  # (B,)
    shift = _uniform(2 * b, 2.0 * cfg.translate, generator).view(b, 2)  # normalised coords span 2
    brightness = _uniform(b, cfg.brightness, generator).view(b, 1, 1, 1)
    contrast = (1.0 + _uniform(b, cfg.contrast, generator)).view(b, 1, 1, 1)
    cos, sin = torch.cos(theta) / zoom, torch.sin(theta) / zoom  # grid maps output -> input coordinates
    matrix = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    x = pixels.float()
    grid = F.affine_grid(matrix.to(x.device), list(x.shape), align_corners=False)  # (B, R, R, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    unit = signed_to_unit(x)  # (B, C, R, R) in [0, 1]
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    unit = (unit - mean) * contrast.to(x.device) + mean + brightness.to(x.device)
    return unit_to_signed(unit)  # clamps to [0, 1] first
