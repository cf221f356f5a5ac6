"""Strict params loading: unknown keys and wrong types name the key; profiles overlay the base."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from raygen.config import ConfigError, from_dict, load_section, section_dict, to_dict


@dataclass(frozen=True)
class Inner:
    size: int = 4
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass(frozen=True)
class Section:
    lr: float = 1e-3
    steps: int = 10
    mode: Literal["train", "pretrained"] = "train"
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def write(tmp_path, obj):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_defaults_and_int_to_float(tmp_path):
    cfg = load_section(write(tmp_path, {"stage": {"lr": 1}}), "stage", Section)
    assert cfg == Section(lr=1.0)
    assert isinstance(cfg.lr, float)


def test_unknown_key_names_full_key(tmp_path):
    path = write(tmp_path, {"stage": {"inner": {"sise": 3}}})
    with pytest.raises(ConfigError, match=r"stage\.inner\.sise"):
        load_section(path, "stage", Section)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"steps": "10"}, "stage.steps"),
        ({"steps": 1.5}, "stage.steps"),
        ({"steps": True}, "stage.steps"),
        ({"mode": "other"}, "stage.mode"),
        ({"inner": {"names": "a"}}, "stage.inner.names"),
        ({"inner": {"names": [1]}}, r"stage.inner.names\[0\]"),
        ({"path": 3}, "stage.path"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, value, key):
    with pytest.raises(ConfigError, match=key):
        load_section(write(tmp_path, {"stage": value}), "stage", Section)


def test_profile_overlay_is_deep_merged(tmp_path):
    raw = {
        "profile": "smoke",
        "stage": {"steps": 100, "inner": {"size": 8, "names": ["x"]}},
        "profiles": {"smoke": {"stage": {"inner": {"size": 2}}}, "paper": {"stage": {"steps": 9}}},
    }
    path = write(tmp_path, raw)
    assert load_section(path, "stage", Section).inner == Inner(size=2, names=["x"])
    assert load_section(path, "stage", Section).steps == 100
    assert load_section(path, "stage", Section, profile="paper").steps == 9
    assert load_section(path, "stage", Section, profile="demo").inner.size == 8


def test_unknown_profile_is_an_error():
    with pytest.raises(ConfigError, match="unknown profile 'big'"):
        section_dict({"profile": "big"}, "stage")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_section(tmp_path / "nope.yaml", "stage", Section)


def test_round_trip():
    cfg = Section(steps=3, inner=Inner(size=1, names=["q"]))
    assert from_dict(Section, to_dict(cfg)) == cfg


def test_runtime_settings_merge_into_the_stage_section_but_not_into_what_is_tracked(tmp_path):
    from raygen.config import scientific_section

    raw = {
        "stage": {"lr": 0.1},
        "runtime": {"stage": {"steps": 5}},
        "profiles": {"paper": {"stage": {"lr": 0.2}, "runtime": {"stage": {"steps": 7}}}},
    }
    path = write(tmp_path, raw)
    assert load_section(path, "stage", Section) == Section(lr=0.1, steps=5)
    assert load_section(path, "stage", Section, profile="paper") == Section(lr=0.2, steps=7)
    assert scientific_section(raw, "stage", "paper") == {"lr": 0.2}
    raw["runtime"]["stage"]["lr"] = 0.3
    with pytest.raises(ConfigError, match="stage.lr is set both"):
        load_section(write(tmp_path, raw), "stage", Section)
