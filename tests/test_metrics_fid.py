"""FID / KID and the named feature extractors (torchxrayvision DenseNet-121 loaded from local files)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from scipy import linalg
from standins import save_xrv_release  # xrv's pickled release format (one writer)

from raygen.metrics import features, xrv
from raygen.metrics import fid as fm


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """n samples of one correlated d-dim Gaussian (the mixing matrix is fixed; ``seed`` picks the samples)."""
    mix = np.random.default_rng(1234).normal(size=(d, d)) / np.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix + shift


# --------------------------------------------------------------------------------------------
# FID and KID


def test_fid_matches_direct_scipy_computation():
    a, b = gaussian(300, 12, 0), gaussian(250, 12, 1, shift=0.3)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = linalg.sqrtm(cov_a).real  # symmetric form: tr sqrt(A^1/2 B A^1/2) = tr sqrt(A B)
    expected = (
        ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * np.trace(linalg.sqrtm(root_a @ cov_b @ root_a).real)
    )
    result = fm.compute_fid(a, b, extractor="toy", kid_subsets=5)
    assert result.fid == pytest.approx(expected, rel=1e-6)
    assert (result.n_real, result.n_fake, result.extractor, result.kid_subset_size) == (300, 250, "toy", 250)


@pytest.mark.parametrize("n_a, n_b", [(20, 30), (30, 20), (40, 40)])
def test_fid_with_fewer_samples_than_dimensions_matches_scipy(n_a, n_b):
    a, b = gaussian(n_a, 64, 3), gaussian(n_b, 64, 4, shift=0.2)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = linalg.sqrtm(cov_a).real
    expected = (
        ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * np.trace(linalg.sqrtm(root_a @ cov_b @ root_a).real)
    )
    assert fm.compute_fid(a, b, extractor="toy", kid_subsets=2).fid == pytest.approx(expected, rel=1e-6)
    assert fm.compute_fid(a, a, extractor="toy", kid_subsets=2).fid == pytest.approx(0.0, abs=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_a_mean_shift_adds_its_square_norm():
    a = gaussian(400, 10, 2)
    assert fm.compute_fid(a, a, extractor="toy", kid_subsets=2).fid == pytest.approx(0.0, abs=1e-6)
    delta = np.linspace(-1, 1, 10)
    shifted = fm.compute_fid(a, a + delta, extractor="toy", kid_subsets=2)  # same covariance
    assert shifted.fid == pytest.approx((delta**2).sum(), rel=1e-6)


def test_kid_unbiased_near_zero_for_same_distribution_positive_for_shifted_and_seeded():
    a, b = gaussian(600, 8, 3), gaussian(600, 8, 4)
    same = fm.compute_fid(a, b, extractor="toy", kid_subsets=10, kid_subset_size=200, seed=0)
    shifted = fm.compute_fid(a, b + 0.5, extractor="toy", kid_subsets=10, kid_subset_size=200, seed=0)
    assert abs(same.kid_mean) < 3 * same.kid_std + 1e-3
    assert shifted.kid_mean > 0.05 and shifted.kid_mean > 10 * abs(same.kid_mean)
    again = fm.compute_fid(a, b + 0.5, extractor="toy", kid_subsets=10, kid_subset_size=200, seed=0)
    assert again == shifted


def test_kid_single_subset_equals_hand_unbiased_mmd():
    x, y = gaussian(6, 3, 5), gaussian(6, 3, 6, shift=1.0)
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = (kxx.sum() - np.trace(kxx)) / 30 + (kyy.sum() - np.trace(kyy)) / 30 - 2 * kxy.mean()
    mean, std, m = fm.kid(x, y, subsets=1, subset_size=6)  # a subset of all 6 is a permutation
    assert mean == pytest.approx(expected, rel=1e-10) and std == 0.0 and m == 6


def test_fid_or_reason_records_why_instead_of_raising():
    a, b = gaussian(30, 4, 7), gaussian(30, 4, 8)
    assert fm.compute_fid_or_reason(a, b, "toy", kid_subsets=2) == fm.compute_fid(a, b, "toy", kid_subsets=2)
    for small in (a[:1], a[:0]):
        text = fm.compute_fid_or_reason(small, b, "toy", kid_subsets=2)
        assert text.startswith("not computed: ") and f"{len(small)} real vs 30 generated" in text
    assert fm.compute_fid_or_reason(a, b[:, :3], "toy").startswith("not computed: expected (N, F)")


# --------------------------------------------------------------------------------------------
# Pixel convention


def test_unit_to_xrv_range():
    x = torch.tensor([-0.5, 0.0, 0.25, 0.5, 1.0, 1.5])
    torch.testing.assert_close(xrv.unit_to_xrv(x), torch.tensor([-1024.0, -1024.0, -512.0, 0.0, 1024.0, 1024.0]))
    y = xrv.unit_to_xrv(torch.rand(2, 1, 8, 8))
    assert y.dtype == torch.float32 and y.min() >= -1024 and y.max() <= 1024


# --------------------------------------------------------------------------------------------
# torchxrayvision DenseNet-121 from local files


def xrv_layout_densenet() -> nn.Module:
    """A random DenseNet-121 with xrv's layout: 1-channel stem, 18 outputs (xrv's default pathologies)."""
    torch.manual_seed(0)
    net = torchvision.models.densenet121(weights=None, num_classes=18)
    net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    for m in net.modules():  # non-trivial BN statistics so a wrong load would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def xrv_net() -> nn.Module:
    return xrv_layout_densenet()  # built once: a DenseNet-121 takes ~1 s to initialise on 2 cores


def expected_features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """xrv's features2 on [-1024, 1024] input, written out here independently of raygen.metrics.xrv."""
    with torch.no_grad():
        h = torch.relu(net.features(images * 2048 - 1024))
        return h.mean(dim=(2, 3)).double()


def test_xrv_missing_file_names_the_file_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt") as err:
        xrv.xrv_densenet_extractor("densenet121-res224-chex")
    assert "github.com/mlmed/torchxrayvision/releases" in str(err.value)
    with pytest.raises(FileNotFoundError):
        xrv.xrv_densenet_extractor(path=tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        features.inception_extractor(tmp_path / "nope.pth")


def test_xrv_state_dict_in_xrv_layout_loads_and_gives_features2(tmp_path, monkeypatch, xrv_net):
    net = xrv_net
    state = {**net.state_dict(), "op_threshs": torch.rand(18)}  # newer xrv registers op_threshs as a buffer
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".torchxrayvision" / "models_data"
    folder.mkdir(parents=True)
    file = folder / xrv.XRV_WEIGHTS["densenet121-res224-chex"]
    torch.save(state, file)
    extractor = xrv.xrv_densenet_extractor("densenet121-res224-chex")  # found in xrv's cache folder
    assert extractor.name == f"torchxrayvision-densenet121-res224-chex:{features.file_sha12(file)}"
    images = torch.rand(1, 1, 224, 224)
    feats = extractor(images)
    assert feats.shape == (1, 1024) and feats.dtype == torch.float64
    torch.testing.assert_close(feats, expected_features(net, images), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        extractor(torch.rand(1, 3, 224, 224))


@pytest.mark.filterwarnings("ignore:Couldn.t retrieve source code")
def test_xrv_pickled_release_file_loads_without_torchxrayvision(tmp_path, xrv_net):
    """xrv's GitHub files pickle the whole model (classes from torchxrayvision.models); build one such file
    with stand-in classes under that module name, then load it with torchxrayvision absent."""
    path = save_xrv_release(xrv_net, tmp_path / "chex-densenet121.pt")  # the 2019-era format of xrv releases
    assert "torchxrayvision" not in sys.modules and "torchxrayvision.models" not in sys.modules
    state = xrv.load_xrv_state_dict(path)
    assert state["features.conv0.weight"].shape == (64, 1, 7, 7) and state["classifier.weight"].shape == (18, 1024)
    extractor = xrv.xrv_densenet_extractor(path=path)
    images = torch.rand(1, 1, 256, 256)  # resized to 224 inside
    resized = torch.nn.functional.interpolate(images, size=(224, 224), mode="bilinear", antialias=True)
    torch.testing.assert_close(extractor(images), expected_features(xrv_net, resized), rtol=1e-4, atol=1e-5)


def test_pickled_file_with_foreign_globals_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": nn.Linear(2, 2), "x": np.zeros(2)}, path)  # numpy global: not allowed
    with pytest.raises(Exception, match="not allowed|Unsupported global|weights_only"):
        xrv.load_xrv_state_dict(path)


def test_module_extractor_is_named_frozen_and_float64():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    extractor = features.module_extractor(net, "raygen-classifier-penultimate:abc123def456", batch_size=2)
    feats = extractor(torch.rand(5, 1, 4, 4))
    assert extractor.name.startswith("raygen-classifier-penultimate:") and feats.shape == (5, 3)
    assert feats.dtype == torch.float64 and not any(p.requires_grad for p in net.parameters()) and not net.training
    assert features.extract_features(extractor, [torch.rand(2, 1, 4, 4), torch.rand(3, 1, 4, 4)]).shape == (5, 3)
