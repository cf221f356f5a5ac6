"""The evaluate stage's pieces: ROC curves, extractor choice, conditional fidelity, JSON hygiene.

The whole stage runs in the smoke pipeline test (tests/test_pipeline_smoke.py); the metric library it
calls is checked against independent references in tests/test_metrics_*.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from raygen.data.labels import CLASSES
from raygen.errors import MissingFileError, UsageError
from raygen.io import sha256_file
from raygen.metrics import conditional, image_sets, plots
from raygen.metrics.arms import align_test_predictions, score_arms
from raygen.metrics.classification import ROC_GRID, macro_roc
from raygen.metrics.fidelity import equal_n_floor, patient_halves
from raygen.metrics.summary import finite, summary
from raygen.models.classifier import ClassifierConfig, XrayDenseNet
from raygen.models.pinned import FID_NETWORK, PinnedHashError
from raygen.stages import evaluate as ev


def test_macro_roc_of_one_class_has_its_auroc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 1))
    s = np.round(rng.random((300, 1)) + 0.4 * y, 2)  # ties on purpose
    curve = macro_roc(y, s)
    assert curve[0] >= 0.0 and curve[-1] == 1.0 and (np.diff(curve) >= 0).all()
    assert math.isclose(np.trapezoid(curve, ROC_GRID), roc_auc_score(y[:, 0], s[:, 0]), abs_tol=0.01)


def test_macro_roc_averages_scored_classes_only():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.4]])
    curve = macro_roc(y, s)  # class 2 has no positives: left out
    assert curve[0] == 1.0 and curve[-1] == 1.0  # a perfect class-1 ranking
    assert np.isnan(macro_roc(np.zeros((3, 1), int), np.ones((3, 1)))).all()


def test_conditional_fidelity_scores_the_asked_for_labels():
    labels = np.eye(len(CLASSES), dtype=int).repeat(3, axis=0)  # 3 images per class prompt
    right = labels + 0.01 * np.random.default_rng(0).random(labels.shape)
    assert conditional.conditional_fidelity(labels, right)["macro"] == 1.0
    assert conditional.conditional_fidelity(labels, 1.0 - right)["macro"] == 0.0
    assert conditional.conditional_fidelity(labels, right)["n_images"] == len(labels)


def judge_of(model, sha="abc123def456"):
    return conditional.Judge(model, 32, conditional.PENULTIMATE + sha)


def test_extractor_is_named_and_never_silently_random(tmp_path):
    model = XrayDenseNet(ClassifierConfig()).eval()
    auto, judge = conditional.pick_measures(
        ev.EvaluateParams().extractor, tmp_path / "absent.pt", None, judge_of(model), "cpu"
    )
    assert auto.name == "raygen-classifier-penultimate:abc123def456" and judge.model is model
    assert auto(torch.rand(2, 1, 48, 48)).shape == (2, 1024)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        conditional.pick_measures("xrv", tmp_path / "absent.pt", None, judge_of(model), "cpu")
    with pytest.raises(UsageError, match="--demo-weights"):
        conditional.pick_measures("demo", None, None, judge_of(model), "cpu")


def write_pinned_network(folder, model, resolution=32):
    """A pinned network in the layout `raygen demo-weights` packs, with its SHA256SUMS line."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"model": state, "classifier": asdict(model.config), "resolution": resolution}, folder / FID_NETWORK)
    (folder / "SHA256SUMS").write_text(f"{sha256_file(folder / FID_NETWORK)}  {FID_NETWORK}\n")


def test_the_demo_extractor_is_the_pinned_network_which_also_judges(tmp_path):
    torch.manual_seed(2)
    pinned_model, real_only = XrayDenseNet(ClassifierConfig()).eval(), XrayDenseNet(ClassifierConfig()).eval()
    write_pinned_network(tmp_path, pinned_model)
    extractor, judge = conditional.pick_measures("demo", None, tmp_path, judge_of(real_only), "cpu")
    sha = sha256_file(tmp_path / FID_NETWORK)[:12]
    assert extractor.name == judge.name == f"raygen-demo-densenet121:{sha}"
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():  # fp16 on disk, fp32 in use: the fp16-rounded weights, exactly
        expected = pinned_model.half().float().penultimate(conditional.to_classifier_input(x, 32))
    assert torch.allclose(torch.as_tensor(extractor(x)).float(), expected, atol=1e-5)
    # auto never picks the demo network (it has only seen demo images), even when it is there
    assert conditional.pick_measures("auto", None, tmp_path, judge_of(real_only), "cpu")[1].model is real_only


def test_a_changed_pinned_network_is_refused(tmp_path):
    write_pinned_network(tmp_path, XrayDenseNet(ClassifierConfig()).eval())
    with (tmp_path / FID_NETWORK).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(PinnedHashError, match="raygen demo-weights"):
        conditional.load_pinned_network(tmp_path, "cpu")
    (tmp_path / FID_NETWORK).unlink()
    with pytest.raises(MissingFileError, match="raygen demo-weights"):
        conditional.load_pinned_network(tmp_path, "cpu")


def test_penultimate_features_are_the_classifiers():
    torch.manual_seed(0)
    model = XrayDenseNet(ClassifierConfig()).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(conditional._Penultimate(model, 32)(x), model.penultimate(x * 2 - 1))
        probs = conditional.classifier_probs(model, x, 32, torch.device("cpu"))
        assert np.allclose(probs, torch.sigmoid(model(x * 2 - 1)).numpy(), atol=1e-6)


def test_metrics_json_has_no_nan():
    out = finite({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert json.loads(json.dumps(out)) == {"a": None, "b": [1.5, None], "c": 3}


def test_params_validate():
    with pytest.raises(ValueError):
        ev.EvaluateParams(n_boot=1)


def test_streamed_features_equal_in_memory_features_and_unreadable_files_are_skipped(tmp_path):
    from PIL import Image

    from raygen.metrics.features import module_extractor

    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8)).save(paths[-1])
    extractor = module_extractor(torch.nn.AvgPool2d(8), "pool8")
    whole = np.asarray(extractor(image_sets.load_images(paths, 32, 2)))
    assert whole.shape == (7, 16)
    feats, ok = image_sets.streamed_features(extractor, paths, 32, 2, chunk=3)
    assert ok.all() and np.array_equal(feats, whole)

    paths[4].write_bytes(b"not a png")  # corrupt
    paths[5].unlink()  # missing
    images, ok = image_sets.load_images_checked(paths, 32, 2)
    assert ok.tolist() == [True, True, True, True, False, False, True] and images.shape == (7, 1, 32, 32)
    feats, ok = image_sets.streamed_features(extractor, paths, 32, 2, chunk=3)
    assert (~ok).sum() == 2 and np.array_equal(feats, whole[[0, 1, 2, 3, 6]])


def test_head_on_penultimate_features_equals_the_classifier():
    torch.manual_seed(1)
    model = XrayDenseNet(ClassifierConfig()).eval()
    x = torch.rand(3, 1, 48, 48)
    extractor, _ = conditional.pick_measures(ev.EvaluateParams().extractor, None, None, judge_of(model), "cpu")
    assert extractor.name.startswith(conditional.PENULTIMATE)
    head = conditional.head_probabilities(model, np.asarray(extractor(x)), torch.device("cpu"))
    assert np.allclose(head, conditional.classifier_probs(model, x, 32, torch.device("cpu")), atol=1e-6)


# --- arms on the same test patients ------------------------------------------------------------


def write_arm(folder, frame: pd.DataFrame, seed: int = 0) -> None:
    folder.mkdir(parents=True)
    frame.to_csv(folder / "test_predictions.csv", index=False)
    frame.to_csv(folder / "val_predictions.csv", index=False)
    (folder / "metrics.json").write_text(
        json.dumps(
            {"train_images": 10, "synthetic_train_images": 0, "best_epoch": 1, "optimizer_steps": 4, "seed": seed}
        )
    )


def predictions(n: int = 90, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(int)
    frame = pd.DataFrame({"dicom_id": [f"d{i:03d}" for i in range(n)], "subject_id": np.arange(n) // 3})
    frame[list(CLASSES)] = y
    noise = np.random.default_rng(99).normal(size=y.shape)  # shared by every arm built from this seed
    frame[[f"prob_{c}" for c in CLASSES]] = 1 / (1 + np.exp(-(signal * y + noise)))
    return frame


def test_arms_are_aligned_by_dicom_id_and_other_test_sets_are_errors():
    real = predictions()
    shuffled = real.sample(frac=1.0, random_state=0)
    aligned = align_test_predictions({"real": real, "real+50": shuffled})
    assert aligned["real+50"].equals(real[aligned["real+50"].columns])
    with pytest.raises(ValueError, match=r"other images than arm real: 1 missing .* 0 extra"):
        align_test_predictions({"real": real, "real+50": real.iloc[1:]})
    with pytest.raises(ValueError, match="subject_id"):
        align_test_predictions({"real": real, "real+50": real.drop(columns="subject_id")})
    relabelled = real.copy()
    relabelled.loc[0, "Edema"] = 1 - relabelled.loc[0, "Edema"]
    with pytest.raises(ValueError, match="other labels or patients"):
        align_test_predictions({"real": real, "real+50": relabelled})


def test_score_arms_gives_patient_clustered_intervals_and_paired_deltas(tmp_path):
    write_arm(tmp_path / "real", predictions())
    write_arm(tmp_path / "real+50", predictions().sample(frac=1.0, random_state=1))  # same scores, other order
    write_arm(tmp_path / "real+100", predictions(signal=3.0))  # the same patients, better ranked
    scores = score_arms(tmp_path, n_boot=100, seed=0, level=0.95)
    arms, deltas = scores.reports, scores.deltas
    assert arms["real"]["auroc_ci"]["n_clusters"] == 30 and arms["real"]["train_seeds"] == [0]
    assert arms["real+50"]["auroc_ci"] == arms["real"]["auroc_ci"]  # same patients drawn, same scores
    assert deltas["real+50"]["delta"] == 0.0 and deltas["real+50"]["interval"] == (0.0, 0.0)
    assert deltas["real+100"]["interval"][0] > 0 and deltas["real+100"]["reference"] == "real"
    headline = summary(fake_metrics(arms, deltas))
    assert headline["delta_auroc/real+50"] == 0.0
    assert (
        headline["delta_auroc/real+100_low"] > 0
        and headline["delta_auroc/real+100_high"] > headline["delta_auroc/real+100"]
    )
    assert headline["fid_equal_n/generated"] == 5.0 and headline["fid_equal_n/real_floor"] is None


def fake_metrics(arms: dict, deltas: dict) -> dict:
    return {
        "classifier": arms,
        "delta_auroc": deltas,
        "fidelity": {
            "fid": {"fid": 9.0, "kid_mean": 0.01},
            "ssim_real_vs_generated": {"mean": 0.5},
            "fid_equal_n": {"real_a_vs_generated_b": {"fid": 5.0}, "real_a_vs_real_b": "not computed: x"},
        },
        "conditional_fidelity": {"augmentation_prompts": {"macro": 0.6}},
        "memorisation": {"share_below": 0.0},
        "extractor": "toy",
    }


# --- the equal-N FID floor ----------------------------------------------------------------------


def test_fid_floor_halves_are_equal_in_size_and_disjoint_by_patient():
    from raygen.metrics.resampling import disjoint_halves

    groups = np.repeat(np.arange(40), np.random.default_rng(0).integers(1, 6, 40))  # 1-5 images per patient
    a, b = disjoint_halves(groups, seed=0)
    assert len(a) == len(b) > 0.4 * len(groups)  # equal N, and little is thrown away
    assert not set(groups[a]) & set(groups[b])
    assert len(set(a)) == len(a) and np.array_equal(a, np.sort(a))
    assert all(np.array_equal(x, y) for x, y in zip((a, b), disjoint_halves(groups, seed=0)))  # seeded

    rng = np.random.default_rng(1)
    per_report = pd.DataFrame({"subject_id": groups, "study_id": np.arange(len(groups))})
    real, generated = rng.normal(size=(len(groups), 8)), rng.normal(size=(len(groups), 8)) + 0.5
    floor = equal_n_floor(
        real, generated, patient_halves(per_report, 0), "toy", kid_subsets=2, kid_subset_size=100, seed=0
    )
    assert floor["split_by"] == "subject_id" and floor["n_per_half"] == len(a)
    for key in ("real_a_vs_generated_b", "real_a_vs_real_b"):
        assert floor[key]["n_real"] == floor[key]["n_fake"] == len(a)
    assert floor["real_a_vs_generated_b"]["fid"] > floor["real_a_vs_real_b"]["fid"]  # the shift shows


@pytest.mark.parametrize(("subjects", "reason"), [([7, 7, 7], "1 subject_id value"), ([1, 2, 2], "1 real vs 1")])
def test_fid_floor_too_small_is_recorded_not_raised(subjects, reason):
    per_report = pd.DataFrame({"subject_id": subjects})
    feats = np.random.default_rng(0).normal(size=(len(subjects), 4))
    floor = equal_n_floor(
        feats, feats, patient_halves(per_report, 0), "toy", kid_subsets=2, kid_subset_size=100, seed=0
    )
    for key in ("real_a_vs_generated_b", "real_a_vs_real_b"):
        assert floor[key].startswith("not computed: ") and reason in floor[key]
    assert (
        summary(fake_metrics({}, {}) | {"fidelity": {**fake_metrics({}, {})["fidelity"], "fid_equal_n": floor}})[
            "fid_equal_n/real_floor"
        ]
        is None
    )


def test_real_beside_generated_takes_the_first_report_of_each_finding(tmp_path):
    truth = {f"true_{c}": [0, 0, 0, 0] for c in CLASSES}
    truth[f"true_{CLASSES[3]}"] = [0, 1, 0, 1]  # rows 1 and 3 have it: row 1, the first, is shown
    truth[f"true_{CLASSES[0]}"] = [0, 0, 1, 0]
    per_report = pd.DataFrame({"text": ["a", "b", "c", "d"], **truth})
    assert plots.rows_per_finding(per_report) == [(CLASSES[0], 2), (CLASSES[3], 1)]  # CLASSES order, none absent
    unlabelled = per_report[["text"]]
    assert plots.rows_per_finding(unlabelled) == [(f"report {i}", i) for i in range(4)]

    real, generated = torch.rand(4, 1, 16, 16), [torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)]
    plots.plot_real_beside_generated(per_report, real, generated, tmp_path / "figure.png")
    from PIL import Image

    with Image.open(tmp_path / "figure.png") as figure:
        width, height = figure.size
    assert width > height, "two finding rows, three image columns"
    plots.plot_real_beside_generated(per_report, real, generated, tmp_path / "with.png", torch.rand(4, 1, 16, 16))
    with Image.open(tmp_path / "with.png") as figure:
        assert figure.size[0] > width and figure.size[1] == height, "a reconstruction column more"


def test_diversity_has_a_real_reference_on_the_floors_patient_disjoint_pairs():
    from raygen.metrics.fidelity import fidelity
    from raygen.metrics.image_sets import EvaluationImages
    from raygen.metrics.image_similarity import ms_ssim

    torch.manual_seed(0)
    per_report = pd.DataFrame({"subject_id": np.repeat(np.arange(12), 2)})
    real = torch.rand(24, 1, 32, 32)
    generated = [real.clone(), real.clone()]  # two identical generations: MS-SSIM between seeds is 1
    images = EvaluationImages(32, per_report, real, generated, per_report.iloc[:0], torch.zeros(0, 1, 32, 32), [], {})
    feats = {
        "real": np.random.default_rng(0).normal(size=(24, 4)),
        "gen0": np.random.default_rng(1).normal(size=(24, 4)),
    }
    result = fidelity(images, feats, "toy", 2, 100, seed=0, msssim_kernel=3, msssim_scales=2)
    halves = patient_halves(per_report, seed=0)
    a, b = halves.a, halves.b
    assert not set(halves.groups[a]) & set(halves.groups[b])
    assert result["ms_ssim_between_seeds"]["value"] == pytest.approx(1.0, abs=1e-4)
    pairs = result["ms_ssim_real_pairs"]
    assert pairs["n"] == len(a) == result["fid_equal_n"]["n_per_half"]
    assert pairs["value"] == pytest.approx(ms_ssim(real[a], real[b], 3, 2).value) and pairs["value"] < 0.5
    assert summary_of_fidelity(result)["ms_ssim_real_pairs"] == pairs["value"]


def test_same_text_pairs_join_different_patients_with_one_report_text_once():
    from raygen.metrics.fidelity import same_text_pairs

    per_report = pd.DataFrame(
        {
            "subject_id": [1, 1, 2, 3, 4, 5, 6],
            "text": ["effusion", "effusion", "effusion", "normal", "normal", "edema", "effusion"],
        }
    )
    a, b = same_text_pairs(per_report)
    # "effusion": rows 0 (patient 1) and 2 (patient 2), then row 1 (patient 1) and 6; "normal": 3 and 4;
    # "edema" has one row: no pair. Row 1 never pairs with row 0, the same patient.
    assert list(zip(a.tolist(), b.tolist())) == [(0, 2), (1, 6), (3, 4)]
    assert not same_text_pairs(per_report.assign(text=[str(i) for i in range(7)]))[0].size


def test_diversity_within_one_text_is_measured_like_for_like():
    from raygen.metrics.fidelity import fidelity
    from raygen.metrics.image_sets import EvaluationImages
    from raygen.metrics.image_similarity import ms_ssim

    torch.manual_seed(1)
    texts = ["effusion", "effusion", "normal", "normal", "edema", "pneumonia"] * 2
    per_report = pd.DataFrame({"subject_id": np.arange(12), "text": texts})
    real = torch.rand(12, 1, 32, 32)
    generated = [real.clone(), real.clone()]  # the two seeds agree: MS-SSIM 1 between them
    images = EvaluationImages(32, per_report, real, generated, per_report.iloc[:0], torch.zeros(0, 1, 32, 32), [], {})
    feats = {
        "real": np.random.default_rng(0).normal(size=(12, 4)),
        "gen0": np.random.default_rng(1).normal(size=(12, 4)),
    }
    same = fidelity(images, feats, "toy", 2, 100, seed=0, msssim_kernel=3, msssim_scales=2)["ms_ssim_same_text"]
    # Texts in order of first appearance, rows in order within each: effusion (0, 1), (6, 7); normal
    # (2, 3), (8, 9); edema (4, 10); pneumonia (5, 11).
    assert same["n_pairs"] == 6 and same["texts"] == 4
    a, b = [0, 6, 2, 8, 4, 5], [1, 7, 3, 9, 10, 11]
    assert same["real_pairs"]["value"] == pytest.approx(ms_ssim(real[a], real[b], 3, 2).value)
    assert same["real_pairs"]["value"] < 0.5
    assert same["between_seeds"]["value"] == pytest.approx(1.0, abs=1e-4) and same["between_seeds"]["n"] == 12
    summary_keys = summary_of_fidelity({"ms_ssim_same_text": same})
    assert summary_keys["ms_ssim_same_text/real_pairs"] == same["real_pairs"]["value"]
    assert summary_keys["ms_ssim_same_text/between_seeds"] == same["between_seeds"]["value"]
    lone = images.per_report.assign(text=[str(i) for i in range(12)])
    alone = fidelity(
        EvaluationImages(32, lone, real, generated, lone.iloc[:0], torch.zeros(0, 1, 32, 32), [], {}),
        feats,
        "toy",
        2,
        100,
        seed=0,
        msssim_kernel=3,
        msssim_scales=2,
    )
    assert alone["ms_ssim_same_text"].startswith("not computed")


def summary_of_fidelity(fidelity_section):
    metrics = fake_metrics({}, {})
    return summary(metrics | {"fidelity": {**metrics["fidelity"], **fidelity_section}})


# --- the tokenizer's share ----------------------------------------------------------------------


def test_tokenizer_limit_and_decoder_gap_use_the_floors_halves():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(30), 2)
    per_report = pd.DataFrame({"subject_id": groups})
    real = rng.normal(size=(60, 6))
    reconstructed = 0.5 * real + 0.8  # the tokenizer squeezes and shifts every image alike
    generated = reconstructed + rng.normal(scale=0.05, size=(60, 6))  # a decoder that matches it
    halves = patient_halves(per_report, 0)
    floor = equal_n_floor(real, generated, halves, "toy", 2, 100, 0, reconstructed)
    a, b = halves.a, halves.b
    for key in ("real_a_vs_reconstructed_b", "reconstructed_a_vs_generated_b", "reconstructed_a_vs_reconstructed_b"):
        assert floor[key]["n_real"] == floor[key]["n_fake"] == len(a)
    # FID(0.5 A + c, 0.5 B + c) = 0.25 FID(A, B): the reconstructed floor compares reconstructions, not reals.
    recon_floor = floor["reconstructed_a_vs_reconstructed_b"]["fid"]
    assert recon_floor == pytest.approx(0.25 * floor["real_a_vs_real_b"]["fid"], rel=1e-6)
    assert floor["real_a_vs_reconstructed_b"]["fid"] > 2 * floor["real_a_vs_real_b"]["fid"]  # the tokenizer's cost
    gap = floor["reconstructed_a_vs_generated_b"]["fid"]
    assert gap < floor["real_a_vs_generated_b"]["fid"] / 2  # inside the tokenizer's space the decoder is close
    from raygen.metrics.fid import compute_fid

    assert gap == pytest.approx(compute_fid(reconstructed[a], generated[b], "toy", 2, 100, seed=0).fid)
    headline = summary_of_fidelity({"fid_equal_n": floor})
    assert headline["fid_equal_n/reconstructed"] == floor["real_a_vs_reconstructed_b"]["fid"]
    assert headline["fid_equal_n/generated_vs_reconstructed"] == gap

    too_small = equal_n_floor(real[:2], real[:2], patient_halves(per_report.iloc[:2], 0), "toy", 2, 100, 0, real[:2])
    assert sum(isinstance(v, str) and v.startswith("not computed") for v in too_small.values()) == 5


def test_reconstructions_are_scored_like_generations():
    from raygen.metrics.fidelity import fidelity
    from raygen.metrics.image_sets import EvaluationImages

    torch.manual_seed(1)
    per_report = pd.DataFrame({"subject_id": np.repeat(np.arange(12), 2)})
    real = torch.rand(24, 1, 32, 32)
    generated = [torch.rand(24, 1, 32, 32), torch.rand(24, 1, 32, 32)]
    empty = torch.zeros(0, 1, 32, 32)
    reconstructed = (real * 0.5 + torch.rand(24, 1, 32, 32) * 0.2).clamp(0, 1)  # blurred stand-ins, not the reals
    images = EvaluationImages(32, per_report, real, generated, per_report.iloc[:0], empty, [], {}, reconstructed)
    rng = np.random.default_rng(0)
    feats = {"real": rng.normal(size=(24, 4)), "gen0": rng.normal(size=(24, 4))}
    feats["recon"] = feats["real"] + rng.normal(3.0, 0.3, size=(24, 4))
    result = fidelity(images, feats, "toy", 2, 100, seed=0, msssim_kernel=3, msssim_scales=2)
    from raygen.metrics.fid import compute_fid
    from raygen.metrics.image_similarity import ms_ssim, ssim

    a, b = patient_halves(per_report, 0).a, patient_halves(per_report, 0).b
    assert result["ssim_real_vs_reconstructed"]["mean"] == pytest.approx(float(ssim(real, reconstructed).mean()))
    assert result["ssim_real_vs_reconstructed"]["mean"] < 0.9
    pairs = ms_ssim(reconstructed[a], reconstructed[b], 3, 2).value
    assert result["ms_ssim_reconstructed_pairs"]["value"] == pytest.approx(pairs)
    assert pairs != pytest.approx(result["ms_ssim_real_pairs"]["value"])
    floor = result["fid_equal_n"]
    expected = compute_fid(feats["real"][a], feats["recon"][b], "toy", 2, 100, seed=0).fid
    assert floor["real_a_vs_reconstructed_b"]["fid"] == pytest.approx(expected)
    assert expected > floor["real_a_vs_real_b"]["fid"]
    headline = summary_of_fidelity(result)
    assert headline["ssim_reconstructed"] == result["ssim_real_vs_reconstructed"]["mean"]
    assert headline["ms_ssim_reconstructed_pairs"] == result["ms_ssim_reconstructed_pairs"]["value"]
    assert "ssim_reconstructed" not in summary_of_fidelity({})  # older folders without reconstructions


def test_a_missing_reconstruction_skips_the_reference_never_a_pair(tmp_path):
    from raygen.generation.synthetic_sets import write_pngs

    rows = []
    for i in range(3):
        write_pngs(torch.rand(1, 1, 8, 8) * 2 - 1, [tmp_path / "jpg" / f"{i}.png"])
        for name in ("seed0", "reconstructed"):
            if not (name == "reconstructed" and i == 1):  # row 1's reconstruction is missing
                write_pngs(torch.rand(1, 1, 8, 8) * 2 - 1, [tmp_path / "syn" / name / f"{i}.png"])
        rows.append({"real_path": f"{i}.png", "path_0": f"seed0/{i}.png", "recon_path": f"reconstructed/{i}.png"})
    unreadable: dict = {}
    frame, real, gen, recon = image_sets._per_report_pairs(
        pd.DataFrame(rows), tmp_path / "syn", tmp_path / "jpg", 8, 1, unreadable
    )
    assert len(frame) == len(real) == len(gen[0]) == 3 and unreadable["per_report_pairs_dropped"] == 0
    assert recon is None and unreadable["reconstructed"] == 1  # never a pair less, the reference skipped
    (tmp_path / "syn" / "seed0" / "1.png").unlink()  # now row 1 is dropped, and the rest have reconstructions
    unreadable = {}
    frame, real, gen, recon = image_sets._per_report_pairs(
        pd.DataFrame(rows), tmp_path / "syn", tmp_path / "jpg", 8, 1, unreadable
    )
    assert len(frame) == len(recon) == 2 and list(frame["real_path"]) == ["0.png", "2.png"]
    assert unreadable == {"real_heldout": 0, "per_report_pairs_dropped": 1, "reconstructed": 0}
