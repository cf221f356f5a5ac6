"""The repository's params.yaml is valid for every profile; typos anywhere in it are caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raygen.config import ConfigError
from raygen.pipeline.check_params import STAGE_PARAMS, check_params, main

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid():
    resolved = check_params(REPO / "params.yaml")
    assert set(resolved) == {"demo", "smoke", "paper"}
    assert resolved["demo"]["download"].source == "demo"
    assert resolved["paper"]["download"].source == "mimic"


def test_every_section_has_all_overlays():
    """DVC tracks profiles.<profile>.<section>: it must exist for every profile (`{}` when empty)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in ("demo", "smoke", "paper"):
        assert set(raw["profiles"][profile]) == {*STAGE_PARAMS, "runtime"}, profile


def test_runtime_settings_live_apart_from_what_shapes_results():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section in ("vqgan", "tokenize", "train_decoder", "train_classifier", "evaluate"):
        assert not {"workers", "device"} & set(raw[section]), section
        assert {"device"} <= set(raw["runtime"][section]), section
    assert resolved_value(raw, "train_decoder", "paper", "workers") == 4
    assert resolved_value(raw, "train_decoder", "smoke", "checkpoint_every") == 10


def resolved_value(raw, section, profile, key):
    from raygen.config import section_dict

    return section_dict(raw, section, profile)[key]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.update(vqgam={}), "unknown top-level params key"),
        (lambda p: p["profiles"]["smoke"].update(cohrt={}), r"unknown section\(s\) in profiles.smoke"),
        (lambda p: p["profiles"].update(big={}), "profiles.big"),
        (lambda p: p["profiles"]["paper"]["cohort"].update(seed="1"), r"cohort.seed"),
        (lambda p: p["sections"].update(wrkers=2), r"sections.wrkers"),
        (lambda p: p["evaluate"].update(workers=3), r"evaluate.workers is set both"),
        (lambda p: p["runtime"]["evaluate"].update(n_boot=3), r"evaluate.n_boot is set both"),
        (lambda p: p["profiles"]["paper"].pop("tables"), r"profiles.paper: add tables: \{\}"),
        (lambda p: p["runtime"].update(evaluat={}), r"unknown section\(s\) in runtime"),
        (lambda p: p["inputs"].pop("chexnet"), r"inputs: expected exactly"),
    ],
)
def test_typos_are_errors(tmp_path, edit, message):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        check_params(path)
    assert main(["--params", str(path)]) == 2
