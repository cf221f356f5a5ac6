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
from pathlib import Path
from typing import Any

from raygen.config import PROFILES, ConfigError, from_dict, read_params, section_dict

log = logging.getLogger(__name__)

# Section name -> "module:ParamsClass". One name per stage: module, rule, DVC stage, section.
STAGE_PARAMS: dict[str, str] = {
    "download": "raygen.download:DownloadParams",
    "sections": "raygen.sections:SectionsParams",
    "cohort": "raygen.cohort:CohortParams",
    "vqgan": "raygen.vqgan:VqganParams",
    "tokenize": "raygen.tokenize:TokenizeParams",
    "embed_text": "raygen.embed_text:EmbedTextParams",
    "train_decoder": "raygen.train_decoder:TrainDecoderParams",
    "synthesize": "raygen.synthesize:SynthesizeParams",
    "train_classifier": "raygen.train_classifier:TrainClassifierParams",
    "evaluate": "raygen.evaluate:EvaluateParams",
    "tables": "raygen.tables:TablesParams",
}

TOP_LEVEL = {"profile", "profiles", *STAGE_PARAMS}


def params_class(section: str) -> type:
    module, name = STAGE_PARAMS[section].split(":")
    return getattr(importlib.import_module(module), name)


def check_params(path: str | Path) -> dict[str, dict[str, Any]]:
    """Load every section for every profile; return ``{profile: {section: params}}`` or raise."""
    raw = read_params(path)
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown top-level params key(s): {', '.join(unknown)}; known: {', '.join(sorted(TOP_LEVEL))}")
    overlays = raw.get("profiles") or {}
    for name, overlay in overlays.items():
        if name not in PROFILES:
            raise ConfigError(f"profiles.{name}: unknown profile; choose one of {', '.join(PROFILES)}")
        bad = sorted(set(overlay or {}) - set(STAGE_PARAMS))
        if bad:
            raise ConfigError(f"unknown section(s) in profiles.{name}: {', '.join(bad)}")
    resolved: dict[str, dict[str, Any]] = {}
    for profile in PROFILES:
        resolved[profile] = {
            section: from_dict(params_class(section), section_dict(raw, section, profile), prefix=section)
            for section in STAGE_PARAMS
        }
        # The demo renderer's section is a mapping inside `download`; check it against its schema too.
        from raygen.data.demo import DemoParams

        from_dict(DemoParams, resolved[profile]["download"].demo, prefix="download.demo")
    return resolved


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
        log.error("%s: %s", args.params, err)
        return 1
    log.info("%s: all %d sections valid for profiles %s", args.params, len(STAGE_PARAMS), ", ".join(PROFILES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
