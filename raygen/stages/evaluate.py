"""Stage ``evaluate``: every number the paper reports, and two it could not measure.

Command line::

    raygen evaluate --synthetic results/synthesize --classifiers results/train_classifier \\
        --generator results/cohort/generator.csv --jpg-root data/demo/mimic-cxr-jpg/2.0.0 \\
        --xrv-weights weights/torchxrayvision/densenet121-res224-chex.pth --out results/evaluate

What it measures (all in ``metrics.json``, a DVC metric; figures under ``plots/``):

- **Classifier arms** (real, real+50, real+100): per-class and macro AUROC on the real test patients
  (classes without positives left out and listed), F1 at thresholds chosen on validation, percentile
  bootstrap 95% intervals that resample test *patients* (``subject_id``) with all their images
  (:mod:`raygen.metrics.classification`); ROC curves per class (``plots/roc.png``) and each arm's
  macro-average ROC (``roc/<arm>.csv``, a DVC plot). The arms' test predictions are aligned by
  ``dicom_id`` (differing test sets are an error), so every resample draws the same patients for every
  arm, and each augmented arm's macro AUROC minus the real-only arm's (``delta_auroc``) gets a paired
  interval from those shared resamples.
- **Fidelity and diversity** of the per-report set: the headline FID and KID between every held-out
  real image (N) and the first generation of its own report (N); the equal-N floor on two
  patient-disjoint halves A and B of the held-out set (same size n): FID(real A, generated for B's
  reports) beside FID(real A, real B), the value a perfect generator would reach at that n (a half too
  small to score is recorded as "not computed: <reason>"); SSIM between each real image and the image
  generated from its report, and MS-SSIM between the two generations of each report (kernel size and
  scales stated).
- **Feature extractor**: ``extractor: xrv`` needs the torchxrayvision DenseNet-121 file
  (``--xrv-weights``, the paper's choice); ``classifier`` uses the real-only classifier's 1024-d
  penultimate features; ``auto`` takes xrv when the file exists, else the classifier. The name and
  weight hash of the extractor are written beside every FID.
- **Conditional fidelity**: the real-only classifier's AUROC on synthetic images against the labels
  their prompts asked for (augmentation set), and, where the held-out reports carry ground truth (the
  demo's ``true_*`` columns), on the per-report images against the truth of their reports, beside the
  same classifier on the real held-out images (the ceiling).
- **Memorisation**: nearest generator-training image of every synthetic image in the extractor's
  feature space against the same distance for real held-out images; the share closer than the real
  baseline's 1st percentile; the closest pairs side by side (``plots/memorisation_pairs.png``).

An unreadable or missing image is skipped and counted (``metrics.json`` -> ``unreadable``): a
per-report pair counts only when the real image and every generation of it can be read.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_curve
from torch import nn
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import load_checkpoint
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.data.classifier_data import ARMS
from raygen.data.images import image_side, load_grey, preprocess, signed_to_unit
from raygen.data.labels import CLASSES
from raygen.io import atomic_path, sha256_file, write_csv, write_json
from raygen.metrics.classification import auroc, evaluate_classifier, paired_delta
from raygen.metrics.fid import (
    FeatureExtractor,
    compute_fid_or_reason,
    module_extractor,
    xrv_densenet_extractor,
)
from raygen.metrics.image_similarity import ms_ssim
from raygen.metrics.memorisation import memorisation, save_pairs_grid
from raygen.metrics.reconstruction import ssim
from raygen.metrics.resampling import disjoint_halves
from raygen.models.classifier import ClassifierConfig, XrayDenseNet
from raygen.runtime import configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)

STAGE = "evaluate"
PENULTIMATE = "raygen-classifier-penultimate:"  # name prefix of the real-only classifier's features
ROC_GRID = np.linspace(0.0, 1.0, 101)  # false-positive rates of the macro-average ROC curves
REFERENCE_ARM = "real"  # the arm every augmented arm is compared with


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section of params.yaml (defaults = the demo profile)."""

    extractor: Literal["auto", "xrv", "classifier"] = "auto"  # FID / memorisation feature space
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


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def load_images_checked(paths: list[Path], resolution: int, workers: int) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 1, R, R) [0, 1] float32 for every path and an (N,) bool mask of the files that could be read;
    unreadable or missing files are logged, counted by the caller and left as zeros. Grey files are
    resized (shortest side) and centre-cropped like the tokenizer's input (synthetic PNGs already at R
    pass through unchanged)."""

    def one(path: Path) -> torch.Tensor | None:
        try:
            return signed_to_unit(preprocess(load_grey(path), resolution, 1))
        except (OSError, ValueError, SyntaxError) as err:  # PIL: missing, truncated or not an image
            log.warning("unreadable image %s (%s): skipped", path, err)
            return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = list(pool.map(one, paths))
    ok = np.array([x is not None for x in loaded], dtype=bool)
    blank = torch.zeros(1, resolution, resolution)
    return (
        torch.stack([x if x is not None else blank for x in loaded])
        if loaded
        else torch.zeros(0, 1, resolution, resolution)
    ), ok


def load_images(paths: list[Path], resolution: int, workers: int) -> torch.Tensor:
    """The readable images of ``paths`` (see :func:`load_images_checked`)."""
    images, ok = load_images_checked(paths, resolution, workers)
    return images[torch.from_numpy(ok)]


def streamed_features(
    extractor: FeatureExtractor, paths: list[Path], resolution: int, workers: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(M, F) features of the readable image files and the (N,) mask of which were readable, loaded
    ``chunk`` at a time: the generator's training set at the paper profile (tens of thousands of
    512-px images) never sits in memory whole."""
    parts, masks = [], []
    for i in tqdm(range(0, len(paths), chunk), desc="reference features", unit="chunk", leave=False):
        images, ok = load_images_checked(paths[i : i + chunk], resolution, workers)
        masks.append(ok)
        if ok.any():
            parts.append(np.asarray(extractor(images[torch.from_numpy(ok)])))
    mask = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    return (np.concatenate(parts) if parts else np.zeros((0, 0))), mask


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


def load_classifier(path: Path, device: torch.device) -> tuple[XrayDenseNet, int, str]:
    """The real-only classifier (eval mode), its input resolution and its weight hash."""
    state = load_checkpoint(path)
    model = XrayDenseNet(ClassifierConfig(**state["classifier"]))
    model.load_state_dict(state["model"])
    return (
        model.to(device).eval().requires_grad_(False),
        int(state["config"]["params"]["resolution"]),
        sha256_file(path)[:12],
    )


def to_classifier_input(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """[0, 1] (B, 1, S, S) images -> the classifier's [-1, 1] input at its resolution (bilinear, antialiased)."""
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x * 2 - 1


class _Penultimate(nn.Module):
    """The classifier's 1024-d penultimate features of [0, 1] images resized to its resolution."""

    def __init__(self, model: XrayDenseNet, resolution: int) -> None:
        super().__init__()
        self.model, self.resolution = model, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.penultimate(to_classifier_input(x, self.resolution))


def pick_extractor(
    p: EvaluateParams, xrv_weights: Path | None, model: XrayDenseNet, resolution: int, sha: str, device: torch.device
) -> FeatureExtractor:
    """The FID / memorisation feature extractor named by ``p.extractor`` (see the module docstring)."""
    use_xrv = p.extractor == "xrv" or (p.extractor == "auto" and xrv_weights is not None and xrv_weights.is_file())
    if use_xrv:
        return xrv_densenet_extractor(path=xrv_weights, device=device)  # raises naming the file when missing
    if p.extractor == "auto":
        log.info(
            "no torchxrayvision weights at %s: FID uses the real-only classifier's penultimate features", xrv_weights
        )
    return module_extractor(_Penultimate(model, resolution), f"{PENULTIMATE}{sha}", device=device)


@torch.no_grad()
def head_probabilities(model: XrayDenseNet, features: np.ndarray, device: torch.device) -> np.ndarray:
    """(N, K) sigmoid probabilities from (N, 1024) penultimate features (float64 copies of the float32
    ones, so the cast back is exact): the classifier's head without running its backbone again."""
    head = model.classifier(torch.from_numpy(np.asarray(features)).float().to(device))
    return torch.sigmoid(head).cpu().double().numpy()


@torch.no_grad()
def classifier_probs(
    model: XrayDenseNet, images: torch.Tensor, resolution: int, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """(N, K) sigmoid probabilities of [0, 1] images (resized to the classifier's resolution)."""
    out = []
    for chunk in images.split(batch_size):
        out.append(torch.sigmoid(model(to_classifier_input(chunk.to(device), resolution)).float()).cpu())
    return torch.cat(out).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def macro_roc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mean TPR over the classes with both labels at :data:`ROC_GRID` false-positive rates."""
    curves = [
        np.interp(ROC_GRID, *roc_curve(y[:, k], s[:, k], drop_intermediate=False)[:2])
        for k in range(y.shape[1])
        if 0 < y[:, k].sum() < len(y)
    ]
    return np.mean(curves, axis=0) if curves else np.full_like(ROC_GRID, np.nan)


def report_dict(report: Any) -> dict[str, Any]:
    """A ClassificationReport as plain JSON values (tuples to lists)."""
    return {
        "auroc": asdict(report.auroc),
        "auroc_ci": asdict(report.auroc_ci),
        "f1": asdict(report.f1),
        "f1_ci": asdict(report.f1_ci),
        "thresholds": asdict(report.thresholds),
        "n_test": report.n_test,
    }


def plot_roc(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]], path: Path) -> None:
    """One panel per class, one line per arm, AUROC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(17, 7), squeeze=False)
    for ax, name in zip(axes.flat, CLASSES):
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        for arm, per_class in curves.items():
            if name in per_class:
                fpr, tpr, value = per_class[name]
                ax.plot(fpr, tpr, lw=1.2, label=f"{arm} {value:.3f}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=7)
        ax.set_ylabel("true-positive rate", fontsize=7)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def score_arms(classifiers: Path, p: EvaluateParams, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every arm's report (patient-clustered intervals) and each augmented arm's paired AUROC delta.

    Writes ``roc/<arm>.csv`` and ``plots/roc.png``. All arms are scored on the reference arm's row
    order with the same seed, so resample b draws the same patients for every arm.
    """
    test = align_test_predictions({arm: read_prediction_frame(classifiers / arm, "test") for arm in ARMS})
    groups = test[REFERENCE_ARM]["subject_id"].to_numpy()  # (N,) cluster ids
    boot = {"n_boot": p.n_boot, "seed": p.seed, "level": p.ci_level, "groups": groups}
    arms: dict[str, Any] = {}
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]] = {}
    for arm in ARMS:
        y_val, s_val = read_predictions(classifiers / arm, "val")
        y_test, s_test = labels_and_scores(test[arm])
        report = evaluate_classifier(y_val, s_val, y_test, s_test, CLASSES, **boot)
        arms[arm] = report_dict(report) | training_facts(classifiers / arm)
        curves[arm] = {
            c: (*roc_curve(y_test[:, k], s_test[:, k])[:2], report.auroc.per_class[c])
            for k, c in enumerate(CLASSES)
            if c in report.auroc.per_class
        }
        write_csv(out / "roc" / f"{arm}.csv", pd.DataFrame({"fpr": ROC_GRID, "tpr": macro_roc(y_test, s_test)}))
        log.info(
            "arm %s: macro AUROC %.4f [%.4f, %.4f], macro F1 %.4f (%d test images, %d patients)",
            arm,
            report.auroc.macro,
            *report.auroc_ci.macro,
            report.f1.macro,
            report.n_test,
            report.auroc_ci.n_clusters,
        )
    plot_roc(curves, out / "plots" / "roc.png")
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
    return arms, deltas


def training_facts(folder: Path) -> dict[str, Any]:
    """Counts and the training seed from an arm's train_classifier ``metrics.json`` (seed None if unrecorded)."""
    trained = json.loads((folder / "metrics.json").read_text())
    return {
        "train_images": trained["train_images"],
        "synthetic_train_images": trained["synthetic_train_images"],
        "best_epoch": trained["best_epoch"],
        "optimizer_steps": trained.get("optimizer_steps"),
        "train_seeds": [trained["seed"]] if "seed" in trained else None,
    }


FID_DEFINITIONS = {
    "fid": "every held-out real image (N) vs the first generation from its own report (N); the headline, "
    "comparable across runs of this repository at the same N, not with the floor below",
    "fid_equal_n": "held-out patients split into disjoint halves A and B of n images each: real A vs images "
    "generated from B's reports, beside real A vs real B (the floor: what a perfect generator "
    "would score at this n)",
}


def _split_column(per_report: pd.DataFrame) -> str:
    """The finest id that keeps a patient's images together: subject_id, else study_id, else dicom_id."""
    return next(c for c in ("subject_id", "study_id", "dicom_id") if c in per_report.columns)


def equal_n_floor(
    real: np.ndarray, generated: np.ndarray, per_report: pd.DataFrame, extractor: str, p: EvaluateParams
) -> dict[str, Any]:
    """FID(real A, generated for B) and FID(real A, real B) on patient-disjoint halves of equal size n.

    real, generated: (N, F) features, row i = per_report row i (real image, its report's generation).
    A half too small to score gives ``"not computed: <reason>"`` in place of the FID result.
    """
    column = _split_column(per_report)
    groups = per_report[column].to_numpy()
    a, b = disjoint_halves(groups, p.seed)
    result: dict[str, Any] = {
        "split_by": column,
        "n_per_half": len(a),
        "groups_a": len(np.unique(groups[a])),
        "groups_b": len(np.unique(groups[b])),
    }
    if len(a) == 0:
        reason = (
            f"not computed: the held-out set has {len(np.unique(groups))} {column} value(s); two disjoint "
            "halves need at least 2"
        )
        return result | {"real_a_vs_generated_b": reason, "real_a_vs_real_b": reason}
    kid = (p.kid_subsets, p.kid_subset_size, p.seed)
    for key, other in (("real_a_vs_generated_b", generated), ("real_a_vs_real_b", real)):
        value = compute_fid_or_reason(real[a], other[b], extractor, *kid)
        result[key] = value if isinstance(value, str) else asdict(value)
    return result


def _fid_text(value: Any) -> str:
    return f"{value['fid']:.2f}" if isinstance(value, dict) else str(value)


def conditional_fidelity(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """AUROC of the real-only classifier's scores against the labels the images should show."""
    return asdict(auroc(labels, probs, CLASSES)) | {"n_images": len(labels)}


# ---------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------


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
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    profile, p = load_stage_params(args.params, STAGE, EvaluateParams, args.profile)
    device = pick_device(p.device)
    configure_torch(device)
    with tracking.start_run(STAGE, profile, params=to_dict(p)) as tracker:  # first: MLflow starts meanwhile
        return _evaluate(args, p, profile, device, tracker)


def _evaluate(args: Any, p: EvaluateParams, profile: str, device: torch.device, tracker: tracking.Tracker) -> int:
    started = time.perf_counter()
    out = args.out
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "roc").mkdir(parents=True, exist_ok=True)

    # 1. The classifier arms on the real test patients, every arm on the same rows and resamples.
    arms, deltas = score_arms(args.classifiers, p, out)

    # 2. Images: held-out real, their two generations, the augmentation set, generator training images.
    per_report = pd.read_csv(args.synthetic / "per_report.csv", dtype={"dicom_id": str})
    aug = pd.read_csv(args.synthetic / "aug_100.csv")
    generator = pd.read_csv(args.generator, dtype={"dicom_id": str})
    train = generator[generator["split"] == "train"]
    if 0 < p.max_train_images < len(train):
        train = train.sample(p.max_train_images, random_state=p.seed)
    side = image_side(args.synthetic / per_report["path_0"].iloc[0])
    # Pairs (real, its generations) count only when every member could be read; unreadable files are counted.
    real, ok = load_images_checked([args.jpg_root / x for x in per_report["real_path"]], side, p.workers)
    unreadable = {"real_heldout": int((~ok).sum())}
    gen = []
    for k in range(_n_seeds(per_report)):
        images, ok_k = load_images_checked([args.synthetic / x for x in per_report[f"path_{k}"]], side, p.workers)
        gen.append(images)
        ok &= ok_k
    unreadable["per_report_pairs_dropped"] = int((~ok).sum())
    keep = torch.from_numpy(ok)
    per_report, real, gen = per_report[ok].reset_index(drop=True), real[keep], [g[keep] for g in gen]
    aug_images, ok = load_images_checked([args.synthetic / x for x in aug["path"]], side, p.workers)
    unreadable["augmentation"] = int((~ok).sum())
    aug, aug_images = aug[ok].reset_index(drop=True), aug_images[torch.from_numpy(ok)]
    if len(real) < 2 or len(aug) < 2:
        raise SystemExit(
            f"too few readable images to evaluate ({len(real)} per-report pairs, {len(aug)} "
            f"augmentation images; unreadable: {unreadable})"
        )
    train_paths = [args.jpg_root / x for x in train["path"]]
    log.info(
        "images at %d px: %d real held-out, %d x %d per-report, %d augmentation, %d generator-training",
        side,
        len(real),
        len(gen),
        len(gen[0]),
        len(aug_images),
        len(train_paths),
    )

    model, resolution, sha = load_classifier(args.classifiers / "real" / "model.ckpt", device)
    extractor = pick_extractor(p, args.xrv_weights, model, resolution, sha, device)
    feats = {name: np.asarray(extractor(x)) for name, x in (("real", real), ("gen0", gen[0]), ("aug", aug_images))}
    feats["train"], ok = streamed_features(extractor, train_paths, side, p.workers)
    unreadable["generator_train"] = int((~ok).sum())
    train_paths = [path for path, good in zip(train_paths, ok) if good]
    if any(unreadable.values()):
        log.warning("unreadable images skipped: %s", unreadable)

    # A set too small for FID/KID gives the reason in place of the numbers, never a crash.
    fid = compute_fid_or_reason(feats["real"], feats["gen0"], extractor.name, p.kid_subsets, p.kid_subset_size, p.seed)
    fidelity = {
        "fid": fid if isinstance(fid, str) else asdict(fid),
        "n_real": len(feats["real"]),
        "n_generated": len(feats["gen0"]),
        "fid_equal_n": equal_n_floor(feats["real"], feats["gen0"], per_report, extractor.name, p),
        "definitions": FID_DEFINITIONS,
        "ssim_real_vs_generated": _mean_std(ssim(real, gen[0])),
        "resolution": side,
    }
    if len(gen) > 1:
        fidelity["ms_ssim_between_seeds"] = asdict(
            ms_ssim(gen[0], gen[1], p.msssim_kernel or None, p.msssim_scales or None)
        )
    floor = fidelity["fid_equal_n"]
    log.info(
        "FID %s (%d vs %d), KID %s; equal-N (n = %d per half): generated %s vs real floor %s; SSIM %.3f%s [%s]",
        _fid_text(fidelity["fid"]),
        fidelity["n_real"],
        fidelity["n_generated"],
        f"{fid.kid_mean:.4f}" if not isinstance(fid, str) else "-",
        floor["n_per_half"],
        _fid_text(floor["real_a_vs_generated_b"]),
        _fid_text(floor["real_a_vs_real_b"]),
        fidelity["ssim_real_vs_generated"]["mean"],
        f", MS-SSIM {fidelity['ms_ssim_between_seeds']['value']:.3f}" if len(gen) > 1 else "",
        extractor.name,
    )

    # 3. Conditional fidelity with the real-only classifier. When the FID features are its penultimate
    # layer, its probabilities are its head on those features (the same numbers, one forward pass less).
    def probs(name: str, images: torch.Tensor) -> np.ndarray:
        if extractor.name.startswith(PENULTIMATE):
            return head_probabilities(model, feats[name], device)
        return classifier_probs(model, images, resolution, device)

    cond = {
        "augmentation_prompts": conditional_fidelity(aug[list(CLASSES)].to_numpy(np.int64), probs("aug", aug_images))
    }
    truth = [f"true_{c}" for c in CLASSES]
    if all(c in per_report.columns for c in truth):
        y = per_report[truth].fillna(0).to_numpy(np.int64)
        cond["per_report_generated"] = conditional_fidelity(y, probs("gen0", gen[0]))
        cond["per_report_real"] = conditional_fidelity(y, probs("real", real))
    cond["classifier"] = f"real-only DenseNet-121:{sha}"
    log.info(
        "conditional fidelity: macro AUROC %.4f on %d augmentation images%s",
        cond["augmentation_prompts"]["macro"],
        len(aug),
        (
            f"; per-report {cond['per_report_generated']['macro']:.4f} generated vs "
            f"{cond['per_report_real']['macro']:.4f} real"
        )
        if "per_report_real" in cond
        else "",
    )

    # 4. Memorisation against the generator's training images.
    synthetic = np.concatenate([feats["gen0"], feats["aug"]])
    mem = memorisation(
        synthetic,
        feats["real"],
        feats["train"],
        extractor.name,
        p.memorisation_metric,
        p.memorisation_percentile,
        k=p.memorisation_pairs,
    )
    syn_images = torch.cat([gen[0], aug_images])
    save_pairs_grid(
        mem.closest,
        lambda i: syn_images[i],
        lambda i: load_images([train_paths[i]], side, 1)[0],
        out / "plots" / "memorisation_pairs.png",
    )

    metrics = {
        "profile": profile,
        "classifier": arms,
        "delta_auroc": deltas,
        "fidelity": fidelity,
        "conditional_fidelity": cond,
        "memorisation": asdict(mem) | {"closest": [asdict(x) for x in mem.closest]},
        "unreadable": unreadable,
        "counts": {
            "real_heldout": len(real),
            "per_report_seeds": len(gen),
            "augmentation": len(aug),
            "generator_train": len(train_paths),
        },
        "extractor": extractor.name,
        "classifier_resolution": resolution,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    headline = summary(metrics)
    write_json(out / "metrics.json", _finite(metrics))
    write_json(out / "summary.json", headline)
    log.info("wrote %s in %.1f s", out / "metrics.json", metrics["wall_s"])
    tracker.set_tags({"raygen.extractor": extractor.name})
    tracker.log_metrics({k: v for k, v in headline.items() if isinstance(v, float)})
    for path in (
        out / "plots" / "roc.png",
        out / "plots" / "memorisation_pairs.png",
        out / "metrics.json",
        args.synthetic / "samples_per_class.png",
        args.synthetic / "progressive.png",
    ):
        if path.is_file():
            tracker.log_artifact(path, "figures" if path.suffix == ".png" else None)
    return 0


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, flat (``dvc metrics show`` / ``dvc exp show`` columns)."""
    out: dict[str, Any] = {}
    for arm, r in metrics["classifier"].items():
        out[f"{arm}/macro_auroc"] = r["auroc"]["macro"]
        out[f"{arm}/macro_auroc_low"], out[f"{arm}/macro_auroc_high"] = r["auroc_ci"]["macro"]
        out[f"{arm}/macro_f1"] = r["f1"]["macro"]
    for arm, d in metrics.get("delta_auroc", {}).items():
        out[f"delta_auroc/{arm}"] = d["delta"]
        out[f"delta_auroc/{arm}_low"], out[f"delta_auroc/{arm}_high"] = d["interval"]
    fid = metrics["fidelity"]
    headline = fid["fid"] if isinstance(fid["fid"], dict) else {}
    out["fid"], out["kid"] = headline.get("fid"), headline.get("kid_mean")
    for key, name in (("real_a_vs_generated_b", "generated"), ("real_a_vs_real_b", "real_floor")):
        value = fid["fid_equal_n"][key]
        out[f"fid_equal_n/{name}"] = value["fid"] if isinstance(value, dict) else None
    out["ssim"] = fid["ssim_real_vs_generated"]["mean"]
    if "ms_ssim_between_seeds" in fid:
        out["ms_ssim"] = fid["ms_ssim_between_seeds"]["value"]
    cond = metrics["conditional_fidelity"]
    out["conditional_fidelity/augmentation"] = cond["augmentation_prompts"]["macro"]
    if "per_report_generated" in cond:
        out["conditional_fidelity/per_report"] = cond["per_report_generated"]["macro"]
        out["conditional_fidelity/per_report_real"] = cond["per_report_real"]["macro"]
    out["memorisation/share_below"] = metrics["memorisation"]["share_below"]
    out["extractor"] = metrics["extractor"]
    return _finite({k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in out.items()})


def _finite(obj: Any) -> Any:
    """NaN / inf -> None (JSON has neither; DVC and MLflow choke on them)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _mean_std(values: torch.Tensor) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else 0.0, "n": len(values)}


def _n_seeds(per_report: pd.DataFrame) -> int:
    return sum(1 for c in per_report.columns if c.startswith("path_"))


if __name__ == "__main__":
    raise SystemExit(main())
