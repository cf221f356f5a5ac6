"""Which rows a statistic is computed on: bootstrap resamples and patient-disjoint halves.

Test images are not independent: one patient contributes several images (studies, views), and those
images share anatomy, habitus and often the same finding. A bootstrap that draws images treats them as
independent and so gives intervals that are too narrow. The clustered bootstrap draws *clusters*
(patients, ``subject_id``) with replacement, as many as there are, and takes every row of each drawn
cluster, as often as it was drawn (Field & Welsh 2007; the usual choice for patient-level data).

:func:`disjoint_halves` splits rows into two halves that share no cluster and hold the same number of
rows, for the equal-N FID floor of the evaluate stage.

Randomness only from a numpy ``Generator`` seeded by the caller's seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Clusters", "bootstrap_indices", "cluster_resample", "clusters", "disjoint_halves"]


@dataclass(frozen=True)
class Clusters:
    """Rows grouped by cluster id.

    order:  (N,) row indices sorted by cluster (stable, so rows keep their order inside a cluster).
    starts: (G,) position in ``order`` where each cluster's rows begin; sizes: (G,) rows per cluster.
    """

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @property
    def count(self) -> int:
        return len(self.sizes)


def clusters(groups: np.ndarray) -> Clusters:
    """Group the rows of ``groups`` ((N,) hashable cluster ids, e.g. subject_id) by their id."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    return Clusters(order=order, starts=np.cumsum(sizes) - sizes, sizes=sizes)


def cluster_resample(c: Clusters, rng: np.random.Generator) -> np.ndarray:
    """One clustered resample: ``c.count`` clusters drawn with replacement, every row of each -> (M,) indices.

    M varies between resamples (clusters differ in size); a cluster drawn twice contributes its rows twice.
    """
    drawn = rng.integers(0, c.count, c.count)  # (G,)
    sizes = c.sizes[drawn]
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # 0..size-1 per drawn cluster
    return c.order[np.repeat(c.starts[drawn], sizes) + within]


def bootstrap_indices(n: int, groups: np.ndarray | None, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n`` rows: rows with replacement (``groups`` None), else whole clusters.

    The same ``seed`` (and ``groups``) gives the same resamples, which is what makes paired differences
    between two arms scored on the same rows possible.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} rows")
    c = clusters(groups)
    for _ in range(n_boot):
        yield cluster_resample(c, rng)


def disjoint_halves(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted index arrays of equal length whose rows share no cluster id.

    Clusters are dealt in a random order to the half with fewer rows so far; the larger half is then
    subsampled (whole rows, without replacement) to the smaller one's size. With a single cluster one
    half is empty, so both come back empty: the caller says why nothing was computed.
    """
    c = clusters(groups)
    rng = np.random.default_rng(seed)
    halves: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    filled = [0, 0]
    for g in rng.permutation(c.count):
        side = int(filled[1] < filled[0])
        halves[side].append(c.order[c.starts[g] : c.starts[g] + c.sizes[g]])
        filled[side] += int(c.sizes[g])
    n = min(filled)
    rows = [np.concatenate(h) if h else np.zeros(0, dtype=np.int64) for h in halves]
    return tuple(np.sort(rng.choice(r, n, replace=False)) if n else np.zeros(0, dtype=np.int64) for r in rows)  # type: ignore[return-value]
