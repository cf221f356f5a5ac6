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
    assert set(resolved) == {"demo", "smoke", "paper", "rehearsal", "demo_weights", "demo_weights_decoder"}
    assert resolved["demo"]["download"].source == "demo"
    assert resolved["paper"]["download"].source == "mimic"


def test_every_section_has_all_overlays():
    """DVC tracks profiles.<profile>.<section>: it must exist for every profile (`{}` when empty)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in raw["profiles"]:
        assert set(raw["profiles"][profile]) == {*STAGE_PARAMS, "runtime"}, profile


# What the rehearsal profile may change relative to the paper profile: sizes (resolution, widths,
# depths, step, epoch and image counts, batch sizes, the subsets a metric is computed on), where the
# release is downloaded from, and `compile`, which changes speed and not results.
REHEARSAL_SIZE_KEYS = {
    "download.mimic.base_url",
    "cohort.generator_val_fraction",
    *(f"vqgan.{k}" for k in ("embed_dim", "n_embed", "z_channels", "resolution", "ch", "num_res_blocks")),
    *(f"vqgan.{k}" for k in ("eval_images", "grid_images")),
    "embed_text.max_length",
    *(f"train_decoder.{k}" for k in ("preset", "steps", "batch_size", "warmup_steps", "compile")),
    *(f"train_classifier.{k}" for k in ("resolution", "epochs", "batch_size", "warmup_steps", "patience")),
    *(f"synthesize.{k}" for k in ("batch_size", "progressive_prompts", "grid_per_class")),
    *(f"evaluate.{k}" for k in ("kid_subset_size", "n_boot", "kid_subsets", "msssim_kernel", "msssim_scales")),
    "evaluate.memorisation_pairs",
}


def test_the_rehearsal_differs_from_the_paper_profile_only_in_sizes():
    """Every paper-only code path the rehearsal runs is the paper's: only size keys may differ."""
    from raygen.config import scientific_section
    from raygen.stages import STAGE_NAMES

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    differ = set()
    for section in STAGE_NAMES:  # the runtime sections may differ freely: they change no result
        paper = flatten(scientific_section(raw, section, "paper"), section)
        rehearsal = flatten(scientific_section(raw, section, "rehearsal"), section)
        differ |= {key for key in paper.keys() | rehearsal.keys() if paper.get(key) != rehearsal.get(key)}
    assert differ <= REHEARSAL_SIZE_KEYS, sorted(differ - REHEARSAL_SIZE_KEYS)
    assert {"train_decoder.steps", "vqgan.resolution"} <= differ  # the check sees the overlays, not the base


# What the pinned demo parts' recipes may change relative to the demo: the dataset seed (and, for the
# decoder, its size), training instead of installing (or starting from what is being made), and how long
# the networks train.
DEMO_WEIGHTS_KEYS = {
    "demo_weights": {
        "download.demo.seed",
        *(f"vqgan.{k}" for k in ("source", "steps", "disc_start", "eval_images")),
        *(f"train_classifier.{k}" for k in ("epochs", "patience")),
    },
    "demo_weights_decoder": {
        *(f"download.demo.{k}" for k in ("seed", "studies", "patients")),
        *(f"train_decoder.{k}" for k in ("init", "steps")),
    },
}


@pytest.mark.parametrize("profile", sorted(DEMO_WEIGHTS_KEYS))
def test_the_pinned_parts_are_trained_with_the_demo_settings_on_another_dataset(profile):
    from raygen.config import scientific_section
    from raygen.stages import STAGE_NAMES

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    differ = set()
    for section in STAGE_NAMES:
        demo = flatten(scientific_section(raw, section, "demo"), section)
        recipe = flatten(scientific_section(raw, section, profile), section)
        differ |= {key for key in demo.keys() | recipe.keys() if demo.get(key) != recipe.get(key)}
    allowed = DEMO_WEIGHTS_KEYS[profile]
    assert "download.demo.seed" in differ and differ <= allowed, sorted(differ - allowed)


def flatten(tree: dict, prefix: str) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def test_runtime_settings_live_apart_from_what_shapes_results():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section in ("vqgan", "tokenize", "train_decoder", "train_classifier", "evaluate"):
        assert not {"workers", "device"} & set(raw[section]), section
        assert {"device"} <= set(raw["runtime"][section]), section
    assert resolved_value(raw, "train_decoder", "paper", "workers") == 4
    assert resolved_value(raw, "train_decoder", "smoke", "checkpoint_every") == 10
    for stage in ("vqgan", "tokenize", "embed_text", "train_classifier"):
        # Snakemake runs these beside another job on one core; the pinned parts were made with every core.
        assert resolved_value(raw, stage, "demo", "cpu_threads") == 1, stage
        for recipe in DEMO_WEIGHTS_KEYS:
            assert resolved_value(raw, stage, recipe, "cpu_threads") == 0, (stage, recipe)


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
        (lambda p: p["runtime"]["tokenize"].update(cpu_threads=-1), r"tokenize.cpu_threads must be >= 0"),
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
