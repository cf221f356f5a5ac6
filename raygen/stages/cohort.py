"""Stage ``cohort``: build the generator pairs, the FID set and the classifier train/val/test sets.

Command line::

    raygen cohort --jpg-root data/demo/mimic-cxr-jpg/2.0.0 \\
        --sections results/sections/prompts.csv --out results/cohort \\
        [--ground-truth data/demo/demo-ground-truth.csv] \\
        --params params.yaml [--profile demo] --log logs/cohort.log

Reads ``mimic-cxr-2.0.0-{metadata,chexpert|negbio}.csv.gz`` (and ``-split.csv.gz`` when
``split_method: official``) under the JPG root and the sections stage's prompts, applies the rules of
:mod:`raygen.data.cohort` and writes under ``--out``:

- ``generator.csv``  dicom_id, subject_id, study_id, split (train|val), view, path, text
- ``fid.csv``        same columns, split = fid (held-out patients, never in generator training)
- ``classifier.csv`` dicom_id, subject_id, study_id, split (train|val|test), view, path, 10 classes (0/1)
- ``counts.json``    rows kept / dropped per rule, images / studies / patients and prevalence per
  split, the zero ``patient_overlap`` checks, the resolved params; ``counts.md`` the same as tables.

With ``--ground-truth`` (demo only) the true labels are added to all three CSVs as ``true_*`` columns.
``path`` is relative to the JPG root.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from raygen.cli import stage_parser
from raygen.config import ConfigError, load_section, to_dict
from raygen.io import write_csv, write_json, write_text
from raygen.runtime import setup_logging

if TYPE_CHECKING:
    from raygen.data.cohort import Cohorts

log = logging.getLogger(__name__)

STAGE = "cohort"


@dataclass(frozen=True)
class CohortParams:
    """The ``cohort`` section of params.yaml."""

    # Label file: the paper used the CheXpert labeler's output (mimic-cxr-2.0.0-chexpert.csv).
    label_source: Literal["chexpert", "negbio"] = "chexpert"
    # -1 (uncertain) policy: the paper drops a study with -1 in any of the 14 labels.
    uncertain: Literal["drop", "zero", "one"] = "drop"
    # Classifier views: the paper kept AP and PA (frontal) images.
    classifier_views: list[str] = field(default_factory=lambda: ["AP", "PA"])
    # Group folders of the classifier set; None = all. Paper: ["p10"] (its classifier subset).
    classifier_groups: list[str] | None = None
    # patient_random: seeded 80/10/10 patient split (paper); official: the release's split file.
    split_method: Literal["patient_random", "official"] = "patient_random"
    # Classifier train/val/test shares of PATIENTS (paper: 80/10/10).
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    # Generator views: the paper used AP only, the most common view; first such image per study.
    generator_views: list[str] = field(default_factory=lambda: ["AP"])
    # Group folders of the generator pairs; None = all patients that are not held out.
    generator_groups: list[str] | None = None
    # Report sections a prompt may come from; None = whatever the sections stage chose.
    # Paper: ["impression"] (reports without an impression were dropped).
    prompt_sources: list[str] | None = None
    # Share of generator PATIENTS kept for validation (loss curves, early samples).
    generator_val_fraction: float = 0.05
    # Share of held-out (classifier val+test) patients whose pairs form the FID set; 1.0 = all
    # (at paper scale, about the size of the paper's FID set).
    fid_fraction: float = 1.0
    # Stat every candidate image; missing files are counted and dropped (off: trust the CSVs).
    check_images: bool = True
    # Seed of the patient splits (numpy Generator; one salt per split).
    seed: int = 0

    def __post_init__(self) -> None:
        fr = self.split_fractions
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(f"cohort.split_fractions: need 3 non-negative shares summing to 1, got {fr}")
        if fr[0] <= 0 or fr[2] <= 0:
            raise ConfigError(f"cohort.split_fractions: train and test shares must be positive, got {fr}")
        if not 0.0 <= self.generator_val_fraction < 1.0:
            raise ConfigError(f"cohort.generator_val_fraction: must be in [0, 1), got {self.generator_val_fraction}")
        if not 0.0 < self.fid_fraction <= 1.0:
            raise ConfigError(f"cohort.fid_fraction: must be in (0, 1], got {self.fid_fraction}")
        for name in ("classifier_views", "generator_views"):
            if not getattr(self, name):
                raise ConfigError(f"cohort.{name}: must name at least one ViewPosition")
        for name in ("classifier_groups", "generator_groups"):
            groups = getattr(self, name)
            if groups is not None and not all(len(g) == 3 and g[0] == "p" and g[1:].isdigit() for g in groups):
                raise ConfigError(f"cohort.{name}: group folders look like 'p10', got {groups}")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument(
        "--jpg-root", type=Path, required=True, help="MIMIC-CXR-JPG root (holds mimic-cxr-2.0.0-*.csv.gz and files/)"
    )
    parser.add_argument("--sections", type=Path, required=True, help="prompts.csv of the sections stage")
    parser.add_argument("--out", type=Path, required=True, help="output folder (results/cohort)")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        help="demo-ground-truth.csv: add the true labels as true_* columns (demo only; "
        "a path that does not exist is logged and skipped, as for real MIMIC)",
    )
    return parser


def make_cohorts(params: CohortParams, jpg_root: Path, prompts_csv: Path) -> Cohorts:
    """Read the inputs and apply the cohort rules."""
    from raygen.data import mimic
    from raygen.data.cohort import FileChecker, build_cohorts

    metadata = mimic.read_metadata(mimic.csv_path(jpg_root, "metadata"))
    labels = mimic.read_labels(mimic.csv_path(jpg_root, params.label_source))
    official = mimic.read_split(mimic.csv_path(jpg_root, "split")) if params.split_method == "official" else None
    prompts = mimic.read_prompts(prompts_csv)
    return build_cohorts(
        metadata,
        labels,
        prompts,
        classifier_views=params.classifier_views,
        classifier_groups=params.classifier_groups,
        uncertain=params.uncertain,
        split_fractions=params.split_fractions,
        generator_views=params.generator_views,
        generator_groups=params.generator_groups,
        prompt_sources=params.prompt_sources,
        generator_val_fraction=params.generator_val_fraction,
        fid_fraction=params.fid_fraction,
        seed=params.seed,
        official_split=official,
        exists=FileChecker(jpg_root) if params.check_images else None,
    )


def write_outputs(cohorts: Cohorts, out: Path, counts: dict[str, Any]) -> None:
    """Atomically write the three manifests, counts.json and counts.md."""
    from raygen.data.cohort_counts import counts_markdown

    write_csv(out / "generator.csv", cohorts.generator)
    write_csv(out / "fid.csv", cohorts.fid)
    write_csv(out / "classifier.csv", cohorts.classifier)
    write_json(out / "counts.json", counts)
    write_text(out / "counts.md", counts_markdown(counts))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.data.cohort import CohortError, add_ground_truth
    from raygen.data.cohort_counts import log_summary, summarise

    setup_logging(args.log)
    params = load_section(args.params, STAGE, CohortParams, args.profile)
    log.info("cohort params: %s", to_dict(params))
    start = time.perf_counter()
    try:
        cohorts = make_cohorts(params, args.jpg_root, args.sections)
    except CohortError as err:
        log.error("cohort: %s", err)
        return 1
    truth_missing = None
    if args.ground_truth is not None and not args.ground_truth.is_file():
        # The workflow passes the demo's truth path for every profile; real MIMIC has none.
        log.warning("no ground truth at %s (expected for real MIMIC-CXR): no true_* columns", args.ground_truth)
    elif args.ground_truth is not None:
        cohorts, truth_missing = add_ground_truth(cohorts, args.ground_truth)
    counts = summarise(cohorts, params, truth_missing)
    write_outputs(cohorts, args.out, counts)
    log_summary(counts)
    log.info("wrote %s in %.1f s", args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
