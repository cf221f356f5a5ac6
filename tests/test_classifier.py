"""The DenseNet-121 classifier (CheXNet / torchxrayvision weights from local files) and its data:
splits, synthetic rows per arm, augmentation that never mirrors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torchvision
from standins import to_chexnet_layout  # CheXNet's key layout (one place)

from raygen.data.classifier_config import AugmentConfig
from raygen.data.classifier_data import (
    augment_batch,
    build_splits,
    loss_mask,
    read_classifier_manifest,
    read_synthetic_manifest,
    synthetic_for_arm,
)
from raygen.data.labels import CLASSES
from raygen.models.classifier import (
    FEATURE_DIM,
    build_classifier,
    load_backbone,
    load_chexnet,
    load_xrv_densenet,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference():
    """A torchvision DenseNet-121 with random weights and a 3-channel stem (CheXNet's shape)."""
    torch.manual_seed(1)
    return torchvision.models.densenet121(weights=None, num_classes=14).eval()


def test_chexnet_keys_are_renamed_and_loaded(reference, tmp_path):
    path = tmp_path / "model.pth.tar"
    legacy = to_chexnet_layout(reference.state_dict())
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save({"epoch": 5, "state_dict": legacy}, path)
    state = load_chexnet(path)
    assert set(state) == {k for k in reference.state_dict() if k.startswith("features.")}  # 14-way head dropped
    model = build_classifier(in_channels=3, init="chexnet", weights=path)
    for key, value in reference.features.state_dict().items():
        torch.testing.assert_close(model.features.state_dict()[key], value, rtol=0, atol=0)
    assert model.classifier.weight.shape == (len(CLASSES), FEATURE_DIM)
    # A grey stem gets the summed RGB filters: a grey image replicated to RGB responds the same.
    grey = build_classifier(in_channels=1, init="chexnet", weights=path)
    torch.testing.assert_close(grey.features.conv0.weight, reference.features.conv0.weight.sum(1, keepdim=True))
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    torch.testing.assert_close(
        grey.eval().features.conv0(x), reference.features.conv0(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5
    )


def test_xrv_layout_loads_into_a_grey_stem(tmp_path):
    torch.manual_seed(2)
    xrv = torchvision.models.densenet121(weights=None, num_classes=18)  # xrv: 18 pathologies, 1-channel stem
    xrv.features.conv0 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    state = {**xrv.state_dict(), "op_threshs": torch.rand(18)}
    path = tmp_path / "xrv.pt"
    torch.save(state, path)
    model = build_classifier(in_channels=1, init="xrv", weights=path).eval()
    for key, value in xrv.features.state_dict().items():
        torch.testing.assert_close(model.features.state_dict()[key], value, rtol=0, atol=0)
    # penultimate = xrv's features2 on the [-1024, 1024] input convention.
    x = torch.rand(2, 1, 64, 64) * 2 - 1  # [-1, 1]
    with torch.no_grad():
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.relu(xrv.eval().features(x * 1024)), 1).flatten(1)
        torch.testing.assert_close(model.penultimate(x), expected, rtol=1e-4, atol=1e-4)
        assert model(x).shape == (2, len(CLASSES))


def test_missing_weight_file_names_it_and_where_to_get_it(tmp_path):
    missing = tmp_path / "nope.pth.tar"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth\.tar.*arnoweng/CheXNet"):
        load_chexnet(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth\.tar.*torchxrayvision"):
        load_xrv_densenet(missing)
    with pytest.raises(FileNotFoundError, match="needs a local weight file"):
        build_classifier(init="chexnet")


def test_backbone_loading_is_strict_and_lists_mismatches(reference):
    model = build_classifier(in_channels=3)
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    state.pop("features.norm5.weight")
    state["features.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 missing \['features.norm5.weight'\].*1 unexpected \['features.extra"):
        load_backbone(model, state)


# --- data ----------------------------------------------------------------------------------------


def cohort_frame() -> pd.DataFrame:
    rows = []
    for i in range(12):
        split = "train" if i < 8 else ("val" if i < 10 else "test")
        labels = [int((i + k) % 3 == 0) for k in range(len(CLASSES))]
        rows.append([f"d{i}", 100 + i, 500 + i, split, "PA", f"files/p10/d{i}.jpg", *labels])
    return pd.DataFrame(rows, columns=["dicom_id", "subject_id", "study_id", "split", "view", "path", *CLASSES])


def synthetic_frame(tmp_path, counts=(5, 3, 2)) -> pd.DataFrame:
    rows = []
    for cls, n in enumerate(counts):
        for j in range(n):
            rows.append([f"img/c{cls}_{j}.png", *[int(k == cls) for k in range(len(CLASSES))]])
    path = tmp_path / "aug_100.csv"
    pd.DataFrame(rows, columns=["path", *CLASSES]).to_csv(path, index=False)
    return read_synthetic_manifest(path)


def test_synthetic_rows_join_training_only_for_augmented_arms(tmp_path):
    manifest_path = tmp_path / "classifier.csv"
    cohort_frame().to_csv(manifest_path, index=False)
    manifest = read_classifier_manifest(manifest_path)
    synthetic = synthetic_frame(tmp_path)
    assert all(p.startswith(str(tmp_path)) for p in synthetic["path"])  # relative paths resolved
    real = build_splits(manifest, "real", synthetic)
    half = build_splits(manifest, "real+50", synthetic)
    full = build_splits(manifest, "real+100", synthetic)
    assert (real.train["source"] == "real").all() and real.n_synthetic == 0
    assert half.n_synthetic == 2 + 1 + 1 and full.n_synthetic == 10  # first n // 2 of each class
    assert list(half.train.loc[half.train.source == "synthetic", "dicom_id"]) == [
        "syn-000000",
        "syn-000001",
        "syn-000005",
        "syn-000008",
    ]
    for splits in (real, half, full):
        assert len(splits.train) == 8 + splits.n_synthetic
        for frame in (splits.val, splits.test):
            assert (frame["source"] == "real").all()
        assert list(splits.test["dicom_id"]) == ["d10", "d11"]
    with pytest.raises(ValueError, match="needs a synthetic manifest"):
        build_splits(manifest, "real+50", None)
    # A subset of the real training set shrinks the synthetic share by the same fraction.
    assert build_splits(manifest, "real+100", synthetic, max_train_images=4).n_synthetic == 2 + 1 + 1
    assert len(synthetic_for_arm(synthetic, "real")) == 0


def test_prompted_synthetic_labels_count_only_the_prompts_class(tmp_path):
    manifest_path = tmp_path / "classifier.csv"
    cohort_frame().to_csv(manifest_path, index=False)
    synthetic = synthetic_frame(tmp_path)
    synthetic["prompt_class"] = [CLASSES[3]] * len(synthetic)
    synthetic.loc[0, "prompt_class"] = None  # generated for no class (e.g. a normal impression)
    train = build_splits(read_classifier_manifest(manifest_path), "real+100", synthetic).train.reset_index(drop=True)
    real = (train["source"] == "real").to_numpy()
    assert (loss_mask(train, "all") == 1).all()
    mask = loss_mask(train, "prompted")
    assert (mask[real] == 1).all()  # real images: every label counts
    first = train.index[train["dicom_id"] == "syn-000000"][0]
    assert (mask[first] == 1).all()  # no prompt class: its labels stand
    others = [i for i in train.index[~real] if i != first]
    assert (mask[others][:, 3] == 1).all() and mask[others].sum(1).eq(1).all()  # only the prompted class


def test_patients_crossing_splits_are_rejected(tmp_path):
    frame = cohort_frame()
    frame.loc[frame.dicom_id == "d11", "subject_id"] = 100  # a test image of a training patient
    frame["source"] = "real"
    with pytest.raises(ValueError, match="several splits"):
        build_splits(frame, "real")


def test_augmentation_never_mirrors_and_is_seeded():
    x = -torch.ones(64, 1, 32, 32)
    x[..., :16] = 1.0  # bright left half, dark right half
    x[..., 8:24, 20:28] = 0.0  # and an off-centre feature on the right
    cfg = AugmentConfig(rotate_deg=5.0, translate=0.05, scale=0.05, brightness=0.1, contrast=0.1)
    out = augment_batch(x, torch.Generator().manual_seed(0), cfg)
    assert out.shape == x.shape and out.min() >= -1.0 and out.max() <= 1.0
    left, right = out[..., :16].mean(dim=(1, 2, 3)), out[..., 16:].mean(dim=(1, 2, 3))
    assert (left - right > 1.0).all()  # every sample keeps the bright side on the left
    assert not torch.equal(out[0], out[1])  # samples differ
    torch.testing.assert_close(out, augment_batch(x, torch.Generator().manual_seed(0), cfg), rtol=0, atol=0)
    assert torch.equal(augment_batch(x, torch.Generator(), AugmentConfig(enabled=False)), x)
