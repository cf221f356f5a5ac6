"""Which source files a stage's result depends on: the stage module's import closure inside ``raygen/``.

Snakemake lists these files as inputs of the stage's rule (so an edit reruns the stage and everything
downstream, by mtime) and ``dvc.yaml`` lists them as deps of the DVC stage (by content hash). Both come
from :func:`stage_code_deps`; nobody keeps the lists by hand. ``raygen code-deps --check`` (run by the
test suite) fails when ``dvc.yaml`` is out of date, and ``raygen code-deps --write`` rewrites it.

The closure is static: every ``import`` and ``from ... import`` anywhere in a module (inside functions
too, since stages import heavy modules lazily), followed recursively, plus the ``__init__.py`` of every
package on the way (Python runs them on import). Third-party and standard-library imports are ignored:
their versions are pinned by ``requirements.lock``. The launcher (``raygen/__main__.py``, ``cli.py``)
is part of every stage, since every command runs through it.

One import is not followed: the params check (:data:`VALIDATION_ONLY`). Every stage runs it over its whole
profile, so it imports every stage's params class; it can refuse a run but never changes what a run writes,
and following it would make an edit to any stage rerun every stage.

Standard library only: the Snakefile imports this module before any environment is activated.
"""

from __future__ import annotations

import argparse
import ast
import sys
from functools import cache
from pathlib import Path

PACKAGE = "raygen"
REPO = Path(__file__).resolve().parents[2]
LAUNCHER = ("raygen.__main__", "raygen.cli")
VALIDATION_ONLY = frozenset({"raygen.pipeline.check_params"})


def module_file(module: str, root: Path = REPO) -> Path | None:
    """The source file of ``module`` (a package's ``__init__.py``), or None when it is not ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module named by an import statement in ``path`` (``module`` is its dotted name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from raygen.data import cohort` imports a submodule; `from x import name` a name.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs each parent package first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def import_closure(module: str, root: Path = REPO) -> tuple[str, ...]:
    """Sorted repo-relative paths of every ``raygen`` source file that importing ``module`` can run."""
    if module_file(module, root) is None:
        raise FileNotFoundError(f"{module} has no source file under {root}")
    seen: set[str] = set()
    files: set[Path] = set()
    todo = _with_parents(module)
    while todo:
        name = todo.pop()
        if name in seen or name in VALIDATION_ONLY:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue
        files.add(path)
        for imported in _imported_modules(path, name):
            todo.extend(m for m in _with_parents(imported) if m not in seen)
    return tuple(sorted(str(p.relative_to(root)) for p in files))


def stage_code_deps(stage: str, root: Path = REPO) -> list[str]:
    """The source files behind ``raygen <stage>``: the launcher's and the stage module's closures."""
    paths: set[str] = set()
    for module in (*LAUNCHER, f"{PACKAGE}.stages.{stage}"):
        paths.update(import_closure(module, root))
    return sorted(paths)


def is_code_dep(path: str) -> bool:
    return path.startswith(f"{PACKAGE}/") and path.endswith(".py")


def update_dvc_yaml(text: str, stages: list[str], root: Path = REPO) -> str:
    """``dvc.yaml`` with each stage's code deps replaced by its computed closure, everything else kept.

    A stage's code deps are the lines ``      - raygen/....py`` of its ``deps:`` list; they are replaced
    in place (first one's position), so comments and the rest of the file stay as written.
    """
    out: list[str] = []
    lines = text.splitlines()
    stage, indent, written = None, None, set()
    for line in lines:
        stripped = line.strip()
        top = len(line) - len(line.lstrip())
        if top == 2 and stripped.endswith(":") and not stripped.startswith("-"):
            stage = stripped[:-1]
        if stripped.startswith("- ") and is_code_dep(stripped[2:].strip()):
            if stage not in stages:
                raise ValueError(f"dvc.yaml: code deps under unknown stage {stage!r}")
            if stage not in written:
                indent = line[: len(line) - len(line.lstrip())]
                out.extend(f"{indent}- {path}" for path in stage_code_deps(stage, root))
                written.add(stage)
            continue
        out.append(line)
    missing = [s for s in stages if s not in written]
    if missing:
        raise ValueError(f"dvc.yaml: stage(s) {', '.join(missing)} list no raygen/ code deps to replace")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raygen code-deps",
        description="Show each stage's source-file dependencies (its import closure inside raygen/), "
        "or check / rewrite the code deps of dvc.yaml from them.",
    )
    parser.add_argument("stage", nargs="?", help="show one stage's files (default: check or write dvc.yaml)")
    parser.add_argument("--dvc-yaml", type=Path, default=REPO / "dvc.yaml", help="default: %(default)s")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps are out of date")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    args = parser.parse_args(argv)
    from raygen.stages import STAGE_NAMES

    if args.stage:
        if args.stage not in STAGE_NAMES:
            parser.error(f"unknown stage {args.stage!r}; choose one of {', '.join(STAGE_NAMES)}")
        print("\n".join(stage_code_deps(args.stage)))
        return 0
    text = args.dvc_yaml.read_text()
    updated = update_dvc_yaml(text, list(STAGE_NAMES))
    if args.write:
        if updated != text:
            args.dvc_yaml.write_text(updated)
        print(f"{args.dvc_yaml}: code deps {'updated' if updated != text else 'already current'}")
        return 0
    if updated != text:
        print(
            f"raygen code-deps: error: {args.dvc_yaml} lists stale code deps; run `raygen code-deps --write`",
            file=sys.stderr,
        )
        return 1
    print(f"{args.dvc_yaml}: code deps current for {len(STAGE_NAMES)} stages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
