"""Memorisation check: are synthetic images closer to generator-training images than real images are?

For each synthetic image and each real held-out image (patients in no generator split, e.g. the FID set),
find the nearest generator-TRAINING image in a feature space (the FID extractor's, named in the result).
Real held-out images give the distance scale of "a different radiograph of a similar chest"; the
threshold is their ``percentile``-th percentile (default 1st), and the share of synthetic images below it
is the memorisation rate (about ``percentile`` % is expected by chance; much more suggests copies).
The k closest synthetic/train pairs are kept for a side-by-side PNG a person can inspect.

Distance: cosine distance ``1 - cos(a, b)`` in [0, 2] by default (insensitive to the overall feature
scale, which differs between extractors), or Euclidean ``"l2"``. Computed in chunks of queries so
10k x 10k fits in a few hundred MB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raygen.data.images import save_grid

log = logging.getLogger(__name__)

__all__ = ["MemorisationResult", "Pair", "memorisation", "nearest_neighbours", "save_pairs_grid"]

METRICS = ("cosine", "l2")


@dataclass(frozen=True)
class Pair:
    """One synthetic image and its nearest training image, with their distance."""

    synthetic: int
    train: int
    distance: float


@dataclass(frozen=True)
class MemorisationResult:
    """``share_below``: fraction of synthetic images whose nearest-train distance is strictly below
    ``threshold`` (the ``percentile``-th percentile of real held-out nearest-train distances);
    ``closest``: the k synthetic images nearest to any training image, ascending distance."""

    metric: str
    extractor: str
    percentile: float
    threshold: float
    share_below: float
    n_below: int
    n_synthetic: int
    n_heldout: int
    n_train: int
    closest: tuple[Pair, ...]


def nearest_neighbours(
    query: np.ndarray, reference: np.ndarray, metric: str = "cosine", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``reference`` row for every ``query`` row: (M, F), (N, F) -> distances (M,) float64, indices (M,) int64.

    Works through ``chunk`` queries at a time (memory ~ chunk x N x 8 bytes).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    q = torch.as_tensor(np.asarray(query, dtype=np.float64))
    r = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1] or len(r) == 0:
        raise ValueError(f"expected (M, F) and (N, F) features, got {tuple(q.shape)} and {tuple(r.shape)}")
    if metric == "cosine":
        q, r = F.normalize(q, dim=1), F.normalize(r, dim=1)
    r_sq = (r * r).sum(1)  # (N,)
    distances, indices = [], []
    for block in q.split(chunk):
        if metric == "cosine":
            d = 1.0 - block @ r.T  # (c, N)
        else:
            d = ((block * block).sum(1, keepdim=True) + r_sq[None] - 2.0 * block @ r.T).clamp_min(0.0).sqrt()
        best = d.min(1)
        if metric == "l2":  # the expansion above cancels badly near 0 (an exact copy): recompute the winners
            distances.append((block - r[best.indices]).norm(dim=1))
        else:
            distances.append(best.values.clamp_min(0.0))
        indices.append(best.indices)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def memorisation(
    synthetic: np.ndarray,
    heldout: np.ndarray,
    train: np.ndarray,
    extractor: str,
    metric: str = "cosine",
    percentile: float = 1.0,
    k: int = 16,
    chunk: int = 1024,
) -> MemorisationResult:
    """Memorisation rate of (M, F) synthetic features against (N, F) generator-training features, with the
    threshold set by (H, F) real held-out features; ``extractor`` names the feature space."""
    syn_d, syn_i = nearest_neighbours(synthetic, train, metric, chunk)
    held_d, _ = nearest_neighbours(heldout, train, metric, chunk)
    threshold = float(np.percentile(held_d, percentile))
    below = syn_d < threshold
    order = np.argsort(syn_d, kind="stable")[:k]
    result = MemorisationResult(
        metric=metric,
        extractor=extractor,
        percentile=percentile,
        threshold=threshold,
        share_below=float(below.mean()),
        n_below=int(below.sum()),
        n_synthetic=len(syn_d),
        n_heldout=len(held_d),
        n_train=len(train),
        closest=tuple(Pair(int(i), int(syn_i[i]), float(syn_d[i])) for i in order),
    )
    log.info(
        "memorisation (%s, %s): %d / %d synthetic below the %.1f-th percentile of held-out distances (%.4g)",
        metric,
        extractor,
        result.n_below,
        result.n_synthetic,
        percentile,
        threshold,
    )
    return result


def save_pairs_grid(
    pairs: tuple[Pair, ...] | list[Pair],
    load_synthetic: Callable[[int], torch.Tensor],
    load_train: Callable[[int], torch.Tensor],
    path: str | Path,
    size: int = 128,
) -> None:
    """One PNG, one row per pair: synthetic image left, its nearest training image right.

    The loaders map an index to a (C, H, W) [0, 1] image; images are resized to ``size`` x ``size``
    (bilinear, antialiased) so different resolutions sit side by side. Written atomically.
    """
    if not pairs:
        raise ValueError("no pairs to draw")

    def fit(img: torch.Tensor) -> torch.Tensor:
        img = img.float()[None] if img.ndim == 3 else img.float()  # (1, C, H, W)
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return img.clamp(0, 1).expand(-1, 3, -1, -1)[0]  # (3, size, size); grey and RGB mix

    tiles = [
        fit(loader(index)) for p in pairs for loader, index in ((load_synthetic, p.synthetic), (load_train, p.train))
    ]
    save_grid(torch.stack(tiles), path, columns=2)
