"""SSIM / MS-SSIM with resolution-dependent, reported settings."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_msssim

from raygen.metrics.image_similarity import STANDARD_BETAS, ms_ssim, ms_ssim_per_image, msssim_settings, ssim


def smooth_images(n: int, side: int, seed: int) -> torch.Tensor:
    """(n, 1, side, side) [0, 1] images with structure at several scales (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, side // 8, side // 8, generator=g)
    fine = torch.rand(n, 1, side, side, generator=g)
    x = 0.8 * torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return (x + 0.2 * fine).clamp(0, 1)


def test_default_settings_per_resolution():
    s256 = msssim_settings(256)
    assert (s256.kernel_size, s256.sigma, s256.scales, s256.betas) == (11, 1.5, 5, STANDARD_BETAS)
    s128 = msssim_settings(128)
    assert (s128.kernel_size, s128.scales) == (7, 4) and sum(s128.betas) == pytest.approx(1.0)
    assert s128.betas[0] / s128.betas[1] == pytest.approx(STANDARD_BETAS[0] / STANDARD_BETAS[1])
    assert (msssim_settings(64).kernel_size, msssim_settings(64).scales) == (5, 3)
    with pytest.raises(ValueError):
        msssim_settings(128, kernel_size=11, scales=5)  # the standard setting does not fit 128 px
    with pytest.raises(ValueError):
        msssim_settings(16)


def test_identity_noise_and_symmetry_at_128():
    x = smooth_images(3, 128, 0)
    g = torch.Generator().manual_seed(1)
    same = ms_ssim(x, x)
    assert same.value == pytest.approx(1.0, abs=1e-9) and (same.kernel_size, same.scales, same.n) == (7, 4, 3)
    values = [ms_ssim(x, (x + sd * torch.randn(x.shape, generator=g)).clamp(0, 1)).value for sd in (0.02, 0.1, 0.3)]
    assert 1.0 > values[0] > values[1] > values[2]
    y = smooth_images(3, 128, 2)
    settings = msssim_settings(128)
    torch.testing.assert_close(ms_ssim_per_image(x, y, settings), ms_ssim_per_image(y, x, settings))


def test_standard_settings_match_torchmetrics_default_at_256():
    x, y = smooth_images(2, 256, 3), smooth_images(2, 256, 4)
    ours = ms_ssim_per_image(x, y, msssim_settings(256))
    reference = tm_msssim(x.double(), y.double(), data_range=1.0, reduction="none")  # Wang et al. defaults
    torch.testing.assert_close(ours, reference.reshape(-1))


def test_ssim_is_the_reconstruction_ssim():
    x = smooth_images(2, 64, 5)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
