"""The demo's pinned parts (weights/demo): what is committed, and the command that re-creates it.

Packing and loading are tested on tiny models in tests/test_vqgan.py (the VQ-GAN) and
tests/test_evaluate.py (the FID network); here, the committed files themselves.
"""

from __future__ import annotations

import json
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


def test_provenance_names_the_recipe_and_a_disjoint_dataset():
    record = json.loads((FOLDER / pinned.PROVENANCE).read_text())
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert record["command"] == pinned.RECREATE and record["profile"] == tool.PROFILE
    assert record["dataset"]["seed"] == raw["profiles"][tool.PROFILE]["download"]["demo"]["seed"]
    assert record["dataset"]["seed"] != raw["download"]["demo"]["seed"]
    assert record["vqgan"]["held_out"]["ssim"] > 0 and record["fid_network"]["held_out"]["val_macro_auroc"] > 0.5


def test_the_recipe_dataset_shares_no_patient_study_or_image_with_the_demo(tmp_path):
    counts = tool.check_disjoint(REPO / "params.yaml")
    assert counts["patients"] > 0 and counts["images"] >= counts["studies"] > 0
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profiles"][tool.PROFILE]["download"]["demo"]["seed"] = raw["download"]["demo"]["seed"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit, match="shares ids with the demo's"):
        tool.check_disjoint(tmp_path / "params.yaml")


def test_the_recipe_runs_the_pipelines_own_stages_under_its_profile(tmp_path):
    steps = tool.stage_commands(Path("params.yaml"), tmp_path)
    assert [stage for stage, _, _ in steps] == ["download", "sections", "cohort", "vqgan", "train_classifier"]
    for stage, _, command in steps:
        assert command[2:5] == ["raygen", stage, "--params"] and command[6:8] == ["--profile", tool.PROFILE]


def test_a_work_folder_of_another_recipe_is_refused_not_reused(tmp_path):
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params.write_text(yaml.safe_dump(raw))
    tool.claim_work_folder(params, tmp_path / "work")
    tool.claim_work_folder(params, tmp_path / "work")  # the same recipe resumes
    raw["profiles"][tool.PROFILE]["vqgan"]["steps"] += 1
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit, match="other params or code"):
        tool.claim_work_folder(params, tmp_path / "work")
