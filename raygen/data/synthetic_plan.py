"""The synthesize stage's plans: which prompt goes to which image file, with which labels.

Two sets (file layout and columns in :mod:`raygen.stages.synthesize`): the per-report set
(:func:`per_report_plan`, every held-out FID image's own impression once per seed) and the
augmentation set (:func:`augmentation_plan`, the 100% arm, counts per class by
:func:`raygen.data.augment_recipe.class_counts`, rows grouped by class in CLASSES order). Paths in
the plans are relative to the stage's output folder and start with :data:`IMAGES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from raygen.config import ConfigError
from raygen.data.augment_recipe import class_counts
from raygen.data.classifier_data import read_classifier_manifest
from raygen.data.labels import CLASSES

IMAGES = "images"  # the finished image folder under the stage's output folder


class PlanSettings(Protocol):
    """What the plans read from the ``synthesize`` params section (``SynthesizeParams``)."""

    prompts: str
    class_template: str
    count_rule: str
    aug_total: int
    seed: int
    per_report_seeds: list[int]
    per_report_max: int


def plan_sets(
    fid_path: Path, classifier_path: Path, generator_path: Path, params: PlanSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-report and augmentation plans from the cohort's fid.csv, classifier.csv and generator.csv."""
    fid = pd.read_csv(fid_path, dtype={"dicom_id": str, "path": str})
    classifier = read_classifier_manifest(classifier_path)
    generator = pd.read_csv(generator_path, dtype={"dicom_id": str, "path": str})
    per_report = per_report_plan(fid, params.per_report_seeds, params.per_report_max)
    impressions = training_impressions(classifier, generator) if params.prompts == "impression" else None
    return per_report, augmentation_plan(classifier, params, impressions)


def slug(name: str) -> str:
    """A file-system name for a class: "Lung Lesion" -> "lung_lesion"."""
    return name.lower().replace(" ", "_")


def class_prompt(template: str, name: str) -> str:
    return template.format(name=name, lower=name.lower())


def augmentation_plan(
    classifier: pd.DataFrame, params: PlanSettings, impressions: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The 100% arm's rows (path, prompt, prompt_class, labels[, source_study_id]), grouped by class.

    classifier:  the real classifier manifest; its training split sets the size and the class counts.
    impressions: for ``prompts: impression``, training studies with their ``text`` and 10 labels.
    """
    train = classifier[classifier["split"] == "train"]
    positives = train[list(CLASSES)].sum().astype(int).tolist()
    total = params.aug_total or len(train)
    counts = class_counts(positives, total, params.count_rule)
    if not any(counts):
        raise ConfigError(
            f"synthesize.aug_total {total}: the {params.count_rule!r} recipe floors every class to 0 images "
            "(it shares the total out by class weight); ask for more images"
        )
    rng = np.random.default_rng(params.seed)
    rows: list[dict[str, Any]] = []
    for k, (name, n) in enumerate(zip(CLASSES, counts)):
        if params.prompts == "class_name":
            rows += _class_name_rows(k, name, n, params.class_template)
        else:
            assert impressions is not None
            rows += _impression_rows(name, n, impressions, rng)
    return pd.DataFrame(rows)


def _class_name_rows(k: int, name: str, n: int, template: str) -> list[dict[str, Any]]:
    """``n`` rows prompting class ``k`` by its name, labelled one-hot."""
    label = [int(j == k) for j in range(len(CLASSES))]
    return [
        {
            "path": f"{IMAGES}/aug/{slug(name)}/{i:05d}.png",
            "prompt": class_prompt(template, name),
            "prompt_class": name,
            **dict(zip(CLASSES, label)),
        }
        for i in range(n)
    ]


def _impression_rows(name: str, n: int, impressions: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` rows prompting with impressions of studies positive for ``name``, keeping their labels."""
    if n == 0:  # the recipe gives a class without training positives no images
        return []
    pool = impressions[impressions[name] == 1]
    if pool.empty:
        raise ConfigError(
            f"synthesize.prompts: impression needs training impressions positive for {name}; none found "
            "(use prompts: class_name)"
        )
    picks = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // max(len(pool), 1)))])[:n]
    rows = []
    for i, j in enumerate(picks):
        source = pool.iloc[int(j)]
        rows.append(
            {
                "path": f"{IMAGES}/aug/{slug(name)}/{i:05d}.png",
                "prompt": source["text"],
                "prompt_class": name,
                **{c: int(source[c]) for c in CLASSES},
                "source_study_id": int(source["study_id"]),
            }
        )
    return rows


def aug_class_counts(aug: pd.DataFrame) -> dict[str, int]:
    """Images per ``prompt_class`` in CLASSES order: what meta.json reports, and how ``train_classifier``
    groups the rows for the 50% arm (the first ``n // 2`` of each)."""
    counts = aug.groupby("prompt_class", sort=False).size().reindex(list(CLASSES), fill_value=0)
    return {c: int(n) for c, n in counts.items()}


def prompt_kind(aug: pd.DataFrame) -> str:
    """Which augmentation prompts a 100% manifest was made with: only impression rows name their
    ``source_study_id``, so the manifest itself says, whatever params a later reader holds."""
    return "impression" if "source_study_id" in aug.columns else "class_name"


def training_impressions(classifier: pd.DataFrame, generator: pd.DataFrame) -> pd.DataFrame:
    """Classifier training studies that have a generator prompt: study_id, text, the 10 labels."""
    train = classifier[classifier["split"] == "train"].drop_duplicates("study_id")
    texts = generator.drop_duplicates("study_id")[["study_id", "text"]]
    return train[["study_id", *CLASSES]].merge(texts, on="study_id", how="inner")


def per_report_plan(fid: pd.DataFrame, seeds: list[int], limit: int) -> pd.DataFrame:
    """One row per FID image: ids, text, real_path, path_<k> per seed, recon_path (the tokenizer's
    reconstruction of the real image: what a decoder that reproduced its tokens exactly would give), the
    true_* columns when present."""
    fid = fid.iloc[:limit] if limit > 0 else fid
    keep = [c for c in ("dicom_id", "subject_id", "study_id", "view", "text") if c in fid.columns]
    plan = fid[keep].copy()
    plan["real_path"] = fid["path"]
    for k in range(len(seeds)):
        plan[f"path_{k}"] = [f"{IMAGES}/per_report/seed{seeds[k]}/{d}.png" for d in fid["dicom_id"]]
    plan["recon_path"] = [f"{IMAGES}/per_report/reconstructed/{d}.png" for d in fid["dicom_id"]]
    truth = [c for c in fid.columns if c.startswith("true_")]
    return pd.concat([plan.reset_index(drop=True), fid[truth].reset_index(drop=True)], axis=1)
