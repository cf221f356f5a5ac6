"""A throw-away copy of the pipeline (workflow, dvc.yaml, params, the package's source, the weights
READMEs and the demo's committed pinned weights) in a fresh git + DVC repository, for tests that run
Snakemake or DVC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_copy(root: Path, profile: str, git: bool = True) -> Path:
    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "workflow", root / "workflow")
    shutil.copytree(REPO / "raygen", root / "raygen", ignore=shutil.ignore_patterns("__pycache__"))
    for readme in (REPO / "weights").glob("*/README.md"):
        (root / readme.parent.relative_to(REPO)).mkdir(parents=True, exist_ok=True)
        shutil.copy(readme, root / readme.relative_to(REPO))
    shutil.copytree(REPO / "weights/demo", root / "weights/demo", dirs_exist_ok=True)
    set_params(root, lambda p: p.update(profile=profile))
    if git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([BIN / "dvc", "init", "-q", *([] if git else ["--no-scm"])], cwd=root, check=True)
    return root


def set_params(root: Path, edit) -> None:
    """Apply ``edit`` to the copy's params.yaml (read from the copy, or the repository's at first)."""
    path = root / "params.yaml"
    params = yaml.safe_load((path if path.exists() else REPO / "params.yaml").read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tool(root: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``snakemake`` / ``dvc`` (the venv's) in the copy; ``.text`` holds stdout + stderr."""
    environ = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=root, capture_output=True, text=True, env=environ)
    proc.text = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def expand_foreach(stages: dict) -> dict[str, dict]:
    """dvc.yaml's ``stages`` as DVC names and runs them: a foreach stage becomes one stage per key
    (``train_classifier@real+50``), its ``do`` with ``${key}`` and ``${item.<field>}`` filled in everywhere
    (commands, deps, outs, keys of outs with options). Other ``${...}`` (params.yaml paths) are left as they are."""
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        if not isinstance(stage["foreach"], dict):
            raise ValueError(f"{name}: only a dict foreach (key: {{field: value}}) is expanded here")
        for key, item in stage["foreach"].items():
            scope = {"key": key, **{f"item.{field}": value for field, value in item.items()}}
            out[f"{name}@{key}"] = _fill_foreach(stage["do"], scope)
    return out


def _fill_foreach(node, scope: dict):
    if isinstance(node, str):
        return re.sub(r"\$\{(key|item\.\w+)\}", lambda m: str(scope[m.group(1)]), node)
    if isinstance(node, list):
        return [_fill_foreach(value, scope) for value in node]
    if isinstance(node, dict):
        return {_fill_foreach(k, scope): _fill_foreach(v, scope) for k, v in node.items()}
    return node


def planned(root: Path, *args: str) -> set[str]:
    """Jobs a Snakemake dry run would run, named as DVC names them (``train_classifier@real+50``)."""
    out = tool(root, "snakemake", "-n", "--cores", "1", *args).stdout
    jobs, name = set(), None
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            name = m.group(1)
            if name != "train_classifier":
                jobs.add(name)
        elif name == "train_classifier" and (m := re.match(r"^    wildcards: arm=(\S+)$", line)):
            jobs.add(f"train_classifier@{m.group(1)}")
    return jobs - {"all"}


def dvc_changed(root: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    out = tool(root, "dvc", "status").stdout
    return set(re.findall(r"^([\w@+]+):$", out, re.M))


def lock_entries(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]
