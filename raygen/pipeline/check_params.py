"""The whole params file checked at once: every section of every profile against its stage's schema.

A stage reads only its own section, so a typo in a section no stage reads (``vqgam:``) would pass
unnoticed; :func:`check_params` catches it. ``raygen check-params`` runs it; the test suite runs it on
the repository's ``params.yaml``.

Usage: ``raygen check-params [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

from raygen.config import PROFILES, ConfigError, from_dict, read_params, resolve_profile, section_dict
from raygen.stages import STAGES

log = logging.getLogger(__name__)

# Section name -> "module:ParamsClass". One name per stage: module, rule, DVC stage, section.
STAGE_PARAMS: dict[str, str] = {stage.name: f"raygen.stages.{stage.name}:{stage.params_class}" for stage in STAGES}

# Where the pretrained parts live (folders; see params.yaml). The Snakefile and dvc.yaml read them.
INPUTS = ("unixgen_vqgan", "lpips", "cxr_bert", "chexnet", "torchxrayvision", "demo")

TOP_LEVEL = {"profile", "profiles", "inputs", "runtime", *STAGE_PARAMS}


def params_class(section: str) -> type:
    module, name = STAGE_PARAMS[section].split(":")
    return getattr(importlib.import_module(module), name)


def check_params(path: str | Path) -> dict[str, dict[str, Any]]:
    """Load every section for every profile; return ``{profile: {section: params}}`` or raise."""
    raw = read_params(path)
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"unknown top-level params key(s): {', '.join(unknown)}; known: {', '.join(sorted(TOP_LEVEL))}"
        )
    resolve_profile(raw)
    _check_inputs(raw.get("inputs"))
    _check_sections(raw.get("runtime") or {}, "runtime")
    overlays = raw.get("profiles") or {}
    for name in PROFILES:
        overlay = overlays.get(name)
        if not isinstance(overlay, dict):
            raise ConfigError(
                f"profiles.{name}: missing; every profile lists every section (`{{}}` for none), "
                "since DVC tracks profiles.<profile>.<section>"
            )
        missing = [section for section in STAGE_PARAMS if section not in overlay]
        if missing:
            raise ConfigError(
                f"profiles.{name}: add {', '.join(f'{m}: {{}}' for m in missing)} "
                "(DVC tracks profiles.<profile>.<section>, which must exist)"
            )
        _check_sections({k: v for k, v in overlay.items() if k != "runtime"}, f"profiles.{name}")
        _check_sections(overlay.get("runtime") or {}, f"profiles.{name}.runtime")
    unknown_profiles = sorted(set(overlays) - set(PROFILES))
    if unknown_profiles:
        raise ConfigError(f"profiles.{unknown_profiles[0]}: unknown profile; choose one of {', '.join(PROFILES)}")
    return {profile: check_profile(raw, profile) for profile in PROFILES}


def check_profile(raw: dict[str, Any], profile: str) -> dict[str, Any]:
    """Every section of one profile loaded into its stage's params, and the rules that tie stages together;
    ``{section: params}`` or raise :class:`ConfigError`. Each stage runs this for its profile before it reads
    any data, so a stage refuses exactly what ``raygen check-params`` refuses."""
    from raygen.data.demo.params import DemoParams

    resolved = {
        section: from_dict(params_class(section), section_dict(raw, section, profile), prefix=section)
        for section in STAGE_PARAMS
    }
    # The demo renderer's section is a mapping inside `download`; check it against its schema too.
    from_dict(DemoParams, resolved["download"].demo, prefix="download.demo")
    _check_across_stages(resolved, profile)
    return resolved


def _check_across_stages(sections: dict[str, Any], profile: str) -> None:
    """Rules that tie two stages' params together."""
    classifier, vqgan = sections["train_classifier"].resolution, sections["vqgan"].resolution
    if classifier > vqgan:
        # Synthetic images would be upsampled to the classifier's input while real ones are downsampled:
        # the arms would differ in sharpness, not only in data.
        raise ConfigError(
            f"profile {profile}: train_classifier.resolution {classifier} exceeds the synthetic images' "
            f"size (vqgan.resolution {vqgan}); lower it or raise vqgan.resolution"
        )


def _check_sections(mapping: dict[str, Any], where: str) -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: must be a mapping")
    bad = sorted(set(mapping) - set(STAGE_PARAMS))
    if bad:
        raise ConfigError(f"unknown section(s) in {where}: {', '.join(bad)}; sections: {', '.join(STAGE_PARAMS)}")


def _check_inputs(inputs: Any) -> None:
    if not isinstance(inputs, dict):
        raise ConfigError(f"inputs: a mapping of {', '.join(INPUTS)} to folders is required")
    if set(inputs) != set(INPUTS):
        raise ConfigError(f"inputs: expected exactly {', '.join(INPUTS)}; got {', '.join(sorted(inputs))}")
    for key, value in inputs.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"inputs.{key}: a folder path (relative to the repository root), got {value!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raygen check-params",
        description="Check every section of every profile of a params file against the stage schemas.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        check_params(args.params)
    except ConfigError as err:
        print(f"raygen check-params: error: {args.params}: {err}", file=sys.stderr)
        return 2
    log.info("%s: all %d sections valid for profiles %s", args.params, len(STAGE_PARAMS), ", ".join(PROFILES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
