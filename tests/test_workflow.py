"""Snakemake and DVC describe the same pipeline: stage names, commands, data inputs and outputs.

Snakemake's side comes from a dry run (`snakemake -n -p --forceall`), DVC's from its own resolved
stage index, for every profile. The raygen CLI must know every stage, and `snakemake --lint` and
`dvc dag` must be clean.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raygen.cli import STAGES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CODE_PREFIXES = ("raygen/", "workflow/")  # DVC-only code deps; Snakemake tracks code by mtime of inputs only


def workflow_copy(tmp_path: Path, profile: str) -> Path:
    """A throw-away copy of the workflow files with the profile switched, plus a fresh DVC repo."""
    root = tmp_path / "wf"
    root.mkdir()
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "workflow", root / "workflow")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = profile
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([BIN / "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def snakemake_jobs(root: Path) -> dict[str, dict]:
    """Jobs of a forced dry run by name; a job with wildcards is named like DVC's foreach stages,
    ``<rule>@<value>`` (train_classifier@real+50)."""
    out = subprocess.run(
        [BIN / "snakemake", "-n", "-p", "--forceall", "--cores", "1"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout
    jobs: list[dict] = []
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append({"name": m.group(1), "input": [], "output": [], "cmd": None})
        elif jobs and (m := re.match(r"^    (input|output): (.*)$", line)):
            jobs[-1][m.group(1)] = [p.strip() for p in m.group(2).split(",")]
        elif jobs and (m := re.match(r"^    wildcards: \w+=(.*)$", line)):
            jobs[-1]["name"] += f"@{m.group(1).strip()}"
        elif jobs and line.startswith("Shell command: "):
            jobs[-1]["cmd"] = line.removeprefix("Shell command: ").strip()
    named = {job.pop("name"): job for job in jobs}
    named.pop("all", None)
    return named


def dvc_stages(root: Path) -> dict[str, dict]:
    from dvc.repo import Repo

    stages = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            stages[stage.name] = {
                "cmd": stage.cmd,
                "deps": [d.def_path for d in stage.deps if not hasattr(d, "params")],
                "outs": [o.def_path for o in stage.outs],
                "params": sorted(k for d in stage.deps if hasattr(d, "params") for k in d.params),
            }
    return stages


def covered(path: str, outs: list[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)


@pytest.mark.parametrize("profile", ["demo", "smoke", "paper"])
def test_snakemake_and_dvc_agree(tmp_path, profile):
    root = workflow_copy(tmp_path, profile)
    smk, dvc = snakemake_jobs(root), dvc_stages(root)
    assert list(smk) and set(smk) == set(dvc), "stage names differ"
    for name, job in smk.items():
        stage = dvc[name]
        assert job["cmd"] == stage["cmd"], f"{name}: commands differ"
        assert f"--profile {profile}" in stage["cmd"]
        # Every Snakemake output lies in a DVC out of the same stage, and every DVC out holds one.
        assert all(covered(p, stage["outs"]) for p in job["output"]), name
        assert all(any(covered(p, [o]) for p in job["output"]) for o in stage["outs"]), name
        # Data inputs: the same files (DVC may name the folder a Snakemake marker file lives in).
        dvc_data = [d for d in stage["deps"] if not d.startswith(CODE_PREFIXES)]
        assert all(covered(p, dvc_data) for p in job["input"]), name
        assert all(any(covered(p, [d]) for p in job["input"]) for d in dvc_data), name
        # Each stage depends on its own section, the switch, and its overlays, nothing else.
        section = name.split("@")[0]
        assert stage["params"] == sorted(["profile", section, f"profiles.smoke.{section}", f"profiles.paper.{section}"])


def test_cli_knows_every_stage():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == list(STAGES), "dvc.yaml must hold every raygen stage, in pipeline order"
    for name, stage in dvc.items():
        cmd = stage.get("cmd") or stage["do"]["cmd"]  # foreach stages keep theirs under `do`
        assert cmd.startswith(f"python -m raygen.{name} "), name
        assert f"--log logs/{name}.log " in cmd or f"--log logs/{name}/${{key}}.log " in cmd, name


def test_snakemake_lint_is_clean():
    proc = subprocess.run([BIN / "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_dvc_dag_builds():
    proc = subprocess.run([BIN / "dvc", "dag", "--md"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]:
        assert name in proc.stdout
