"""The tests' single-node SLURM cluster (scripts/slurm_cluster.sh) and how they run the SLURM profile on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from workflow_copy import REPO

PROFILE = "workflow/profiles/slurm"
CLUSTER = REPO / "scripts/slurm_cluster.sh"
# The local cluster has no accounting: poll with squeue, and often, since the smoke jobs take seconds.
POLLING = (
    *("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"),
    *("--seconds-between-status-checks", "1", "--latency-wait", "5", "--slurm-keep-successful-logs"),
)


def submitting_env_profile(root: Path) -> None:
    """The copy's SLURM profile without `use-conda`: jobs run in the submitting environment (this venv),
    as the profile's comment says to do where there is no conda."""
    path = root / PROFILE / "config.yaml"
    text = path.read_text()
    assert "\nuse-conda: true" in text
    path.write_text(text.replace("\nuse-conda: true", "\nuse-conda: false"))


@contextlib.contextmanager
def local_cluster() -> Iterator[str | None]:
    """The cluster, running for the duration: yields None when it runs (it already did, or it was started
    here as root and is stopped afterwards), else the reason it cannot run on this machine."""
    if subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode == 0:
        yield None
        return
    if os.geteuid() != 0:
        how = "is not installed" if shutil.which("sbatch") is None else "is not running"
        yield f"SLURM {how} and starting it needs root: run `sudo scripts/slurm_cluster.sh start` first"
        return
    proc = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield None
    finally:
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, check=True)
