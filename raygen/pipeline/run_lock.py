"""One pipeline run per checkout: Snakemake and DVC never build into the same folders at once.

A run holds ``.raygen/run.lock`` (an exclusive ``flock``, so a killed run leaves no stale lock) and
writes who it is into the file. A Snakemake run takes it in its ``onstart`` handler and keeps it until
it ends; its jobs carry the run's token (``RAYGEN_RUN_TOKEN``) and pass. Any other stage command (a
``dvc repro`` stage, or a stage run by hand) takes the lock for its own duration, and stops at once
with a message naming the holder when it cannot.

Snakemake also holds DVC's own repository lock (``.dvc/tmp/lock``, the file DVC locks with ``flock``
through zc.lockfile) while it runs, so a ``dvc repro`` started meanwhile stops before it deletes or
restores any output, with DVC's "Unable to acquire lock" message; ``.raygen/run.lock`` then names the
run that holds it. The reverse: a Snakemake run refuses to start while DVC lists a live process in
``.dvc/tmp/rwlock`` or a DVC stage holds the run lock.

Standard library only: the Snakefile imports it before any environment is activated.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import IO, Any

from raygen.errors import UserError

LOCK_FILE = Path(".raygen/run.lock")
DVC_LOCK = Path(".dvc/tmp/lock")
DVC_RWLOCK = Path(".dvc/tmp/rwlock")
TOKEN_ENV = "RAYGEN_RUN_TOKEN"

_held: dict[str, IO[str]] = {}  # path -> open handle; the lock lives as long as the handle


class CheckoutBusy(UserError, RuntimeError):
    """Another pipeline run holds this checkout."""


def describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process (no details recorded)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    what = owner.get("what", "a pipeline run")
    return f"{what} (pid {owner.get('pid')} on {owner.get('host')}, started {started})"


def holder(root: Path) -> dict[str, Any] | None:
    """Who holds (or last held) the run lock, as it wrote itself into the file."""
    try:
        text = (root / LOCK_FILE).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        return None


def _try_flock(path: Path) -> IO[str] | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - the handle is the lock; it stays open while held
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def acquire(root: Path, what: str) -> str:
    """Take the run lock for this process; return its token. Raises :class:`CheckoutBusy`."""
    handle = _try_flock(root / LOCK_FILE)
    if handle is None:
        raise CheckoutBusy(
            f"{describe(holder(root))} is using this checkout ({root}); wait for it to finish "
            f"or stop it, then run again"
        )
    token = secrets.token_hex(8)
    owner = {"what": what, "pid": os.getpid(), "host": os.uname().nodename, "started": time.time(), "token": token}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(owner))
    handle.flush()
    _held[str(root / LOCK_FILE)] = handle
    return token


def release(root: Path) -> None:
    for path in (root / DVC_LOCK, root / LOCK_FILE):
        handle = _held.pop(str(path), None)
        if handle is not None:
            handle.close()


def live_dvc_processes(root: Path) -> list[str]:
    """Commands of live processes that DVC's rwlock lists as reading or writing in this repo."""
    try:
        table = json.loads((root / DVC_RWLOCK).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return []
    entries = [info for info in table.get("write", {}).values()]
    entries += [info for infos in table.get("read", {}).values() for info in infos]
    alive = {}
    for info in entries:
        pid = info.get("pid")
        if pid and pid != os.getpid() and _alive(pid):
            alive[pid] = f"`{info.get('cmd', 'dvc')}` (pid {pid})"
    return list(alive.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_snakemake_run(root: Path, run_id: str) -> None:
    """Called by the Snakefile's ``onstart``: hold the checkout (ours and DVC's lock) for this run."""
    busy = live_dvc_processes(root)
    if busy:
        raise CheckoutBusy(
            f"DVC is running in this checkout ({', '.join(busy)}); wait for it to finish, then run snakemake again"
        )
    token = acquire(root, f"snakemake run {run_id} ({' '.join(sys.argv[1:])[:200]})")
    if (root / ".dvc").is_dir():
        handle = _try_flock(root / DVC_LOCK)
        if handle is None:
            release(root)
            raise CheckoutBusy(
                "a DVC command holds this repository's lock (.dvc/tmp/lock); wait for it to "
                "finish, then run snakemake again"
            )
        _held[str(root / DVC_LOCK)] = handle
    os.environ[TOKEN_ENV] = token


def release_dvc_lock(root: Path) -> None:
    """Let DVC commands run again (the hand-over's ``dvc commit`` needs the lock)."""
    handle = _held.pop(str(root / DVC_LOCK), None)
    if handle is not None:
        handle.close()


def claim_for_stage(root: Path, stage: str) -> None:
    """A stage command starting: a job of the run that holds the lock passes; anyone else takes the lock
    for the stage's lifetime, or stops with :class:`CheckoutBusy` naming the holder."""
    token = os.environ.get(TOKEN_ENV)
    owner = holder(root)
    if token and owner and owner.get("token") == token:
        return
    tool = f"dvc stage {os.environ['DVC_STAGE']}" if os.environ.get("DVC_STAGE") else f"raygen {stage}"
    acquire(root, tool)
