"""The synthesize stage's plans (who gets which prompt and label) and its resumable, seeded generation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from raygen.config import ConfigError
from raygen.data.augment_recipe import class_counts, half_arm
from raygen.data.classifier_data import read_synthetic_manifest, synthetic_for_arm
from raygen.data.images import load_pngs, write_png
from raygen.data.labels import CLASSES
from raygen.data.synthetic_plan import (
    aug_class_counts,
    augmentation_plan,
    per_report_plan,
    prompt_kind,
    training_impressions,
)
from raygen.generation.sampler import SamplerConfig, TrainedDecoder
from raygen.generation.synthetic_sets import claim_partial, generate_set
from raygen.stages import synthesize as syn
from tests.test_generation import D, FakeVQ, L, tiny_model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models only."""


def classifier_manifest(n_train: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + 10):
        labels = (rng.random(len(CLASSES)) < np.linspace(0.05, 0.5, len(CLASSES))).astype(int)
        labels[i % len(CLASSES)] = 1  # every class has positives
        rows.append(
            {
                "dicom_id": f"d{i}",
                "subject_id": 100 + i,
                "study_id": 5000 + i,
                "split": "train" if i < n_train else "test",
                "view": "AP",
                "path": f"files/{i}.jpg",
                **dict(zip(CLASSES, labels)),
            }
        )
    return pd.DataFrame(rows)


def test_class_name_plan_follows_the_recipe_with_one_hot_labels():
    manifest = classifier_manifest()
    plan = augmentation_plan(manifest, syn.SynthesizeParams())
    train = manifest[manifest["split"] == "train"]
    expected = class_counts(train[list(CLASSES)].sum().tolist(), len(train))
    got = plan.groupby("prompt_class", sort=False).size().reindex(list(CLASSES)).tolist()
    assert got == expected and len(plan) <= len(train)
    assert (plan[list(CLASSES)].sum(axis=1) == 1).all()
    assert all(plan.loc[i, row.prompt_class] == 1 for i, row in plan.iterrows())
    assert list(plan["prompt_class"]) == sorted(plan["prompt_class"], key=list(CLASSES).index)  # grouped
    assert plan["path"].is_unique and set(plan["prompt"]) == set(CLASSES)  # paper: the bare class name


def test_template_and_size_override():
    manifest = classifier_manifest()
    p = syn.SynthesizeParams(class_template="Chest radiograph with {lower}.", aug_total=200)
    plan = augmentation_plan(manifest, p)
    assert "Chest radiograph with pleural effusion." in set(plan["prompt"])
    assert 190 < len(plan) <= 200


def test_impression_plan_keeps_the_source_studies_labels():
    manifest = classifier_manifest()
    generator = pd.DataFrame(
        {"study_id": manifest["study_id"], "text": [f"report {i}" for i in range(len(manifest))], "split": "train"}
    )
    impressions = training_impressions(manifest, generator)
    assert set(impressions["study_id"]) == set(manifest.loc[manifest["split"] == "train", "study_id"])
    plan = augmentation_plan(manifest, syn.SynthesizeParams(prompts="impression"), impressions)
    by_study = manifest.set_index("study_id")
    for _, row in plan.iterrows():
        source = by_study.loc[row["source_study_id"]]
        assert source[row["prompt_class"]] == 1  # prompted with a study positive for its class
        assert [row[c] for c in CLASSES] == [source[c] for c in CLASSES]
        assert row["prompt"] == f"report {row['source_study_id'] - 5000}"


def test_impression_prompts_give_a_class_the_recipe_leaves_empty_no_rows_and_a_promptless_one_an_error():
    manifest = classifier_manifest()
    generator = pd.DataFrame({"study_id": manifest["study_id"], "text": "report", "split": "train"})
    impressions = training_impressions(manifest, generator)
    params = syn.SynthesizeParams(prompts="impression")
    tiny = augmentation_plan(manifest, replace(params, aug_total=10), impressions)  # 10 images, 10 classes: floors to 0
    counts = aug_class_counts(tiny)
    assert 0 in counts.values() and len(tiny) == sum(counts.values()) > 0
    without_texts = impressions[impressions["Fracture"] == 0]  # positives exist, but none has an impression
    with pytest.raises(ValueError, match="training impressions positive for Fracture; none found"):
        augmentation_plan(manifest, params, without_texts)


def test_a_total_too_small_for_any_class_is_a_clear_error_not_an_empty_set():
    manifest = classifier_manifest()
    for total in (1, 5):
        with pytest.raises(ValueError, match=f"aug_total {total}: .* floors every class to 0 images"):
            augmentation_plan(manifest, syn.SynthesizeParams(aug_total=total))


def test_the_stage_refuses_an_unfillable_recipe_before_it_loads_a_model(tmp_path):
    """The checkpoint does not exist: had the models loaded first, the error would name it instead."""
    from tests.test_user_errors import params_with

    def edit(raw):
        raw["synthesize"].update(aug_total=5, prompts="class_name")

    manifest = classifier_manifest()
    manifest.to_csv(tmp_path / "classifier.csv", index=False)
    test = manifest[manifest["split"] == "test"].assign(text="Small left pleural effusion.")
    test[["dicom_id", "subject_id", "study_id", "view", "path", "text"]].to_csv(tmp_path / "fid.csv", index=False)
    test[["dicom_id", "path"]].to_csv(tmp_path / "generator.csv", index=False)
    folders = {name: str(tmp_path / name) for name in ("checkpoint", "vqgan", "tokens", "text", "out")}
    args = ["--params", str(params_with(tmp_path, edit)), "--profile", "demo"]
    args += [f"--{name}={path}" for name, path in folders.items()]
    args += [f"--{name}={tmp_path / name}.csv" for name in ("fid", "generator", "classifier")]
    with pytest.raises(ConfigError, match="aug_total 5: .* floors every class to 0 images"):
        syn.main(args)
    assert not (tmp_path / "out").exists()


def test_a_manifest_says_which_prompts_made_it_as_written_and_read_back(tmp_path):
    """evaluate and Table 2 name the prompt kind from the manifest, not from params that may have changed since."""
    manifest = classifier_manifest()
    generator = pd.DataFrame({"study_id": manifest["study_id"], "text": "report", "split": "train"})
    impressions = training_impressions(manifest, generator)
    for kind in ("class_name", "impression"):
        plan = augmentation_plan(manifest, syn.SynthesizeParams(prompts=kind), impressions)
        plan.to_csv(tmp_path / f"{kind}.csv", index=False)
        assert prompt_kind(read_synthetic_manifest(tmp_path / f"{kind}.csv")) == kind


def test_half_arm_groups_impression_rows_by_prompt_class_as_meta_counts_them(tmp_path):
    manifest = classifier_manifest()
    generator = pd.DataFrame(
        {"study_id": manifest["study_id"], "text": [f"report {i}" for i in range(len(manifest))], "split": "train"}
    )
    plan = augmentation_plan(
        manifest, syn.SynthesizeParams(prompts="impression"), training_impressions(manifest, generator)
    )
    plan.to_csv(tmp_path / "aug_100.csv", index=False)
    rows = read_synthetic_manifest(tmp_path / "aug_100.csv")
    first_positive = np.asarray(CLASSES)[rows[list(CLASSES)].to_numpy().argmax(axis=1)]
    assert (first_positive != rows["prompt_class"]).any(), "the two groupings must disagree for this test"

    train = manifest[manifest["split"] == "train"]
    recipe = half_arm(class_counts(train[list(CLASSES)].sum().tolist(), len(train)))
    meta_half = {c: n // 2 for c, n in aug_class_counts(plan).items()}  # meta.json's aug_50_per_class
    half = synthetic_for_arm(rows, "real+50")
    got = half.groupby("prompt_class").size().reindex(list(CLASSES), fill_value=0).tolist()
    assert got == recipe == list(meta_half.values())
    assert len(half) == sum(meta_half.values())  # meta.json's aug_50_images
    # The first-positive-label grouping (the fallback without the column) would train on other counts.
    fallback = synthetic_for_arm(rows.drop(columns="prompt_class"), "real+50")
    assert (
        rows.loc[fallback.index, "prompt_class"].value_counts().reindex(list(CLASSES), fill_value=0).tolist() != recipe
    )


def test_per_report_plan_has_one_path_per_seed_and_the_truth():
    fid = pd.DataFrame(
        {
            "dicom_id": ["a", "b"],
            "subject_id": [1, 2],
            "study_id": [10, 20],
            "view": "AP",
            "path": ["files/a.jpg", "files/b.jpg"],
            "text": ["x", "y"],
            "true_Edema": [1, 0],
        }
    )
    plan = per_report_plan(fid, [0, 7], 0)
    assert list(plan["path_1"]) == ["images/per_report/seed7/a.png", "images/per_report/seed7/b.png"]
    assert list(plan["real_path"]) == ["files/a.jpg", "files/b.jpg"] and list(plan["true_Edema"]) == [1, 0]
    assert list(plan["recon_path"]) == [f"images/per_report/reconstructed/{d}.png" for d in ("a", "b")]
    assert len(per_report_plan(fid, [0, 1], 1)) == 1


def test_params_validate():
    with pytest.raises(ValueError, match="count_rule"):
        syn.SynthesizeParams(count_rule="sqrt")
    with pytest.raises(ValueError, match="distinct"):
        syn.SynthesizeParams(per_report_seeds=[3, 3])
    with pytest.raises(ValueError, match="class_template"):
        syn.SynthesizeParams(class_template="an X-ray")


def _generate(folder, states, lengths, seed=0):
    trained = TrainedDecoder(tiny_model(), torch.zeros(L, D), 1, {})
    paths = [folder / f"{i}.png" for i in range(len(states))]
    made = generate_set(
        trained, FakeVQ(), states, lengths, paths, SamplerConfig(steps=2, batch_size=2), seed, 0, None, "test"
    )
    return paths, made


def test_generation_is_seeded_and_a_resumed_run_is_identical(tmp_path):
    g = torch.Generator().manual_seed(0)
    states, lengths = torch.randn(5, L, D, generator=g).half(), torch.tensor([6, 3, 1, 2, 4])
    full, made = _generate(tmp_path / "full", states, lengths)
    assert made == 5 and all(p.is_file() for p in full)
    pixels = [load_pngs([p]) for p in full]

    # Killed after the first batch: the second run regenerates only what is missing, bit for bit.
    resumed, _ = _generate(tmp_path / "resumed", states, lengths)
    for p in resumed[2:]:
        p.unlink()
    _, made = _generate(tmp_path / "resumed", states, lengths)
    assert made == 3
    assert all(torch.equal(a, load_pngs([p])) for a, p in zip(pixels, resumed))

    other, _ = _generate(tmp_path / "other", states, lengths, seed=1)
    assert not all(torch.equal(a, load_pngs([p])) for a, p in zip(pixels, other))


def test_partial_folder_is_discarded_when_inputs_change(tmp_path):
    partial = tmp_path / "images.partial"
    claim_partial(partial, {"params": 1})
    (partial / "kept.png").write_bytes(b"x")
    claim_partial(partial, {"params": 1})
    assert (partial / "kept.png").exists()
    claim_partial(partial, {"params": 2})
    assert not (partial / "kept.png").exists()


def test_png_round_trip_is_eight_bit_grey(tmp_path):
    image = torch.linspace(-1, 1, 16).view(1, 4, 4).repeat(3, 1, 1)
    write_png(image, tmp_path / "x.png")
    back = load_pngs([tmp_path / "x.png"])
    assert back.shape == (1, 1, 4, 4)
    assert torch.allclose(back[0, 0], (image[0] + 1) / 2, atol=1 / 255)


def test_sharded_generation_equals_one_process(tmp_path):
    g = torch.Generator().manual_seed(3)
    states, lengths = torch.randn(7, L, D, generator=g).half(), torch.tensor([6, 3, 1, 2, 4, 5, 6])
    single, _ = _generate(tmp_path / "single", states, lengths)
    trained = TrainedDecoder(tiny_model(), torch.zeros(L, D), 1, {})
    paths = [tmp_path / "sharded" / f"{i}.png" for i in range(7)]
    made = [
        generate_set(
            trained,
            FakeVQ(),
            states,
            lengths,
            paths,
            SamplerConfig(steps=2, batch_size=2),
            0,
            0,
            None,
            "test",
            rank=r,
            world=2,
        )
        for r in (1, 0)
    ]  # batches 1, 3 then 0, 2
    assert made == [3, 4]
    assert all(torch.equal(load_pngs([a]), load_pngs([b])) for a, b in zip(single, paths))


def test_reconstructions_decode_each_held_out_images_own_tokens(tmp_path):
    from raygen.data.token_cache import write_index
    from raygen.generation.render import tokens_to_images
    from raygen.generation.synthetic_sets import PARTIAL, SetGenerator
    from tests.test_generation import GRID, V

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    ids = torch.randint(0, V, (3, GRID[0] * GRID[1]), generator=torch.Generator().manual_seed(0))
    np.save(tokens / "tokens.npy", ids.numpy().astype(np.int16))
    write_index(tokens / "index.csv", ["c", "a", "b"])
    plan = per_report_plan(
        pd.DataFrame({"dicom_id": ["a", "gone", "c"], "path": ["a.jpg", "gone.jpg", "c.jpg"], "text": "x"}), [0], 0
    )
    trained = TrainedDecoder(tiny_model(), torch.zeros(L, D), 1, {})
    generator = SetGenerator(trained, FakeVQ(), SamplerConfig(batch_size=2), "fp32", tmp_path, torch.device("cpu"))
    assert generator.reconstructions(tokens, plan) == 2  # "gone" has no tokens: the tokenizer could not read it
    made = tmp_path / PARTIAL / "per_report" / "reconstructed"
    assert sorted(p.name for p in made.iterdir()) == ["a.png", "c.png"]
    for dicom, row in (("a", 1), ("c", 0)):
        expected = tokens_to_images(FakeVQ(), ids[row : row + 1])[:, :1].add(1).div(2)
        assert torch.allclose(load_pngs([made / f"{dicom}.png"]), expected, atol=1 / 255)
    assert generator.reconstructions(tokens, plan) == 0  # a resumed run keeps them
