"""Stage ``evaluate``: every number the paper reports, and two it could not measure.

Command line::

    raygen evaluate --synthetic results/synthesize --classifiers results/train_classifier \\
        --generator results/cohort/generator.csv --jpg-root data/demo/mimic-cxr-jpg/2.0.0 \\
        --xrv-weights weights/torchxrayvision/densenet121-res224-chex.pth --demo-weights weights/demo \\
        --out results/evaluate

What it measures (all in ``metrics.json``, a DVC metric; figures under ``plots/``):

- **Classifier arms** (real, real+50, real+100): per-class and macro AUROC on the real test patients,
  F1 at thresholds chosen on validation, bootstrap 95% intervals over test *patients*
  (:mod:`raygen.metrics.classification`), ROC curves (``plots/roc.png``, ``roc/<arm>.csv``). The arms
  are aligned by ``dicom_id``, so every resample draws the same patients for every arm, and each
  augmented arm's difference from the real-only arm (``delta_auroc``) gets a paired interval.
- **Fidelity and diversity** of the per-report set (:mod:`raygen.metrics.fidelity`, docs/statistics.md):
  the headline FID / KID, the equal-N floor on patient-disjoint halves, SSIM to the real image, MS-SSIM
  between a report's two generations beside MS-SSIM between real images of different patients; the
  same measures of the tokenizer's reconstructions of the held-out images (the best a decoder can do).
- **Feature extractor**: ``xrv`` (``--xrv-weights``, the paper's), ``demo`` (the pinned network in
  ``--demo-weights``, checked by hash), ``classifier`` (the real-only classifier's penultimate layer),
  ``auto`` (xrv if its file exists, else classifier); named with its weight hash beside every FID.
- **Conditional fidelity** (:mod:`raygen.metrics.conditional`): a judge's AUROC on synthetic images
  against what their prompts asked for, beside the same judge on the real held-out images. The judge
  is the pinned network with ``extractor: demo``, else the real-only classifier.
- **Memorisation**: nearest generator-training image of every synthetic image in the extractor's
  feature space against the same distance for real held-out images; the share closer than the real
  baseline's 1st percentile; the closest pairs side by side (``plots/memorisation_pairs.png``).
- **A look** (``plots/real_vs_generated.png``): per finding, a real image, its reconstruction, its generations.

Unreadable images are skipped and counted (``unreadable``); a report counts only when all its images read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.io import write_csv, write_json
from raygen.models.pinned import FID_NETWORK
from raygen.runtime import configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)

STAGE = "evaluate"


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section of params.yaml (defaults = the demo profile)."""

    # FID / memorisation feature space: auto | xrv (paper) | demo (the pinned network) | classifier
    extractor: Literal["auto", "xrv", "demo", "classifier"] = "auto"
    n_boot: int = 1000  # bootstrap resamples (of test patients) for the 95% intervals
    ci_level: float = 0.95
    kid_subsets: int = 100
    kid_subset_size: int = 100  # capped at the smaller set; keep it below the set size so subsets differ
    msssim_kernel: int = 0  # 0 = by resolution (raygen.metrics.image_similarity: 5 px x 3 scales at 96 px)
    msssim_scales: int = 0
    memorisation_metric: Literal["cosine", "l2"] = "cosine"
    memorisation_percentile: float = 1.0  # the real held-out baseline's percentile
    memorisation_pairs: int = 8  # closest pairs drawn side by side
    max_train_images: int = 0  # generator-training images searched for neighbours; 0 = all
    seed: int = 0
    workers: int = 2  # image-decoding threads
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.n_boot < 10 or not 0.5 < self.ci_level < 1.0:
            raise ValueError("evaluate.n_boot must be >= 10 and ci_level in (0.5, 1)")


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, required=True, help="synthesize output folder")
    parser.add_argument(
        "--classifiers",
        type=Path,
        required=True,
        help="train_classifier output folder holding one sub-folder per arm (real, real+50, real+100)",
    )
    parser.add_argument("--generator", type=Path, required=True, help="cohort generator.csv (memorisation reference)")
    parser.add_argument("--jpg-root", type=Path, required=True, help="JPG root the manifests' paths are relative to")
    parser.add_argument(
        "--xrv-weights",
        type=Path,
        default=None,
        help="torchxrayvision densenet121-res224-chex weight file (extractor: xrv / auto)",
    )
    parser.add_argument(
        "--demo-weights",
        type=Path,
        default=None,
        help=f"the demo's pinned weights folder holding {FID_NETWORK} (extractor: demo)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.metrics.summary import finite, summary

    setup_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, EvaluateParams, args.profile)
    device = pick_device(params.device)
    configure_torch(device)
    # First: the MLflow helper starts up while the stage works.
    with tracking.start_run(STAGE, profile, params=to_dict(params), params_file=args.params) as tracker:
        started = time.perf_counter()
        (args.out / "plots").mkdir(parents=True, exist_ok=True)
        (args.out / "roc").mkdir(parents=True, exist_ok=True)
        scores = _score_classifiers(args, params)
        metrics = {"profile": profile, "classifier": scores.reports, "delta_auroc": scores.deltas}
        metrics |= _image_metrics(args, params, device)
        metrics["wall_s"] = round(time.perf_counter() - started, 2)
        headline = summary(metrics)
        write_json(args.out / "metrics.json", finite(metrics))
        write_json(args.out / "summary.json", headline)
        log.info("wrote %s in %.1f s", args.out / "metrics.json", metrics["wall_s"])
        tracker.set_tags({"raygen.extractor": metrics["extractor"]})
        tracker.log_metrics({k: v for k, v in headline.items() if isinstance(v, float)}, headline=True)
        tracker.log_artifact(args.out / "metrics.json")
        synthetic_figures = [args.synthetic / "samples_per_class.png", args.synthetic / "progressive.png"]
        for path in [*sorted((args.out / "plots").glob("*.png")), *synthetic_figures]:
            tracker.log_artifact(path, "figures")  # a missing file is skipped
    return 0


def _score_classifiers(args: Any, params: EvaluateParams) -> Any:
    """The classifier arms on the real test patients, every arm on the same rows and resamples; ROC curves."""
    import pandas as pd

    from raygen.metrics.arms import score_arms
    from raygen.metrics.classification import ROC_GRID
    from raygen.metrics.plots import plot_roc

    scores = score_arms(args.classifiers, params.n_boot, params.seed, params.ci_level)
    for arm, tpr in scores.macro_tpr.items():
        write_csv(args.out / "roc" / f"{arm}.csv", pd.DataFrame({"fpr": ROC_GRID, "tpr": tpr}))
    plot_roc(scores.curves, args.out / "plots" / "roc.png")
    return scores


def _image_metrics(args: Any, params: EvaluateParams, device: Any) -> dict[str, Any]:
    """Fidelity and diversity of the per-report set, conditional fidelity, memorisation."""
    import numpy as np

    from raygen.data.synthetic_plan import prompt_kind
    from raygen.metrics.conditional import conditional_fidelity_of_sets, load_classifier, pick_measures
    from raygen.metrics.fidelity import fidelity
    from raygen.metrics.image_sets import load_evaluation_images, save_closest_pairs, set_features
    from raygen.metrics.memorisation import memorisation
    from raygen.metrics.plots import plot_real_beside_generated

    # Held-out real images, their generations, the augmentation set and generator training images.
    images = load_evaluation_images(
        args.synthetic, args.generator, args.jpg_root, params.max_train_images, params.seed, params.workers
    )
    figure = args.out / "plots" / "real_vs_generated.png"
    plot_real_beside_generated(images.per_report, images.real, images.generated, figure, images.reconstructed)
    real_only = load_classifier(args.classifiers / "real" / "model.ckpt", device)
    extractor, judge = pick_measures(params.extractor, args.xrv_weights, args.demo_weights, real_only, device)
    feats, images = set_features(extractor, images, params.workers)
    kid = {"kid_subsets": params.kid_subsets, "kid_subset_size": params.kid_subset_size, "seed": params.seed}
    msssim = {"msssim_kernel": params.msssim_kernel or None, "msssim_scales": params.msssim_scales or None}
    fidelity_section = fidelity(images, feats, extractor.name, **kid, **msssim)
    # Conditional fidelity: the judge says whether each image shows what its prompt asked for.
    cond = conditional_fidelity_of_sets(judge, images, feats, extractor.name, device, prompt_kind(images.augmentation))
    synthetic = np.concatenate([feats["gen0"], feats["aug"]])
    mem = memorisation(
        synthetic,
        feats["real"],
        feats["train"],
        extractor.name,
        params.memorisation_metric,
        params.memorisation_percentile,
        k=params.memorisation_pairs,
    )
    save_closest_pairs(images, mem.closest, args.out / "plots" / "memorisation_pairs.png")
    return {
        "fidelity": fidelity_section,
        "conditional_fidelity": cond,
        "memorisation": asdict(mem) | {"closest": [asdict(x) for x in mem.closest]},
        "unreadable": images.unreadable,
        "counts": images.counts(),
        "extractor": extractor.name,
        "classifier_resolution": real_only.resolution,
    }


if __name__ == "__main__":
    raise SystemExit(main())
