"""FID and KID between two feature sets (the ``evaluate`` stage's image realism, the VQ-GAN's
reconstruction FID).

Every result carries the name of the extractor that produced its features
(:mod:`raygen.metrics.features`): numbers from different extractors are not comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "FIDResult",
    "MIN_FID_SAMPLES",
    "compute_fid",
    "compute_fid_or_reason",
    "frechet_distance",
    "kid",
]

MIN_FID_SAMPLES = 2  # per set: a covariance and KID's unbiased MMD need two samples


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (Heusel et al. 2017).

    ``tr sqrt(C_a C_b)`` is the sum of square roots of the eigenvalues of ``C_a C_b``. With fewer
    samples than dimensions those are, exactly, the eigenvalues of the small symmetric PSD matrix
    ``(X_a X_b^T)(X_a X_b^T)^T / ((n_a - 1)(n_b - 1))`` (X centred), so no D x D matrix square root
    is needed (small sets in high-dimensional features: much faster, and no regularisation of the
    singular product).
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


@dataclass(frozen=True)
class FIDResult:
    """FID (Heusel et al. 2017) and KID (Binkowski et al. 2018, x 1 — not x 1000) between two feature sets.

    ``extractor`` names the features (see module docstring); ``kid_std`` is the std over KID subsets.
    """

    fid: float
    kid_mean: float
    kid_std: float
    n_real: int
    n_fake: int
    extractor: str
    kid_subsets: int
    kid_subset_size: int


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1) ** 3, the KID kernel: (n, d), (m, d) -> (n, m)."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples (m, d) under the polynomial kernel."""
    m = len(x)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    off = m * (m - 1)
    return float((k_xx.sum() - np.trace(k_xx)) / off + (k_yy.sum() - np.trace(k_yy)) / off - 2.0 * k_xy.mean())


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """KID: unbiased polynomial-kernel MMD^2 averaged over ``subsets`` random subsets (drawn without
    replacement, numpy Generator seeded by ``seed``) of size min(subset_size, n_real, n_fake).

    Returns (mean, std, subset size used).
    """
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values)), m


def compute_fid(
    real_feats: np.ndarray | torch.Tensor,
    fake_feats: np.ndarray | torch.Tensor,
    extractor: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> FIDResult:
    """FID and KID between (N, F) real and (M, F) synthetic features from the extractor named ``extractor``."""
    real = np.asarray(real_feats, dtype=np.float64)
    fake = np.asarray(fake_feats, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, F) and (M, F) features, got {real.shape} and {fake.shape}")
    kid_mean, kid_std, m = kid(real, fake, kid_subsets, kid_subset_size, seed)
    return FIDResult(
        fid=frechet_distance(real, fake),
        kid_mean=kid_mean,
        kid_std=kid_std,
        n_real=len(real),
        n_fake=len(fake),
        extractor=extractor,
        kid_subsets=kid_subsets,
        kid_subset_size=m,
    )


def compute_fid_or_reason(
    real_feats: np.ndarray | torch.Tensor,
    fake_feats: np.ndarray | torch.Tensor,
    extractor: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> FIDResult | str:
    """:func:`compute_fid`, or ``"not computed: <reason>"`` when a set is too small or the numbers fail.

    For the smaller comparisons of the evaluate stage (the equal-N floor's halves), where a tiny cohort
    must give a stated gap in metrics.json rather than a crashed stage.
    """
    n_real, n_fake = len(real_feats), len(fake_feats)
    if min(n_real, n_fake) < MIN_FID_SAMPLES:
        return (
            f"not computed: {n_real} real vs {n_fake} generated image(s); FID and KID need at least "
            f"{MIN_FID_SAMPLES} in each set"
        )
    try:
        return compute_fid(real_feats, fake_feats, extractor, kid_subsets, kid_subset_size, seed)
    except (ValueError, np.linalg.LinAlgError) as err:
        log.warning("FID/KID not computed for %d vs %d images: %s", n_real, n_fake, err)
        return f"not computed: {err}"
