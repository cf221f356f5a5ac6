"""The Snakemake -> DVC hand-over: ``dvc.lock`` learns only what a Snakemake run really built.

Each stage command of a Snakemake run writes a record when it starts and another when it finishes
with status 0 (``RAYGEN_HANDOVER_DIR`` points at the run's folder; DVC runs have no such variable and
write nothing). The start record holds the stage's *fingerprint* as DVC would hash it: the profile
switch, the stage's params section and the active profile's overlay of it, as written in
``params.yaml``, the profile the stage actually ran with, and the SHA-256 of every source file of the
stage (:mod:`raygen.pipeline.code_deps`).

When the run ends, :func:`handover` commits to ``dvc.lock`` exactly the stages that finished, and of
those only the ones whose fingerprint still equals what DVC would hash now. So nothing is recorded for
a stage that was not run (a partial target, ``--until``, ``--touch``), that failed, that ran under a
``--config profile=...`` other than the file's, or whose params or code changed while it ran.

Standard library only (plus PyYAML when a record is written): the Snakefile imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygen.pipeline.code_deps import stage_code_deps
from raygen.stages import BY_NAME

DIR_ENV = "RAYGEN_HANDOVER_DIR"
PARAMS_FILE = "params.yaml"


def dvc_address(stage: str, argv: list[str]) -> str:
    """The DVC stage name of this command: ``<stage>`` or, for a foreach stage, ``<stage>@<key>``."""
    flag = BY_NAME[stage].foreach_arg
    if flag is None:
        return stage
    value = argv[argv.index(flag) + 1] if flag in argv[:-1] else None
    if value is None:
        raise ValueError(f"{stage}: {flag} missing; it names the DVC stage ({stage}@<value>)")
    return f"{stage}@{value}"


def fingerprint(root: Path, stage: str, params_file: str = PARAMS_FILE) -> dict[str, Any]:
    """What DVC hashes for ``stage`` that Snakemake could disagree on: params as written, and code."""
    import yaml

    with open(root / params_file) as f:
        raw = yaml.safe_load(f) or {}
    profile = raw.get("profile", "demo")
    overlay = ((raw.get("profiles") or {}).get(profile) or {}).get(stage)
    code = {path: _sha256(root / path) for path in stage_code_deps(stage, root)}
    return {"profile": profile, "section": raw.get(stage), "overlay": overlay, "code": code}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_start(stage: str, argv: list[str], profile: str | None) -> Path | None:
    """Write the start record of a stage command run by Snakemake (no-op elsewhere)."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return None
    root = Path.cwd()
    address = dvc_address(stage, argv)
    record = {"address": address, "ran_with_profile": profile, "fingerprint": fingerprint(root, stage)}
    path = Path(folder) / f"{address}.start.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def record_done(start: Path | None) -> None:
    """Mark a started stage as finished with status 0."""
    if start is not None:
        start.rename(start.with_name(start.name.replace(".start.json", ".done.json")))


def finished_stages(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.done.json"))]


def truthful(record: dict[str, Any], root: Path) -> str | None:
    """Why ``record`` must not be committed (None when it may)."""
    stage = record["address"].split("@")[0]
    now = fingerprint(root, stage)
    ran = record["fingerprint"]
    if (record["ran_with_profile"] or ran["profile"]) != now["profile"]:
        return f"ran with profile {record['ran_with_profile']!r}, params.yaml says {now['profile']!r}"
    labels = {
        "profile": "params profile",
        "section": f"params {stage}",
        "overlay": f"params profiles.{now['profile']}.{stage}",
    }
    changed = [label for key, label in labels.items() if ran[key] != now[key]]
    changed += [path for path in set(ran["code"]) | set(now["code"]) if ran["code"].get(path) != now["code"].get(path)]
    if changed:
        return f"changed while it ran: {', '.join(sorted(changed))}"
    return None


@dataclass(frozen=True)
class Handover:
    """What one hand-over did: committed stages, stages left alone (with why), and a failure, if any."""

    committed: list[str]
    skipped: list[str]
    error: str | None = None


def handover(root: Path, folder: Path, data_dirs: list[str]) -> Handover:
    """Commit the truthful finished stages of one Snakemake run to dvc.lock."""
    if os.environ.get("RAYGEN_DVC_HANDOVER", "1") == "0":
        return Handover([], ["every stage (RAYGEN_DVC_HANDOVER=0)"])
    if not (root / ".dvc").is_dir() or not shutil.which("dvc"):
        return Handover([], ["every stage (no DVC repository or no `dvc` on PATH)"])
    commit, skipped = [], []
    for record in finished_stages(folder):
        reason = truthful(record, root)
        (skipped.append(f"{record['address']} ({reason})") if reason else commit.append(record["address"]))
    if not commit:
        return Handover([], skipped)
    proc = _dvc_commit(root, commit, data_dirs)
    if proc.returncode != 0:
        return Handover([], skipped, f"`dvc commit {' '.join(commit)}` failed: {proc.stderr.strip()[-500:]}")
    return Handover(commit, skipped)


def _dvc_commit(root: Path, addresses: list[str], data_dirs: list[str]) -> subprocess.CompletedProcess:
    """``dvc commit`` the stages, then put back the outputs' mtimes (DVC rewrites them when it caches,
    and Snakemake would then see its outputs as newer than their dependants)."""
    mtimes = {}
    for top in ("results", *data_dirs):
        for dirpath, _, files in os.walk(root / top):
            for name in files:
                path = os.path.join(dirpath, name)
                mtimes[path] = os.stat(path, follow_symlinks=False).st_mtime_ns
    # --no-relink: with DVC's default copy cache, relinking would copy every output back out of the cache.
    proc = subprocess.run(
        ["dvc", "commit", "--force", "--quiet", "--no-relink", *addresses], cwd=root, capture_output=True, text=True
    )
    for path, mtime in mtimes.items():
        if os.path.lexists(path):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    return proc
