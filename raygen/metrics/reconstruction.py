"""Reconstruction quality of a VQ-GAN: SSIM, PSNR, codebook usage and a reconstruction FID.

All image inputs are the display convention: (B, C, H, W) floats in [0, 1].

FID needs a feature extractor, and every FID must name it (numbers from different extractors are
not comparable). This machine is offline, so nothing is downloaded: :func:`densenet121_extractor`
reads a *local* torchvision DenseNet-121 state dict (e.g. torchvision's ImageNet
``densenet121-a639ec97.pth``), and the name it reports carries the file's name and SHA-256 prefix.
Without such a file the reconstruction FID is reported as ``null`` with the reason; it is never
computed on random-weight features, which would be a number without meaning. The evaluation
stage's FID (paper's torchxrayvision features) is separate from this one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raygen.io import sha256_file

log = logging.getLogger(__name__)

# torchvision's ImageNet DenseNet-121 weights, looked for in the torch hub cache when no file is given.
TORCHVISION_DENSENET121 = "densenet121-a639ec97.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between (B, C, H, W) [0, 1] images, data range 1: (B,) float64.

    Identical images give +inf (callers average finite values or report inf honestly).
    """
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
    data range 1) between (B, C, H, W) [0, 1] images, averaged over channels: (B,) float64.

    Computed in float32: 13x faster than float64 on the CPU (170 pairs at 128 px: 0.65 s vs 8.8 s)
    and within 2e-7 of it.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    # Chunks of 8: torchmetrics' implementation holds several copies of each image per window statistic.
    return torch.cat(
        [
            structural_similarity_index_measure(
                a.float(),
                b.float(),
                data_range=1.0,
                reduction="none",
                gaussian_kernel=True,
                sigma=1.5,
                kernel_size=11,
                k1=0.01,
                k2=0.03,
            )
            .reshape(-1)
            .double()
            for a, b in zip(x.split(8), y.split(8))
        ]
    )


@dataclass(frozen=True)
class CodebookUsage:
    """``perplexity``: exp(entropy) of the code histogram (1 .. n_embed; n_embed = uniform use);
    ``used_fraction``: codes used at least once / n_embed; ``used``: that count."""

    perplexity: float
    used_fraction: float
    used: int


def codebook_usage(ids: torch.Tensor, n_embed: int) -> CodebookUsage:
    """Usage statistics of token ids (any shape, int) over a codebook of ``n_embed`` entries."""
    counts = torch.bincount(ids.reshape(-1).long(), minlength=n_embed).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return CodebookUsage(perplexity=math.exp(entropy), used_fraction=used / n_embed, used=used)


# --------------------------------------------------------------------------------------------
# FID


@dataclass(frozen=True)
class FeatureExtractor:
    """A named, deterministic image -> feature map: ``fn`` takes (B, C, H, W) [0, 1], returns (B, D)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def find_densenet121_weights(path: str | Path | None = None) -> Path | None:
    """The given file, else torchvision's ImageNet DenseNet-121 in the torch hub cache, else None."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"FID weights not found: {path} (a torchvision DenseNet-121 state dict, e.g. "
                f"{TORCHVISION_DENSENET121} from torchvision's DenseNet121_Weights.IMAGENET1K_V1)"
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_DENSENET121
    return cached if cached.is_file() else None


def densenet121_extractor(weights: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """1024-d global-average-pooled DenseNet-121 features (torchvision architecture) from a local
    state dict. Input grey/RGB [0, 1] -> 3 channels, bilinear resize to 224x224, ImageNet
    normalisation. Name: ``torchvision-densenet121:<file>:<sha256[:12]>``."""
    import torchvision

    weights = Path(weights)
    digest = sha256_file(weights)[:12]
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = _rename_legacy_densenet_keys(state)
    net = torchvision.models.densenet121(weights=None)
    net.load_state_dict(state, strict=True)
    features = net.features.eval().requires_grad_(False).to(device)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def fn(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        h = F.relu(features((x - mean) / std))  # (B, 1024, 7, 7)
        return F.adaptive_avg_pool2d(h, 1).flatten(1).double().cpu()  # (B, 1024)

    return FeatureExtractor(name=f"torchvision-densenet121:{weights.name}:{digest}", fn=fn)


def _rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's released DenseNet files use old names (``norm.1``); map them to ``norm1``."""
    import re

    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        match = pattern.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (Heusel et al. 2017).

    ``tr sqrt(C_a C_b)`` is the sum of square roots of the eigenvalues of ``C_a C_b``. With fewer
    samples than dimensions those are, exactly, the eigenvalues of the small symmetric PSD matrix
    ``(X_a X_b^T)(X_a X_b^T)^T / ((n_a - 1)(n_b - 1))`` (X centred), so no D x D matrix square root
    is needed (170 demo images in 1024-d features: milliseconds instead of seconds, and no
    regularisation of the singular product).
    """
    from scipy import linalg

    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    mean_term = float(((mu_a - mu_b) ** 2).sum())
    if min(len(a), len(b)) < a.shape[1]:
        xa, xb = a - mu_a, b - mu_b
        cross = xa @ xb.T  # (n_a, n_b)
        small = (
            cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
            if len(a) <= len(b)
            else cross.T @ cross / ((len(a) - 1) * (len(b) - 1))
        )
        tr_covmean = float(np.sqrt(np.clip(linalg.eigvalsh(small), 0.0, None)).sum())
        tr_a = float((xa * xa).sum() / (len(a) - 1))
        tr_b = float((xb * xb).sum() / (len(b) - 1))
        return mean_term + tr_a + tr_b - 2.0 * tr_covmean
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # numerically singular product: regularise as pytorch-fid does
        offset = np.eye(len(mu_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(mean_term + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
