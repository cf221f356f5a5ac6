"""The code style is checked, not hoped for: ruff (pinned in the test extras, configured in
pyproject.toml) formats and lints the package, the tests and the benchmarks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"
CHECKED = ("raygen", "tests", "bench")
LONGEST_FUNCTION = 60  # lines, docstring included
LONGEST_STAGE_MODULE = 200  # lines


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), *args, *CHECKED], cwd=REPO, capture_output=True, text=True)


def test_ruff_lint_is_clean():
    proc = ruff("check", "--no-cache")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr


def test_ruff_format_is_clean():
    proc = ruff("format", "--check", "--no-cache")
    assert proc.returncode == 0, f"run `ruff format {' '.join(CHECKED)}`:\n{proc.stdout[-4000:]}{proc.stderr}"


def test_functions_are_short():
    long = []
    for path in sorted((REPO / "raygen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions longer than {LONGEST_FUNCTION} lines:\n" + "\n".join(long)


def test_stage_modules_are_thin():
    fat = [
        f"{path.relative_to(REPO)} ({n} lines)"
        for path in sorted((REPO / "raygen" / "stages").glob("*.py"))
        if (n := len(path.read_text().splitlines())) > LONGEST_STAGE_MODULE
    ]
    assert not fat, f"stage modules longer than {LONGEST_STAGE_MODULE} lines (move library code out):\n" + "\n".join(
        fat
    )


def test_every_cited_document_is_in_the_repository():
    """Comments and docs cite pages a reader can open: every ``docs/<page>.md`` they name exists."""
    cited = re.compile(r"\bdocs/[\w./-]+\.md\b")
    sources = [*(REPO / "raygen").rglob("*.py"), *(REPO / "bench").glob("*.py"), *(REPO / "docs").glob("*.md")]
    sources += [REPO / "README.md", REPO / "params.yaml", *(REPO / "workflow").rglob("*.smk")]
    missing = sorted(
        f"{path.relative_to(REPO)}: {ref}"
        for path in sources
        for ref in set(cited.findall(path.read_text()))
        if not (REPO / ref).is_file()
    )
    assert not missing, "cited documents that do not exist:\n" + "\n".join(missing)
