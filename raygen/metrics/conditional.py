"""Classifiers as measuring instruments: conditional fidelity, and penultimate features as the FID /
memorisation feature space. The judge is the run's real-only classifier, or the demo's pinned network
(``weights/demo``), which is the same in every demo run.

Conditional fidelity is the judge's AUROC on synthetic images against the labels their
prompts asked for (the augmentation set) and, where the held-out reports carry ground truth (the demo's
``true_*`` columns), on the per-report images against the truth of their reports, beside the same
judge on the real held-out images (the ceiling).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raygen.checkpoint import load_checkpoint
from raygen.data.labels import CLASSES
from raygen.errors import UsageError
from raygen.io import sha256_file
from raygen.metrics.classification import auroc
from raygen.metrics.features import FeatureExtractor, module_extractor
from raygen.metrics.image_sets import EvaluationImages
from raygen.metrics.xrv import xrv_densenet_extractor
from raygen.models.classifier import ClassifierConfig, XrayDenseNet
from raygen.models.pinned import FID_NETWORK, verified

log = logging.getLogger(__name__)

__all__ = [
    "PENULTIMATE",
    "PINNED",
    "Judge",
    "classifier_probs",
    "conditional_fidelity",
    "conditional_fidelity_of_sets",
    "head_probabilities",
    "load_classifier",
    "load_pinned_network",
    "pick_measures",
    "to_classifier_input",
]

PENULTIMATE = "raygen-classifier-penultimate:"  # name prefix of the real-only classifier's features
PINNED = "raygen-demo-densenet121:"  # name prefix of the demo's pinned FID network's features


@dataclass(frozen=True)
class Judge:
    """A classifier of the 10 findings used as a measuring instrument: its head judges conditional
    fidelity, its penultimate features can be the FID / memorisation space. ``name`` (prefix + weight
    hash) names both, so every number says which network measured it."""

    model: XrayDenseNet
    resolution: int
    name: str

    def extractor(self, device: str | torch.device) -> FeatureExtractor:
        return module_extractor(_Penultimate(self.model, self.resolution), self.name, device=device)


def load_classifier(path: Path, device: str | torch.device, prefix: str = PENULTIMATE) -> Judge:
    """A RayGen classifier checkpoint (a stage's ``model.ckpt`` or the pinned demo network, which stores
    fp16 weights and its ``resolution`` directly) as a :class:`Judge` in eval mode."""
    state = load_checkpoint(path)
    model = XrayDenseNet(ClassifierConfig(**state["classifier"]))
    model.load_state_dict(state["model"])  # fp16 weights are cast to the fp32 parameters
    resolution = state["resolution"] if "resolution" in state else state["config"]["params"]["resolution"]
    return Judge(model.to(device).eval().requires_grad_(False), int(resolution), prefix + sha256_file(path)[:12])


def load_pinned_network(folder: Path, device: str | torch.device) -> Judge:
    """The demo's pinned DenseNet-121 (``weights/demo``), after checking its hash against SHA256SUMS."""
    return load_classifier(verified(folder, FID_NETWORK), device, PINNED)


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


def pick_measures(
    choice: str, xrv_weights: Path | None, demo_weights: Path | None, real_only: Judge, device: str | torch.device
) -> tuple[FeatureExtractor, Judge]:
    """The FID / memorisation extractor named by ``choice``, and the judge of conditional fidelity.

    ``xrv``: the torchxrayvision DenseNet-121 file ``xrv_weights`` (the paper's); ``demo``: the demo's
    pinned network in ``demo_weights``, which then also judges, so that every demo run measures with the
    same instrument; ``classifier``: the real-only classifier's penultimate features; ``auto``: xrv when
    its file exists, else the classifier (never the demo network, which has only seen demo images).
    The real-only classifier judges unless the pinned network does.
    """
    if choice == "demo":
        if demo_weights is None:
            raise UsageError("evaluate.extractor is 'demo' but --demo-weights was not given (params inputs.demo)")
        pinned = load_pinned_network(demo_weights, device)
        return pinned.extractor(device), pinned
    use_xrv = choice == "xrv" or (choice == "auto" and xrv_weights is not None and xrv_weights.is_file())
    if use_xrv:
        return xrv_densenet_extractor(path=xrv_weights, device=device), real_only  # raises naming a missing file
    if choice == "auto":
        log.info(
            "no torchxrayvision weights at %s: FID uses the real-only classifier's penultimate features", xrv_weights
        )
    return real_only.extractor(device), real_only


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


def conditional_fidelity(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """AUROC of the real-only classifier's scores against the labels the images should show."""
    return asdict(auroc(labels, probs, CLASSES)) | {"n_images": len(labels)}


def conditional_fidelity_of_sets(
    judge: Judge,
    images: EvaluationImages,
    feats: dict[str, np.ndarray],
    extractor: str,
    device: torch.device,
    prompts: str,
) -> dict[str, Any]:
    """Conditional fidelity of the augmentation set (made with ``prompts``, the kind the manifest says)
    and, where the reports carry ``true_*`` labels, of the per-report generations beside the real
    held-out images and their reconstructions (metrics.json ``conditional_fidelity``).

    When the FID features (``feats``, from the extractor named ``extractor``) are the judge's
    penultimate layer, its probabilities are its head on those features (the same numbers, one forward
    pass less).
    """

    def probs(name: str, x: torch.Tensor) -> np.ndarray:
        if extractor == judge.name:
            return head_probabilities(judge.model, feats[name], device)
        return classifier_probs(judge.model, x, judge.resolution, device)

    prompted = images.augmentation[list(CLASSES)].to_numpy(np.int64)
    cond = {"augmentation_prompts": conditional_fidelity(prompted, probs("aug", images.augmentation_images))}
    cond["augmentation_prompts"]["prompts"] = prompts
    truth = [f"true_{c}" for c in CLASSES]
    if all(c in images.per_report.columns for c in truth):
        y = images.per_report[truth].fillna(0).to_numpy(np.int64)
        cond["per_report_generated"] = conditional_fidelity(y, probs("gen0", images.generated[0]))
        cond["per_report_real"] = conditional_fidelity(y, probs("real", images.real))
        if images.reconstructed is not None:  # the tokenizer's limit on what a generation can show
            cond["per_report_reconstructed"] = conditional_fidelity(y, probs("recon", images.reconstructed))
    cond["classifier"] = judge.name
    log.info(
        "conditional fidelity: macro AUROC %.4f on %d augmentation images (%s prompts)%s",
        cond["augmentation_prompts"]["macro"],
        len(images.augmentation),
        cond["augmentation_prompts"]["prompts"],
        (
            f"; per-report {cond['per_report_generated']['macro']:.4f} generated vs "
            f"{cond['per_report_real']['macro']:.4f} real"
        )
        if "per_report_real" in cond
        else "",
    )
    return cond
