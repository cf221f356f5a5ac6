"""Checkpoints as plain dicts, saved atomically, loaded through one function.

A checkpoint holds ``model``, ``optimizer``, ``step``, ``config`` and ``version`` (plus whatever a
stage adds, e.g. ``scheduler`` or ``rng``). Loading uses ``weights_only=True``: only tensors and
plain containers are unpickled, so a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from raygen import __version__
from raygen.errors import MissingFileError
from raygen.io import atomic_path

log = logging.getLogger(__name__)


def save_torch(obj: Any, path: str | Path) -> None:
    """Atomically write ``obj`` with ``torch.save``, the same bytes for the same content: saved to a file,
    torch names the archive's top folder after the file, and an atomic write's file has a random name."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (a killed run never leaves a truncated checkpoint)."""
    state = {"version": __version__, **state}
    save_torch(state, path)
    log.info("saved checkpoint %s (step %s)", path, state.get("step"))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; a missing file says so."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint not found: {path}; the stage that writes it has not run yet "
            "(`snakemake` or `dvc repro` builds it)"
        )
    return torch.load(path, map_location=map_location, weights_only=True)
