"""Nearest-training-image memorisation check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from raygen.metrics.memorisation import Pair, memorisation, nearest_neighbours, save_pairs_grid


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_nearest_neighbours_match_brute_force_across_chunks(metric):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(37, 8)), rng.normal(size=(50, 8))
    d, i = nearest_neighbours(q, r, metric, chunk=5)
    if metric == "cosine":
        qn, rn = q / np.linalg.norm(q, axis=1, keepdims=True), r / np.linalg.norm(r, axis=1, keepdims=True)
        full = 1 - qn @ rn.T
    else:
        full = np.linalg.norm(q[:, None] - r[None], axis=2)
    np.testing.assert_array_equal(i, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), atol=1e-9)


def test_exact_copy_is_flagged_and_far_images_are_not():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 16)) + 3.0  # features share a positive mean, like post-ReLU features
    heldout = train[:100] + rng.normal(scale=0.3, size=(100, 16))  # "similar chests", never copies
    far = -train[:5] * 4  # synthetic images unlike anything in training
    copy = train[[42]]  # an exact copy of training image 42
    synthetic = np.concatenate([far, copy])
    for metric in ("cosine", "l2"):
        result = memorisation(synthetic, heldout, train, extractor="test", metric=metric, k=3)
        assert result.n_below == 1 and result.share_below == pytest.approx(1 / 6)
        assert result.closest[0] == Pair(synthetic=5, train=42, distance=pytest.approx(0.0, abs=1e-9))
        assert result.closest[0].distance < result.threshold
        assert len(result.closest) == 3 and result.closest[1].distance >= result.closest[0].distance


def test_share_on_a_constructed_example():
    # 1-d features along one axis (L2): training image at 0; held-out distances 1..100 -> 1st percentile 1.99.
    train = np.zeros((1, 1))
    heldout = np.arange(1, 101, dtype=float)[:, None]
    synthetic = np.array([0.5, 1.0, 1.5, 1.99, 2.0, 50.0])[:, None]
    result = memorisation(synthetic, heldout, train, extractor="toy", metric="l2", percentile=1.0)
    assert result.threshold == pytest.approx(np.percentile(np.arange(1, 101), 1.0)) == pytest.approx(1.99)
    assert result.n_below == 3 and result.share_below == pytest.approx(0.5)  # strictly below: 0.5, 1.0, 1.5
    assert (result.n_synthetic, result.n_heldout, result.n_train) == (6, 100, 1)


def test_pairs_grid_png(tmp_path):
    synthetic = torch.rand(4, 1, 32, 32)
    train = torch.rand(6, 1, 48, 48)
    pairs = (Pair(0, 5, 0.1), Pair(3, 2, 0.2))
    path = tmp_path / "pairs.png"
    save_pairs_grid(pairs, lambda i: synthetic[i], lambda i: train[i], path, size=16)
    with Image.open(path) as img:
        assert img.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2 columns x 2 rows, 2-px gutters
    with pytest.raises(ValueError):
        save_pairs_grid((), lambda i: synthetic[i], lambda i: train[i], path)
