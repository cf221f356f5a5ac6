"""Reconstruction quality of a VQ-GAN: PSNR and codebook usage.

All image inputs are the display convention: (B, C, H, W) floats in [0, 1]. SSIM lives in
:mod:`raygen.metrics.image_similarity`, the reconstruction FID's extractor in
:mod:`raygen.metrics.features` and the Frechet distance in :mod:`raygen.metrics.fid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between (B, C, H, W) [0, 1] images, data range 1: (B,) float64.

    Identical images give +inf (callers average finite values or report inf honestly).
    """
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


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
