"""The cohort stage's counts: ``counts.json`` (rules, splits, prevalence, patient overlap), ``counts.md``
(the same as markdown tables) and the log lines summarising them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from raygen.config import to_dict
from raygen.data.cohort import TRUTH_PREFIX, Cohorts, patient_overlap, patient_sets, split_summary
from raygen.data.labels import CLASSES

if TYPE_CHECKING:
    from raygen.stages.cohort import CohortParams

log = logging.getLogger(__name__)


def summarise(cohorts: Cohorts, params: CohortParams, truth_missing: dict[str, int] | None) -> dict[str, Any]:
    """The content of counts.json."""
    frames = {"classifier": cohorts.classifier, "generator": cohorts.generator, "fid": cohorts.fid}
    counts: dict[str, Any] = {
        "params": to_dict(params),
        "rules": {
            name: [r.as_dict() for r in cohorts.ledger.for_cohort(name)]
            for name in ("classifier", "pairs", "generator", "fid")
        },
        "notes": cohorts.ledger.notes,
        "patient_overlap": patient_overlap(patient_sets(cohorts.classifier, cohorts.generator, cohorts.fid)),
        "shared_patients_allowed": {
            "generator_train & classifier_train": len(
                set(cohorts.generator.loc[cohorts.generator["split"] == "train", "subject_id"])
                & set(cohorts.classifier.loc[cohorts.classifier["split"] == "train", "subject_id"])
            ),
            "fid & classifier_test": len(
                set(cohorts.fid["subject_id"])
                & set(cohorts.classifier.loc[cohorts.classifier["split"] == "test", "subject_id"])
            ),
        },
    }
    for name, frame in frames.items():
        labels = list(CLASSES) if name == "classifier" else []
        truth = [f"{TRUTH_PREFIX}{c}" for c in CLASSES if f"{TRUTH_PREFIX}{c}" in frame.columns]
        counts[name] = {
            "splits": split_summary(frame, labels + truth),
            "images": len(frame),
            "patients": int(frame["subject_id"].nunique()),
        }
    if truth_missing is not None:
        counts["ground_truth_rows_missing"] = truth_missing
    return counts


def counts_markdown(counts: dict[str, Any]) -> str:
    """counts.json as human-readable markdown tables."""
    lines = ["# Cohort counts", ""]
    for cohort, rules in counts["rules"].items():
        lines += [
            f"## Rules: {cohort}",
            "",
            "| rule | images kept | dropped | studies kept | dropped | patients kept | dropped |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['rule']} | {r['images_kept']} | {r['images_dropped']} | {r['studies_kept']} | "
            f"{r['studies_dropped']} | {r['patients_kept']} | {r['patients_dropped']} |"
            for r in rules
        ]
        for key, value in counts["notes"].get(cohort, {}).items():
            lines.append(f"\n{key}: {value}")
        lines.append("")
    lines += ["## Splits", "", "| cohort | split | images | studies | patients |", "|---|---|---:|---:|---:|"]
    for cohort in ("classifier", "generator", "fid"):
        for split, entry in counts[cohort]["splits"].items():
            lines.append(f"| {cohort} | {split} | {entry['images']} | {entry['studies']} | {entry['patients']} |")
    splits = counts["classifier"]["splits"]
    lines += [
        "",
        "## Classifier prevalence (share of images positive)",
        "",
        "| class | " + " | ".join(splits) + " |",
        "|---|" + "---:|" * len(splits),
    ]
    lines += [f"| {c} | " + " | ".join(f"{splits[s]['prevalence'][c]:.3f}" for s in splits) + " |" for c in CLASSES]
    lines += ["", "## Patient overlap (must all be 0)", "", "| sets | patients |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in counts["patient_overlap"].items()]
    return "\n".join(lines) + "\n"


def log_summary(counts: dict[str, Any]) -> None:
    for cohort in ("classifier", "pairs", "generator", "fid"):
        for r in counts["rules"][cohort]:
            log.info(
                "%-10s %-60s kept %6d images (%5d studies, %5d patients), dropped %6d images",
                cohort,
                r["rule"],
                r["images_kept"],
                r["studies_kept"],
                r["patients_kept"],
                r["images_dropped"],
            )
    for cohort in ("classifier", "generator", "fid"):
        for split, e in counts[cohort]["splits"].items():
            log.info(
                "%s/%s: %d images, %d studies, %d patients", cohort, split, e["images"], e["studies"], e["patients"]
            )
    log.info("patient overlap (must be 0): %s", counts["patient_overlap"])
