"""The demo's pinned parts (weights/demo): what is committed, and the command that re-creates it.

Packing and loading are tested on tiny models in tests/test_vqgan.py (the VQ-GAN) and
tests/test_evaluate.py (the FID network); here, the committed files themselves.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from raygen.config import load_section
from raygen.models import pinned
from raygen.stages.vqgan import VqganParams
from raygen.tools import demo_weights as tool

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "weights" / "demo"


def test_every_committed_pinned_file_matches_its_hash():
    assert sorted(pinned.read_sums(FOLDER)) == sorted(pinned.FILES)
    for name in pinned.FILES:
        assert pinned.verified(FOLDER, name).stat().st_size < 40e6, name  # small enough for git


def test_the_pinned_vqgan_is_the_one_the_demo_params_describe():
    from raygen.models.taming_config import read_taming_config

    found = read_taming_config(FOLDER / pinned.VQGAN_CONFIG)[0]
    assert found == load_section(REPO / "params.yaml", "vqgan", VqganParams, "demo").model_config()


def test_provenance_names_each_parts_recipe_and_its_disjoint_dataset():
    record = json.loads((FOLDER / pinned.PROVENANCE).read_text())
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert record["command"] == pinned.RECREATE
    for stage in ("vqgan", "train_classifier", "train_decoder"):  # the commit each part was trained at, dirty or not
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["commit"][stage]), record["commit"]
    datasets = tool.dataset_records(REPO / "params.yaml", tool.check_disjoint(REPO / "params.yaml"))
    for part, key in tool.PROVENANCE_KEYS.items():
        assert record[key]["profile"] == tool.PART_PROFILES[part]
        assert record[key]["dataset"] == datasets[part]  # the seed and size params.yaml names today
        assert record[key]["dataset"]["seed"] != raw["download"]["demo"]["seed"]
    assert record["vqgan"]["held_out"]["ssim"] > 0 and record["fid_network"]["held_out"]["val_macro_auroc"] > 0.5
    assert record["decoder"]["params"]["init"] == "scratch"


@pytest.mark.parametrize("profile", [tool.PROFILE, tool.DECODER_PROFILE])
def test_each_recipe_dataset_shares_no_patient_study_or_image_with_the_demo(tmp_path, profile):
    counts = tool.check_disjoint(REPO / "params.yaml")[profile]
    assert counts["patients"] > 0 and counts["images"] >= counts["studies"] > 0
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profiles"][profile]["download"]["demo"] = raw["download"]["demo"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit, match=f"the {profile} dataset shares ids with the demo's"):
        tool.check_disjoint(tmp_path / "params.yaml")


DATASET_STEPS = ["download", "sections", "cohort"]
DECODER_STEPS = [
    *(f"decoder_{name}" for name in DATASET_STEPS),
    "install_vqgan",
    "tokenize",
    "embed_text",
    "train_decoder",
]
ALL_STEPS = [*DATASET_STEPS, "vqgan", "train_classifier", *DECODER_STEPS]


def test_the_recipe_runs_the_pipelines_own_stages_under_each_parts_profile(tmp_path):
    steps = tool.stage_commands(Path("params.yaml"), tmp_path, FOLDER)
    assert [step.stage for step in steps] == ALL_STEPS
    for step in steps:
        stage = step.stage.removeprefix("decoder_").replace("install_vqgan", "vqgan")
        assert step.command[2:5] == ["raygen", stage, "--params"] and step.done.is_relative_to(step.out)
        # The decoder learns the tokens of the packed VQ-GAN as the demo installs it (profile demo, from --out),
        # on a dataset of its own in work/decoder.
        in_decoder = step.stage in DECODER_STEPS
        profile = "demo" if step.stage == "install_vqgan" else tool.DECODER_PROFILE if in_decoder else tool.PROFILE
        assert step.command[6:8] == ["--profile", profile]
        assert step.out.is_relative_to(tmp_path / "decoder") == in_decoder, step.stage
    install = steps[ALL_STEPS.index("install_vqgan")].command
    assert install[install.index("--demo-weights") + 1] == str(FOLDER)
    first, decoder = tool.recipe_steps(Path("params.yaml"), tmp_path, FOLDER, ("decoder",))
    assert [s.stage for s in first] == DECODER_STEPS[:3]  # the VQ-GAN's dataset is not rendered for it
    assert [s.stage for s in decoder] == DECODER_STEPS[3:]


REAL_STAGE_COMMANDS = tool.stage_commands


def fake_steps(work, fail=()):
    """The recipe's steps with commands that only record that they ran (and write their done file)."""
    import sys

    steps = []
    for step in REAL_STAGE_COMMANDS(Path("params.yaml"), work, FOLDER):
        code = (
            f"import pathlib, sys; p = pathlib.Path({str(step.done)!r}); p.parent.mkdir(parents=True, exist_ok=True);"
            f"open({str(work / 'ran.txt')!r}, 'a').write({step.stage!r} + '\\n');"
            f"sys.exit(1) if {step.stage in fail} else p.write_text('done')"
        )
        steps.append(replace(step, command=[sys.executable, "-c", code]))  # the same recipe, a stand-in command
    return steps


def test_steps_rerun_exactly_when_their_recipe_or_upstream_changed(tmp_path, monkeypatch):
    work = tmp_path / "work"
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())

    def run(edit=None, fail=(), profile=tool.PROFILE):
        if edit:
            edit(raw["profiles"][profile])
        params.write_text(yaml.safe_dump(raw))
        (work / "ran.txt").unlink(missing_ok=True)
        monkeypatch.setattr(tool, "stage_commands", lambda p, w, o: fake_steps(w, fail))
        first, decoder = tool.recipe_steps(params, work, FOLDER, tuple(tool.PARTS))
        ran = set()
        ok = tool.run_steps(params, work, first, FOLDER, ran) and tool.run_steps(params, work, decoder, FOLDER, ran)
        return ok, (work / "ran.txt").read_text().split() if (work / "ran.txt").exists() else []

    assert run() == (True, ALL_STEPS)
    assert run() == (True, [])  # same params, same code: nothing runs
    records = json.loads((work / "recipes.json").read_text())
    assert all(r["finished"] and r["commit"] for r in records.values())  # each step says where it ran
    assert run(lambda p: p["train_classifier"].update(epochs=9)) == (True, ["train_classifier"])
    decoder = tool.DECODER_PROFILE
    assert run(lambda p: p["train_decoder"].update(steps=9), profile=decoder) == (True, ["train_decoder"])
    assert run(lambda p: p["tokenize"].update(precision="bf16"), profile=decoder) == (
        True,
        ["tokenize", "train_decoder"],
    )
    assert run(lambda p: p["cohort"].update(seed=5)) == (True, ["cohort", "vqgan", "train_classifier"])
    assert run(lambda p: p["cohort"].update(seed=5), profile=decoder) == (True, DECODER_STEPS[2:])
    # A step that fails keeps its folder; run again with the same recipe, it resumes there.
    marker = work / "results/vqgan/train_state.pt"
    assert run(lambda p: p["vqgan"].update(steps=7), fail=("vqgan",)) == (False, ["vqgan"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("state")
    assert run() == (True, ["vqgan"]) and marker.exists()
    # Another recipe for a killed step starts afresh: its folder is removed first.
    assert run(lambda p: p["vqgan"].update(steps=8), fail=("vqgan",)) == (False, ["vqgan"])
    marker.write_text("state")
    assert run(lambda p: p["vqgan"].update(steps=9)) == (True, ["vqgan"]) and not marker.exists()


def test_the_decoder_relearns_when_the_packed_vqgan_changes(tmp_path, monkeypatch):
    """The install step's recipe holds the packed files' hashes: a new VQ-GAN in --out reruns the decoder's
    steps even when no params or code changed; and --part vqgan without the decoder is refused."""
    out = tmp_path / "pinned"
    shutil.copytree(FOLDER, out)
    work = tmp_path / "work"
    monkeypatch.setattr(tool, "stage_commands", lambda p, w, o: fake_steps(w))

    def run():
        (work / "ran.txt").unlink(missing_ok=True)
        first, decoder = tool.recipe_steps(Path("params.yaml"), work, out, ("decoder",))
        ran = set()
        assert tool.run_steps(Path("params.yaml"), work, first + decoder, out, ran)
        return (work / "ran.txt").read_text().split() if (work / "ran.txt").exists() else []

    assert run() == DECODER_STEPS
    assert run() == []
    (out / pinned.VQGAN_CHECKPOINT).write_bytes(b"another VQ-GAN")
    (out / pinned.SUMS).write_text(pinned.write_sums(out))
    assert run() == ["install_vqgan", "tokenize", "train_decoder"]  # the text states do not depend on it
    (out / pinned.DECODER).write_bytes(b"a decoder of the old VQ-GAN's tokens")
    with pytest.raises(SystemExit, match="re-create it too"):
        tool.check_parts(out, ("vqgan",))
    tool.check_parts(out, ("vqgan", "decoder"))


def test_one_part_is_re_created_and_the_other_kept_exactly(tmp_path, monkeypatch):
    """``--part vqgan`` trains only what the VQ-GAN needs, keeps the FID network's bytes (after checking
    them against SHA256SUMS) and carries its provenance entry over, so the demo's ruler stays the same."""
    import torch

    from raygen.checkpoint import save_checkpoint
    from raygen.models.pinned import PinnedHashError

    work, out = tmp_path / "work", tmp_path / "pinned"
    monkeypatch.setattr(tool, "stage_commands", lambda p, w, o: fake_steps(w))
    first, decoder = tool.recipe_steps(Path("params.yaml"), work, FOLDER, ("vqgan",))
    assert tool.run_steps(Path("params.yaml"), work, first + decoder, FOLDER, set())
    assert (work / "ran.txt").read_text().split() == ["download", "sections", "cohort", "vqgan"]

    def trained(value):  # what the recipe's two training steps leave behind
        save_checkpoint(work / "results/vqgan/model.ckpt", {"state_dict": {"w": torch.full((2,), value)}})
        (work / "results/vqgan/config.yaml").write_text(f"model: {value}\n")
        (work / "results/vqgan/metrics.json").write_text(json.dumps({"ssim": value}))
        network = {"model": {"w": torch.full((2,), value)}, "classifier": {}, "config": {"params": {"resolution": 8}}}
        save_checkpoint(work / "results/train_classifier/real/model.ckpt", network)
        (work / "results/train_classifier/real/metrics.json").write_text(json.dumps({"val_macro_auroc": value}))

    trained(0.25)
    tool.pack(work, out)
    datasets = {part: {"seed": 2, "patients": 3} for part in tool.PARTS}
    first = tool.provenance(Path("params.yaml"), work, datasets, ("vqgan", "fid-network"), {})
    ruler = (out / pinned.FID_NETWORK).read_bytes()
    trained(0.5)
    tool.pack(work, out, ("vqgan",))
    assert (out / pinned.FID_NETWORK).read_bytes() == ruler
    assert torch.load(out / pinned.VQGAN_CHECKPOINT)["state_dict"]["w"].tolist() == [0.5, 0.5]
    assert pinned.read_sums(out)[pinned.FID_NETWORK] == pinned.sha256_file(out / pinned.FID_NETWORK)
    first["commit"]["train_classifier"] = first["commit"]["download"] = "0" * 40  # where the kept network was trained
    record = tool.provenance(Path("params.yaml"), work, datasets, ("vqgan",), first)
    assert record["vqgan"]["held_out"]["ssim"] == 0.5 and record["fid_network"] == first["fid_network"]
    assert record["vqgan"]["dataset"] == datasets["vqgan"] and record["vqgan"]["profile"] == tool.PROFILE
    assert record["commit"]["train_classifier"] == "0" * 40
    # The dataset both parts share was rendered again for the new VQ-GAN: its commit is this run's, not the kept one's.
    assert record["commit"]["download"] == json.loads((work / "recipes.json").read_text())["download"]["commit"]

    (out / pinned.PROVENANCE).write_text(json.dumps(first))
    first["decoder"] = {"dataset": datasets["decoder"]}
    (out / pinned.PROVENANCE).write_text(json.dumps(first))
    assert tool.kept_provenance(out, ("vqgan",), datasets) == first
    with pytest.raises(SystemExit, match="kept fid-network was trained on another dataset"):
        tool.kept_provenance(out, ("vqgan",), {**datasets, "fid-network": {"seed": 3, "patients": 3}})
    # The decoder's dataset is its own: another one for the decoder leaves the kept FID network alone.
    tool.kept_provenance(out, ("vqgan", "decoder"), {**datasets, "decoder": {"seed": 5, "patients": 9}})
    with (out / pinned.FID_NETWORK).open("ab") as f:  # a kept file must still be the pinned one
        f.write(b"\0")
    with pytest.raises(PinnedHashError, match="fid-densenet121.ckpt"):
        tool.pack(work, out, ("vqgan",))
