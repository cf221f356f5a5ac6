"""SSIM and MS-SSIM between image pairs, with settings that fit low resolutions and are reported.

SSIM (:func:`ssim`) compares a real image with the image generated from its report (evaluate) and an
original with its reconstruction (VQ-GAN). All inputs are the display convention: (B, C, H, W) floats
in [0, 1], data range 1.

MS-SSIM (Wang, Simoncelli & Bovik 2003) compares at S scales, halving the image between scales, with a
Gaussian window (standard: 11 px, sigma 1.5) and exponents ``betas`` (standard 5:
0.0448, 0.2856, 0.3001, 0.2363, 0.1333). At the coarsest scale the image must still be wider than the
window: with 5 scales and an 11-px window that needs a side >= 176 px (torchmetrics' check ``side // 16 > 10``).
Smaller images get fewer scales and a smaller window (:func:`msssim_settings`); the first S standard betas
are then renormalised to sum to 1. The settings come back with every value so reports can state them;
MS-SSIM numbers computed with different settings are not comparable.

The paper reports MS-SSIM between two independently generated sets for the same prompts (lower = more
diverse). The computation is torchmetrics' (reflect padding, ReLU on negative similarity terms so
fractional powers stay real), with the Gaussian sigma tied to the window size (1.5 * k / 11).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

__all__ = [
    "MSSSIMResult",
    "MSSSIMSettings",
    "STANDARD_BETAS",
    "ms_ssim",
    "ms_ssim_per_image",
    "msssim_settings",
    "ssim",
]

STANDARD_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003
STANDARD_KERNEL, STANDARD_SIGMA = 11, 1.5  # Gaussian window of Wang et al. 2004

# Defaults by the shorter image side: (minimum side in px, window size, scales). First match wins.
# 176 px: torchmetrics' bound for 5 scales x 11 px (side // 16 > 10);
# 112-175 px (e.g. 128): 4 scales leave a >= 14-px coarsest image for a 7-px window;
# 48-111 px (e.g. 64): 3 scales, a >= 12-px coarsest image, 5-px window.
_DEFAULTS_BY_SIDE: tuple[tuple[int, int, int], ...] = ((176, 11, 5), (112, 7, 4), (48, 5, 3))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
    data range 1) between (B, C, H, W) [0, 1] images, averaged over channels: (B,) float64.

    Computed in float32: much faster than float64 on the CPU and as accurate for a reported mean
    (docs/benchmarks.md).
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
class MSSSIMSettings:
    """Window ``kernel_size`` (odd, px), Gaussian ``sigma`` (px), number of ``scales``, their ``betas``."""

    kernel_size: int
    sigma: float
    scales: int
    betas: tuple[float, ...]


@dataclass(frozen=True)
class MSSSIMResult:
    """Mean MS-SSIM over ``n`` image pairs (``std`` over pairs) and the settings that produced it."""

    value: float
    std: float
    n: int
    kernel_size: int
    sigma: float
    scales: int
    betas: tuple[float, ...]


def msssim_settings(side: int, kernel_size: int | None = None, scales: int | None = None) -> MSSSIMSettings:
    """MS-SSIM settings for images whose shorter side is ``side`` px: explicit values win, the rest come
    from the defaults table (5 scales x 11 px at >= 176 px, 4 x 7 at >= 112, 3 x 5 at >= 48)."""
    default = next(((k, s) for min_side, k, s in _DEFAULTS_BY_SIDE if side >= min_side), None)
    if default is None and (kernel_size is None or scales is None):
        raise ValueError(f"images of {side} px are too small for MS-SSIM defaults; give kernel_size and scales")
    k = kernel_size if kernel_size is not None else default[0]
    s = scales if scales is not None else default[1]
    if k < 3 or k % 2 == 0 or not 1 <= s <= len(STANDARD_BETAS):
        raise ValueError(f"kernel_size must be odd >= 3 and scales in 1..5, got {k}, {s}")
    if side // max(1, s - 1) ** 2 <= k - 1 or side < 2**s:  # torchmetrics' validity checks
        raise ValueError(f"{s} scales with a {k}-px window need larger images than {side} px")
    betas = (
        STANDARD_BETAS if s == len(STANDARD_BETAS) else tuple(b / sum(STANDARD_BETAS[:s]) for b in STANDARD_BETAS[:s])
    )
    sigma = STANDARD_SIGMA if k == STANDARD_KERNEL else STANDARD_SIGMA * k / STANDARD_KERNEL
    # torchmetrics sizes the Gaussian window from sigma alone; make sure it is the k stated in reports.
    if int(3.5 * sigma + 0.5) * 2 + 1 != k:
        raise ValueError(f"no Gaussian sigma gives a {k}-px torchmetrics window")
    return MSSSIMSettings(kernel_size=k, sigma=sigma, scales=s, betas=betas)


def ms_ssim_per_image(x: torch.Tensor, y: torch.Tensor, settings: MSSSIMSettings, batch_size: int = 8) -> torch.Tensor:
    """MS-SSIM of each pair of (B, C, H, W) [0, 1] images: (B,) float64 in [0, 1]."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    # Chunks: torchmetrics holds ~5 float64 copies per scale of each image.
    return torch.cat(
        [
            msssim(
                a.double(),
                b.double(),
                gaussian_kernel=True,
                sigma=settings.sigma,
                kernel_size=settings.kernel_size,
                reduction="none",
                data_range=1.0,
                k1=0.01,
                k2=0.03,
                betas=settings.betas,
                normalize="relu",
            ).reshape(-1)
            for a, b in zip(x.split(batch_size), y.split(batch_size))
        ]
    )


def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, kernel_size: int | None = None, scales: int | None = None, batch_size: int = 8
) -> MSSSIMResult:
    """Mean MS-SSIM between paired (B, C, H, W) [0, 1] image sets, settings chosen by resolution unless given."""
    settings = msssim_settings(min(x.shape[-2:]), kernel_size, scales)
    values = ms_ssim_per_image(x, y, settings, batch_size)
    return MSSSIMResult(
        value=float(values.mean()),
        std=float(values.std()) if len(values) > 1 else 0.0,
        n=len(values),
        kernel_size=settings.kernel_size,
        sigma=settings.sigma,
        scales=settings.scales,
        betas=settings.betas,
    )
