#!/usr/bin/env python3
"""Write the conda environments from requirements.lock: environment.yml (by hand) and workflow/envs/raygen.yaml
(every rule under `snakemake --use-conda`). Run after changing the lock; tests/test_environment.py fails until
the files match it. Usage: python scripts/conda_envs.py [--check] [--lock PATH]
(--check: exit 1 if a file differs from what the lock gives, writing nothing; --lock: another lock than
requirements.lock, so tests can check the files against a changed lock without touching the real one).

Every pin of the lock is written into the files rather than a `-r requirements.lock` line, because
- Snakemake names a --use-conda environment after a hash of the env file's text, not of the files that text
  points to: with `-r` a new lock would leave the old environment in use;
- Snakemake copies the env file into its conda prefix (.snakemake/conda/<hash>.yaml) before `conda env create`,
  and conda runs pip from the env file's folder, so a relative `-r` path would point into the prefix, not here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PYTHON = "3.11"  # the lock's Python (pyproject requires-python, scripts/setup_env.sh)
PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*==[^\s;#]+")

HEADER = """\
# GENERATED from requirements.lock by scripts/conda_envs.py: edit the lock, then run that script.
# {purpose}
# The pip section is requirements.lock line for line: what scripts/setup_env.sh puts in .venv and CI
# tests, for Python {python} on Linux x86_64 (README, "GPU driver and CUDA build", says which NVIDIA driver
# its torch needs). Only python and pip come from conda-forge.
"""
WORKFLOW_PURPOSE = """\
The environment of every rule under `snakemake --use-conda`. Every pin is written out (no `-r`):
# Snakemake names the env after a hash of this file's text, so a new lock must change this file.
# raygen itself is not installed: the jobs import it from the checkout through PYTHONPATH (set in
# workflow/rules/common.smk); an install would tie an env that checkouts may share (--conda-prefix)
# to one checkout's code."""
BY_HAND_PURPOSE = """\
Conda environment for RayGen, the same packages as .venv. Create it from the repository root:
#   conda env create -f environment.yml
# `-e .` installs raygen editable from this checkout, as scripts/setup_env.sh does."""

ENVS = {
    "environment.yml": ("raygen", BY_HAND_PURPOSE, ["-e ."]),
    "workflow/envs/raygen.yaml": ("raygen-workflow", WORKFLOW_PURPOSE, []),
}


def lock_lines(text: str) -> list[str]:
    """The lock's pins in order; anything else (an option, a hash, a URL) has no place in it."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    odd = [line for line in lines if not PIN.fullmatch(line)]
    if odd:
        raise SystemExit(f"requirements.lock holds lines that are not plain `name==version` pins: {odd}")
    return lines


def render(name: str, purpose: str, extra: list[str], pins: list[str]) -> str:
    body = [
        HEADER.format(purpose=purpose, python=PYTHON),
        f"name: {name}\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n",
        f"  - python={PYTHON}\n  - pip\n  - pip:\n",
        *(f"      - {line}\n" for line in [*pins, *extra]),
    ]
    return "".join(body)


def expected(lock: Path = LOCK) -> dict[Path, str]:
    pins = lock_lines(lock.read_text())
    return {REPO / path: render(name, purpose, extra, pins) for path, (name, purpose, extra) in ENVS.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--lock", type=Path, default=LOCK)
    args = parser.parse_args(argv)
    wanted = expected(args.lock)
    stale = {path: text for path, text in wanted.items() if not path.exists() or path.read_text() != text}
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO)} does not match {args.lock.name}; run python scripts/conda_envs.py")
        return 1 if stale else 0
    for path, text in stale.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
