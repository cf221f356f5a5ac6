"""Atomic file writes: a reader never sees a half-written artifact.

Every artifact is written to a temporary file in the destination folder and renamed into place
(``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 less the umask).
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def file_record(path: str | Path | None) -> dict[str, str] | None:
    """Which file a result came from: its path and SHA-256 (None when there was none), for metrics.json."""
    return None if path is None else {"file": str(path), "sha256": sha256_file(path)}


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB blocks (checkpoints and datasets can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write pretty JSON (sorted keys, so diffs are stable)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The JSON object stored at ``path``; None when it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_csv(path: str | Path, frame: Any, **kwargs: Any) -> None:
    """Atomically write a pandas DataFrame as CSV (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def tree_digest(root: str | Path, contents: bool, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A fingerprint of every file under ``root`` (symlinks followed): count, bytes and one SHA-256.

    ``contents=True`` hashes each file's bytes (small trees); ``contents=False`` hashes only relative
    paths and sizes, so a 570 GB tree costs a directory walk, not a read. Names in ``skip`` (at the top
    level) are left out, e.g. the marker that will hold the digest.
    """
    root = Path(root)
    digest = hashlib.sha256()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in skip:
                continue
            length = path.stat().st_size
            files, size = files + 1, size + length
            digest.update(f"{rel}\0{length}\0{sha256_file(path) if contents else ''}\n".encode())
    return {"files": files, "bytes": size, "sha256": digest.hexdigest(), "contents_hashed": contents}
