"""The train_classifier stage on tiny JPG fixtures: outputs, early stopping, test split, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from raygen.checkpoint import load_checkpoint
from raygen.data.classifier_data import ClassifierImages
from raygen.data.labels import CLASSES
from raygen.models.classifier import ClassifierConfig, XrayDenseNet
from raygen.stages import train_classifier as tc
from raygen.training import classifier as training
from raygen.training import synthetic_pretrain as pretraining

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 real images of 12 patients (train 16 / val 4 / test 4) and 6 synthetic ones; a bright blob
    on the left marks class 0 (Atelectasis), so the classifier has something to learn."""
    root = tmp_path_factory.mktemp("data")
    jpg_root, syn_root = root / "jpg", root / "syn"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        subject = 10_000_000 + i // 2
        split = "train" if i < 16 else ("val" if i < 20 else "test")
        labels = [int(rng.random() < 0.4) for _ in CLASSES]
        labels[0] = i % 2
        pixels = rng.integers(0, 80, size=(40, 36), dtype=np.uint8)
        if labels[0]:
            pixels[10:25, 4:14] = 230
        rel = f"files/p10/p{subject}/s{50_000_000 + i}/img{i}.jpg"
        (jpg_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(jpg_root / rel, quality=95)
        rows.append([f"img{i}", subject, 50_000_000 + i, split, "PA", rel, *labels])
    manifest = root / "classifier.csv"
    frame = pd.DataFrame(rows, columns=["dicom_id", "subject_id", "study_id", "split", "view", "path", *CLASSES])
    frame["true_Atelectasis"] = frame["Atelectasis"]  # the demo carries its true labels along
    frame.to_csv(manifest, index=False)
    syn_rows = []
    for j in range(6):
        cls = j % 3
        (syn_root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(32, 32), dtype=np.uint8)).save(syn_root / "img" / f"s{j}.png")
        syn_rows.append([f"img/s{j}.png", *[int(k == cls) for k in range(len(CLASSES))]])
    synthetic = syn_root / "aug_100.csv"
    pd.DataFrame(syn_rows, columns=["path", *CLASSES]).to_csv(synthetic, index=False)
    return {"manifest": manifest, "jpg_root": jpg_root, "synthetic": synthetic, "frame": frame}


def write_params(path, **overrides):
    section = {
        "resolution": 32,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": 1,
        "patience": 5,
        "workers": 0,
        "device": "cpu",
        "eval_batch_size": 8,
        **overrides,
    }
    path.write_text(
        yaml.safe_dump(
            {"profile": "smoke", "train_classifier": {}, "profiles": {"smoke": {"train_classifier": section}}}
        )
    )
    return path


def run(dataset, out, params, arm="real", synthetic=False):
    argv = [
        "--manifest",
        str(dataset["manifest"]),
        "--jpg-root",
        str(dataset["jpg_root"]),
        "--arm",
        arm,
        "--out",
        str(out),
        "--params",
        str(params),
    ]
    if synthetic:
        argv += ["--synthetic", str(dataset["synthetic"])]
    return tc.main(argv)


def test_smoke_run_writes_every_output(dataset, tmp_path):
    out = tmp_path / "real+100"
    # augment: the demo turns it off, exercise it here; mixed: the paper's one training set of real and synthetic
    params = write_params(tmp_path / "p.yaml", augment={"enabled": True}, synthetic_use="mixed")
    assert run(dataset, out, params, arm="real+100", synthetic=True) == 0
    for name in ("model.ckpt", "history.csv", "test_predictions.csv", "val_predictions.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "last.ckpt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["synthetic_train_images"] == 6 and metrics["train_images"] == 22
    assert metrics["real_train_images"] == 16 and metrics["test_images"] == 4
    assert metrics["seed"] == 0  # evaluate states how many training seeds stand behind each arm
    # epoch_size real (the default): an epoch is 16 images, as in the real arm: 2 steps of 8, not 3.
    assert metrics["steps_per_epoch"] == 2 and metrics["optimizer_steps"] == 4

    # Test predictions: exactly the test split, whose patients are not in training; probabilities in [0, 1].
    frame = dataset["frame"]
    test = pd.read_csv(out / "test_predictions.csv", dtype={"dicom_id": str})
    assert sorted(test["dicom_id"]) == sorted(frame.loc[frame.split == "test", "dicom_id"])
    assert not set(test["subject_id"]) & set(frame.loc[frame.split == "train", "subject_id"])
    probs = test[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    assert list(test.columns[:12]) == ["dicom_id", "subject_id", *CLASSES] and "true_Atelectasis" in test
    val = pd.read_csv(out / "val_predictions.csv", dtype={"dicom_id": str})
    assert sorted(val["dicom_id"]) == sorted(frame.loc[frame.split == "val", "dicom_id"])

    # model.ckpt holds the best-validation weights: they reproduce the best epoch's val AUROC.
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_macro_auroc", "lr", "seconds"] and len(history) == 2
    best = history.loc[history.val_macro_auroc.idxmax()]
    assert metrics["best_epoch"] == int(best.epoch)
    y, prob = val[list(CLASSES)].to_numpy(), val[[f"prob_{c}" for c in CLASSES]].to_numpy()
    scored = [k for k in range(len(CLASSES)) if 0 < y[:, k].sum() < len(y)]  # sklearn as the independent reference
    recomputed = np.mean([roc_auc_score(y[:, k], prob[:, k]) for k in scored])
    assert recomputed == pytest.approx(best.val_macro_auroc, abs=1e-6)
    ckpt = load_checkpoint(out / "model.ckpt")
    model = XrayDenseNet(ClassifierConfig(**ckpt["classifier"]))
    model.load_state_dict(ckpt["model"])
    assert ckpt["config"]["params"]["resolution"] == 32


def test_real_arm_trains_on_real_images_only(dataset, tmp_path):
    out = tmp_path / "real"
    run(dataset, out, write_params(tmp_path / "p.yaml", epochs=1), arm="real", synthetic=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["synthetic_train_images"] == 0 and metrics["train_images"] == 16


def test_epoch_size_arm_makes_an_epoch_one_pass_over_the_arms_images(dataset, tmp_path):
    out = tmp_path / "arm"
    params = write_params(tmp_path / "p.yaml", epoch_size="arm", synthetic_use="mixed")
    run(dataset, out, params, arm="real+100", synthetic=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_per_epoch"] == 3 and metrics["optimizer_steps"] == 6  # 22 images: 8 + 8 + 6


def test_epoch_indices_stream_whole_passes():
    assert np.array_equal(training.epoch_indices(10, 10, seed=3, epoch=2), training.epoch_order(10, 3, 2))
    # 4 of 10 per epoch: epochs 0-4 are passes 0 and 1 cut into pieces; each pass holds every index once.
    pieces = np.concatenate([training.epoch_indices(10, 4, seed=3, epoch=e) for e in range(5)])
    assert np.array_equal(pieces, np.concatenate([training.epoch_order(10, 3, 0), training.epoch_order(10, 3, 1)]))
    assert sorted(pieces[:10]) == list(range(10)) and not np.array_equal(pieces[:10], pieces[10:])


def test_early_stopping_keeps_the_best_epoch(dataset, tmp_path, monkeypatch):
    scripted = iter([0.6, 0.8, 0.7, 0.75])  # best at epoch 2; two worse epochs stop the run (patience 2)
    real_auroc = training._macro_auroc
    monkeypatch.setattr(training, "_macro_auroc", lambda y, p: next(scripted, None) or real_auroc(y, p))
    weights = {}
    real_save = training.save_checkpoint

    def save(path, state):
        if path.name == "last.ckpt":
            weights[state["epoch"]] = {k: v.clone() for k, v in state["model"].items()}
        real_save(path, state)

    monkeypatch.setattr(training, "save_checkpoint", save)
    out = tmp_path / "stop"
    run(dataset, out, write_params(tmp_path / "p.yaml", epochs=6, patience=2))
    history = pd.read_csv(out / "history.csv")
    assert list(history.val_macro_auroc) == [0.6, 0.8, 0.7, 0.75]  # stopped after epoch 4 of 6
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == 2
    kept = load_checkpoint(out / "model.ckpt")["model"]
    assert all(torch.equal(kept[k], weights[2][k]) for k in kept)
    assert not torch.equal(kept["classifier.weight"], weights[4]["classifier.weight"])


def test_early_stopping_rules():
    stopper = training.EarlyStopping(patience=2)
    assert stopper.update(0, float("nan"))  # the first epoch is always kept
    assert stopper.update(1, 0.5) and not stopper.update(2, 0.5) and not stopper.stop
    assert not stopper.update(3, float("nan")) and stopper.stop and stopper.best_epoch == 1


def test_resume_after_interruption_equals_uninterrupted_run(dataset, tmp_path, monkeypatch):
    # real+100 mixed at epoch_size real: epochs cut passes
    params = write_params(tmp_path / "p.yaml", epochs=2, synthetic_use="mixed")
    run(dataset, tmp_path / "straight", params, arm="real+100", synthetic=True)

    def crash(epoch):
        if epoch == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "_on_epoch_end", crash)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, tmp_path / "resumed", params, arm="real+100", synthetic=True)
    assert load_checkpoint(tmp_path / "resumed" / "last.ckpt")["epoch"] == 1
    monkeypatch.setattr(training, "_on_epoch_end", lambda epoch: None)
    run(dataset, tmp_path / "resumed", params, arm="real+100", synthetic=True)

    a, b = (load_checkpoint(tmp_path / name / "model.ckpt")["model"] for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = (pd.read_csv(tmp_path / name / "history.csv") for name in ("straight", "resumed"))
    pd.testing.assert_frame_equal(ha.drop(columns="seconds"), hb.drop(columns="seconds"))
    pa, pb = (pd.read_csv(tmp_path / name / "test_predictions.csv") for name in ("straight", "resumed"))
    pd.testing.assert_frame_equal(pa, pb)


def test_params_choose_the_init_file_and_a_missing_one_is_named(dataset, tmp_path):
    args = [
        "--manifest",
        str(dataset["manifest"]),
        "--jpg-root",
        str(dataset["jpg_root"]),
        "--arm",
        "real",
        "--out",
        str(tmp_path / "x"),
        "--init-chexnet",
        str(tmp_path / "absent.pth.tar"),
    ]
    with pytest.raises(SystemExit, match="absent.pth.tar does not exist; get it from .*arnoweng/CheXNet"):
        tc.main([*args, "--params", str(write_params(tmp_path / "c.yaml", init="chexnet"))])
    with pytest.raises(SystemExit, match="--init-chexnet.*arnoweng/CheXNet"):
        tc.main(
            [
                "--manifest",
                str(dataset["manifest"]),
                "--jpg-root",
                str(dataset["jpg_root"]),
                "--arm",
                "real",
                "--out",
                str(tmp_path / "x"),
                "--params",
                str(write_params(tmp_path / "q.yaml", init="chexnet")),
            ]
        )


def test_synthetic_pretraining_precedes_the_real_arms_recipe(dataset, tmp_path, monkeypatch):
    """synthetic_use: pretrain trains on the synthetic images alone, then runs the real recipe on the real
    images from those weights; a run killed in the real phase resumes without pre-training again."""
    calls = []
    real_epoch = training.train_epoch

    def recording(model, optimizer, scheduler, data, epoch, params, device, pw):
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        calls.append((len(data), bool(data.frame["synthetic"].all()), params.epoch_size, start))
        return real_epoch(model, optimizer, scheduler, data, epoch, params, device, pw)

    def crash(epoch):
        if epoch == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "train_epoch", recording)
    real_save = pretraining.save_checkpoint
    saved = {}
    monkeypatch.setattr(
        pretraining, "save_checkpoint", lambda path, state: saved.update(state) or real_save(path, state)
    )
    params = write_params(tmp_path / "p.yaml", epochs=2, synthetic_use="pretrain", pretrain_epochs=2)
    run(dataset, tmp_path / "straight", params, arm="real+100", synthetic=True)
    assert [c[:3] for c in calls] == [(6, True, "arm"), (6, True, "arm"), (16, False, "real"), (16, False, "real")]
    assert all(torch.equal(calls[2][3][k], saved["model"][k]) for k in saved["model"])  # the real phase starts there
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["synthetic_train_images"] == 6 and metrics["train_images"] == 22 and metrics["pretrain_images"] == 6
    assert metrics["steps_per_epoch"] == 2 and metrics["synthetic_use"] == "pretrain"  # the real arm's steps
    assert metrics["pretrain_steps"] == 2 and metrics["optimizer_steps"] == 2 * 2 + 2  # 2 passes of one batch
    assert not (tmp_path / "straight" / "pretrained.ckpt").exists()  # gone with last.ckpt at the end

    monkeypatch.setattr(training, "_on_epoch_end", crash)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, tmp_path / "resumed", params, arm="real+100", synthetic=True)
    assert (tmp_path / "resumed" / "pretrained.ckpt").is_file()
    monkeypatch.setattr(training, "_on_epoch_end", lambda epoch: None)
    calls.clear()
    run(dataset, tmp_path / "resumed", params, arm="real+100", synthetic=True)
    assert [c[:3] for c in calls] == [(16, False, "real")]  # neither pre-training nor epoch 1 again
    a, b = (load_checkpoint(tmp_path / name / "model.ckpt")["model"] for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    calls.clear()
    run(dataset, tmp_path / "real", params, arm="real", synthetic=True)
    assert [c[:3] for c in calls] == [(16, False, "real"), (16, False, "real")]  # nothing to pre-train on


def test_pretraining_on_too_few_synthetic_images_is_skipped_with_a_warning(tmp_path, caplog):
    frame = pd.DataFrame({"synthetic": [True]})
    one = ClassifierImages(torch.zeros(1, 1, 32, 32), torch.zeros(1, len(CLASSES)), frame, torch.ones(1, len(CLASSES)))
    params = tc.TrainClassifierParams(resolution=32, device="cpu")
    with caplog.at_level("WARNING"):
        assert pretraining.pretrain(one, params, None, torch.device("cpu"), tmp_path, {}, reuse=False) is None
    assert "pre-training skipped: 1 synthetic image(s)" in caplog.text
    assert not (tmp_path / "pretrained.ckpt").exists()
