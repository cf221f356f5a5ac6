"""The tuning benches' params variants: parsing and the profile overlay they are written into."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from variants import parse_variant, variant_name, variant_params  # noqa: E402


def test_variants_parse_yaml_scalars_and_name_folders():
    assert parse_variant("steps=8,cfg=5.0,augment.enabled=true") == {"steps": 8, "cfg": 5.0, "augment.enabled": True}
    assert parse_variant("") == {}
    assert variant_name("steps=8,cfg=5") == "steps-8_cfg-5" and variant_name("") == "baseline"
    with pytest.raises(SystemExit, match="expected key=value"):
        parse_variant("steps")


def test_variant_params_write_the_profile_overlay_only():
    raw = {"profile": "demo", "train_decoder": {"steps": 500}, "profiles": {"demo": {"train_decoder": {}}}}
    out = variant_params(raw, "demo", "train_decoder", {"steps": 1500, "augment.enabled": True})
    assert out["profiles"]["demo"]["train_decoder"] == {"steps": 1500, "augment": {"enabled": True}}
    assert out["train_decoder"] == {"steps": 500} and raw["profiles"]["demo"]["train_decoder"] == {}  # a copy
