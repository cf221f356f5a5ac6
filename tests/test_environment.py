"""pyproject.toml, requirements.lock and the conda files pin the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if m := re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line):
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def project_pins() -> dict[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = pins(meta["dependencies"])
    assert len(deps) == len(meta["dependencies"]), "every direct dependency is pinned with =="
    return deps


def conda_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    assert "conda-forge" in env["channels"] and "pytorch" not in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return pins(pip)


def test_conda_files_match_pyproject():
    expected = project_pins()
    for path in (REPO / "environment.yml", *sorted((REPO / "workflow/envs").glob("*.yaml"))):
        assert conda_pins(path) == expected, path.name


def test_lock_holds_every_direct_pin():
    lock = pins((REPO / "requirements.lock").read_text().splitlines())
    for name, version in project_pins().items():
        assert lock.get(name) == version, f"{name}: pyproject {version}, lock {lock.get(name)}"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)


def test_make_targets_put_the_venv_first_on_path():
    """Rules run `python -m raygen.<stage>`: without the venv first on PATH they get the system Python."""
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        recipe = re.search(rf"^{target}:.*\n\t(.+)$", makefile, re.M).group(1)
        assert recipe.startswith('PATH="$(abspath $(VENV))/bin:$$PATH" '), recipe
