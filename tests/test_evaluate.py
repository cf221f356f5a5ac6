"""The evaluate stage's own pieces: ROC curves, extractor choice, conditional fidelity, JSON hygiene.

The whole stage runs in the smoke pipeline test (tests/test_pipeline_smoke.py); the metric library it
calls is checked against independent references in tests/test_metrics_*.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from raygen import evaluate as ev
from raygen.data.labels import CLASSES
from raygen.models.classifier import ClassifierConfig, XrayDenseNet


def test_macro_roc_of_one_class_has_its_auroc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 1))
    s = np.round(rng.random((300, 1)) + 0.4 * y, 2)  # ties on purpose
    curve = ev.macro_roc(y, s)
    assert curve[0] >= 0.0 and curve[-1] == 1.0 and (np.diff(curve) >= 0).all()
    assert math.isclose(np.trapezoid(curve, ev.ROC_GRID), roc_auc_score(y[:, 0], s[:, 0]), abs_tol=0.01)


def test_macro_roc_averages_scored_classes_only():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.4]])
    curve = ev.macro_roc(y, s)  # class 2 has no positives: left out
    assert curve[0] == 1.0 and curve[-1] == 1.0  # a perfect class-1 ranking
    assert np.isnan(ev.macro_roc(np.zeros((3, 1), int), np.ones((3, 1)))).all()


def test_conditional_fidelity_scores_the_asked_for_labels():
    labels = np.eye(len(CLASSES), dtype=int).repeat(3, axis=0)  # 3 images per class prompt
    right = labels + 0.01 * np.random.default_rng(0).random(labels.shape)
    assert ev.conditional_fidelity(labels, right)["macro"] == 1.0
    assert ev.conditional_fidelity(labels, 1.0 - right)["macro"] == 0.0
    assert ev.conditional_fidelity(labels, right)["n_images"] == len(labels)


def test_extractor_is_named_and_never_silently_random(tmp_path):
    model = XrayDenseNet(ClassifierConfig()).eval()
    auto = ev.pick_extractor(ev.EvaluateParams(), tmp_path / "absent.pt", model, 32, "abc123def456", "cpu")
    assert auto.name == "raygen-classifier-penultimate:abc123def456"
    assert auto(torch.rand(2, 1, 48, 48)).shape == (2, 1024)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        ev.pick_extractor(ev.EvaluateParams(extractor="xrv"), tmp_path / "absent.pt", model, 32, "abc", "cpu")


def test_penultimate_features_are_the_classifiers():
    torch.manual_seed(0)
    model = XrayDenseNet(ClassifierConfig()).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ev._Penultimate(model, 32)(x), model.penultimate(x * 2 - 1))
        probs = ev.classifier_probs(model, x, 32, torch.device("cpu"))
        assert np.allclose(probs, torch.sigmoid(model(x * 2 - 1)).numpy(), atol=1e-6)


def test_metrics_json_has_no_nan():
    out = ev._finite({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert json.loads(json.dumps(out)) == {"a": None, "b": [1.5, None], "c": 3}


def test_params_validate():
    with pytest.raises(ValueError):
        ev.EvaluateParams(n_boot=1)


def test_streamed_features_equal_in_memory_features_and_unreadable_files_are_skipped(tmp_path):
    from PIL import Image

    from raygen.metrics.fid import module_extractor

    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8)).save(paths[-1])
    extractor = module_extractor(torch.nn.AvgPool2d(8), "pool8")
    whole = np.asarray(extractor(ev.load_images(paths, 32, 2)))
    assert whole.shape == (7, 16)
    feats, ok = ev.streamed_features(extractor, paths, 32, 2, chunk=3)
    assert ok.all() and np.array_equal(feats, whole)

    paths[4].write_bytes(b"not a png")  # corrupt
    paths[5].unlink()  # missing
    images, ok = ev.load_images_checked(paths, 32, 2)
    assert ok.tolist() == [True, True, True, True, False, False, True] and images.shape == (7, 1, 32, 32)
    feats, ok = ev.streamed_features(extractor, paths, 32, 2, chunk=3)
    assert (~ok).sum() == 2 and np.array_equal(feats, whole[[0, 1, 2, 3, 6]])


def test_head_on_penultimate_features_equals_the_classifier():
    torch.manual_seed(1)
    model = XrayDenseNet(ClassifierConfig()).eval()
    x = torch.rand(3, 1, 48, 48)
    extractor = ev.pick_extractor(ev.EvaluateParams(), None, model, 32, "abc", "cpu")
    assert extractor.name.startswith(ev.PENULTIMATE)
    head = ev.head_probabilities(model, np.asarray(extractor(x)), torch.device("cpu"))
    assert np.allclose(head, ev.classifier_probs(model, x, 32, torch.device("cpu")), atol=1e-6)
