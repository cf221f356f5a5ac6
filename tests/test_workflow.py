"""Snakemake and DVC describe the same pipeline: stage names, commands, inputs (data, pretrained parts,
source files), outputs and params, for every profile. The source-file lists are each stage's import
closure, never hand-kept. Overrides on Snakemake's command line are refused; `snakemake --lint` and
`dvc dag` are clean.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_copy import BIN, REPO, make_copy, set_params, tool

from raygen.pipeline.code_deps import import_closure, stage_code_deps, update_dvc_yaml
from raygen.stages import STAGE_NAMES

INPUT_FOLDERS = tuple(yaml.safe_load((REPO / "params.yaml").read_text())["inputs"].values())


def snakemake_jobs(root: Path) -> dict[str, dict]:
    """Jobs of a forced dry run by name; a job with wildcards is named like DVC's foreach stages,
    ``<rule>@<value>`` (train_classifier@real+50)."""
    out = tool(root, "snakemake", "-n", "-p", "--forceall", "--cores", "1").stdout
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
    root = make_copy(tmp_path / "wf", profile, git=False)
    (root / "weights/chexnet/model.pth.tar").write_bytes(b"stand-in")  # a present weight is an input in both
    smk, dvc = snakemake_jobs(root), dvc_stages(root)
    assert list(smk) and set(smk) == set(dvc), "stage names differ"
    for name, job in smk.items():
        stage = dvc[name]
        assert job["cmd"] == stage["cmd"], f"{name}: commands differ"
        assert f"--profile {profile}" in stage["cmd"]
        # Every Snakemake output lies in a DVC out of the same stage, and every DVC out holds one.
        assert all(covered(p, stage["outs"]) for p in job["output"]), name
        assert all(any(covered(p, [o]) for p in job["output"]) for o in stage["outs"]), name
        # Inputs: the same files, code included (DVC may name the folder a Snakemake file lives in).
        assert all(covered(p, stage["deps"]) for p in job["input"]), (name, job["input"])
        for dep in stage["deps"]:
            held = any(covered(p, [dep]) for p in job["input"])
            # A pretrained-parts folder holding nothing but its README is no Snakemake input.
            assert held or (dep in INPUT_FOLDERS and not any(f.name != "README.md" for f in (root / dep).iterdir())), (
                name,
                dep,
            )
        code = [p for p in job["input"] if p.startswith("raygen/")]
        assert code == stage_code_deps(name.split("@")[0]), name
        # Each stage tracks the switch, its own section and the active profile's overlay of it: never
        # runtime settings, never another profile's overlay.
        section = name.split("@")[0]
        assert stage["params"] == sorted(["profile", section, f"profiles.{profile}.{section}"])
    assert "weights/chexnet/model.pth.tar" in smk["train_classifier@real"]["input"]


def test_cli_knows_every_stage():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert tuple(dvc) == STAGE_NAMES, "dvc.yaml must hold every raygen stage, in pipeline order"
    for name, stage in dvc.items():
        cmd = stage.get("cmd") or stage["do"]["cmd"]  # foreach stages keep theirs under `do`
        assert cmd.startswith(f"python -m raygen {name} "), name
        assert f"--log logs/{name}.log " in cmd or f"--log logs/{name}/${{key}}.log " in cmd, name


def test_stage_instances_are_listed_once():
    """The classifier arms: the registry names them, and the library's shares and DVC's foreach agree."""
    from raygen.data.classifier_config import ARMS
    from raygen.stages import BY_NAME

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert tuple(ARMS) == BY_NAME["train_classifier"].instances
    assert tuple(dvc["train_classifier"]["foreach"]) == BY_NAME["train_classifier"].instances


def test_dvc_yaml_code_deps_are_the_import_closures():
    text = (REPO / "dvc.yaml").read_text()
    assert update_dvc_yaml(text, list(STAGE_NAMES)) == text, "stale code deps: run `raygen code-deps --write`"
    proc = subprocess.run(
        [sys.executable, "-m", "raygen", "code-deps", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_closures_hold_what_the_stages_import_through_other_modules():
    assert "raygen/models/classifier.py" in stage_code_deps("evaluate")
    assert {"raygen/data/mimic.py", "raygen/data/labels.py"} <= set(stage_code_deps("cohort"))
    assert {
        "raygen/data/text_cache.py",
        "raygen/data/images.py",
        "raygen/data/labels.py",
        "raygen/models/decoder.py",
    } <= set(stage_code_deps("synthesize"))
    assert "raygen/data/demo/render.py" in stage_code_deps("download")  # renderer edits rebuild the demo data
    assert all("raygen/config.py" in stage_code_deps(s) for s in STAGE_NAMES)
    assert "raygen/stages/evaluate.py" not in stage_code_deps("tables")


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_static_closure_covers_what_python_really_imports(stage):
    """Importing the stage module (and the launcher) loads no raygen module outside its closure."""
    code = (
        f"import sys, raygen.cli, raygen.stages.{stage}; "
        "print('\\n'.join(sorted(m for m in sys.modules if m == 'raygen' or m.startswith('raygen.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    closure = set(stage_code_deps(stage))
    for module in out.split():
        path = module.replace(".", "/")
        assert f"{path}.py" in closure or f"{path}/__init__.py" in closure, (stage, module)


def test_closure_follows_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "raygen"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "stage.py").write_text("def main():\n    from .sub import helper\n")
    (pkg / "sub" / "helper.py").write_text("from raygen.sub.deep import x\nimport numpy\n")
    (pkg / "sub" / "deep.py").write_text("x = 1\n")
    (pkg / "unused.py").write_text("")
    assert import_closure("raygen.stage", tmp_path) == (
        "raygen/__init__.py",
        "raygen/stage.py",
        "raygen/sub/__init__.py",
        "raygen/sub/deep.py",
        "raygen/sub/helper.py",
    )


@pytest.mark.parametrize("override", ['evaluate={"memorisation_pairs": 3}', "tables={'decimals': 5}"])
def test_config_overrides_other_than_profile_are_refused(tmp_path, override):
    root = make_copy(tmp_path / "wf", "smoke", git=False)
    proc = tool(root, "snakemake", "-n", "--cores", "1", "--config", override, check=False)
    assert proc.returncode != 0
    key = override.split("=")[0]
    assert "may only set `profile`" in proc.text and f"{key}." in proc.text and "dvc exp run -S" in proc.text
    assert tool(root, "snakemake", "-n", "--cores", "1", "--config", "profile=demo").returncode == 0


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [BIN / "snakemake", "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "Using workflow specific profile workflow/profiles/default" in proc.stdout + proc.stderr


def test_dvc_dag_builds():
    proc = subprocess.run([BIN / "dvc", "dag", "--md"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in STAGE_NAMES:
        assert name in proc.stdout


def test_snakemake_refuses_bad_params_before_any_job(tmp_path):
    """The Snakefile runs `raygen check-params` when it is read: a dry run already fails, naming the key."""
    root = make_copy(tmp_path / "wf", "smoke", git=False)
    # A profile this run does not use: the check covers every profile.
    set_params(root, lambda p: p["profiles"]["paper"]["train_decoder"].update(steps=-5))
    proc = tool(root, "snakemake", "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "params.yaml: train_decoder.steps and batch_size must be >= 1" in proc.text
    assert not (root / "data").exists() and not (root / "results").exists()


def test_the_params_check_needs_only_the_standard_library_and_pyyaml():
    """Snakemake's own process runs the check (any environment); each stage's --help and params load stay fast."""
    code = (
        "import sys, importlib, raygen.cli, raygen.pipeline.check_params\n"
        "from raygen.stages import STAGE_NAMES\n"
        "for name in STAGE_NAMES: importlib.import_module(f'raygen.stages.{name}')\n"
        "third = {m.partition('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "third -= {'raygen', 'yaml', 'cython_runtime'}  # cython_runtime: PyYAML's compiled loader\n"
        "print(sorted(m for m in third if not m.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the stage modules import third-party packages at module level: {out}"


def test_stage_help_answers_without_importing_torch():
    code = (
        "import contextlib, io, sys\n"
        "from raygen.cli import main\n"
        "from raygen.stages import STAGE_NAMES\n"
        "helped = []\n"
        "for name in STAGE_NAMES:\n"
        "    text = io.StringIO()\n"
        "    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "    helped += [name] if text.getvalue().startswith(f'usage: raygen {name}') else []\n"
        "print(helped, sorted({'torch', 'numpy', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{list(STAGE_NAMES)} []", out
