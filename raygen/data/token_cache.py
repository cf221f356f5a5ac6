"""The token cache's writer: every cohort image as VQ-GAN token ids, or UniXGen's precomputed ids.

Layout (the ``tokenize`` stage writes it; :mod:`raygen.data.token_dataset` reads it): ``tokens.npy``
int16 (N, h*w) row-major ids, ``index.csv`` (dicom_id,row), ``meta.json`` (:func:`token_meta`).
Images are preprocessed exactly as the paper's tokens were made (:mod:`raygen.data.images`) and
encoded in batches while DataLoader workers decode the next JPEGs; unreadable images get no row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from raygen.data.datasets import CohortImages, image_loader
from raygen.io import atomic_path, sha256_file, write_csv
from raygen.models.taming_config import VQGANConfig
from raygen.models.vqgan import load_taming
from raygen.runtime import autocast, autocast_dtype

log = logging.getLogger(__name__)

TOKEN_DTYPE = np.int16  # ids < 32768 (paper codebook 1024); halves the file against int32
PREPROCESSING = (
    "grey -> C channels, /255, resize shortest side to R (bilinear, antialias), centre crop R, [-1, 1]; no flips"
)


class ImageLoading(Protocol):
    """How :func:`encode_images` batches and encodes (the ``tokenize`` params section, ``TokenizeParams``)."""

    batch_size: int
    workers: int
    precision: str


@dataclass(frozen=True)
class Tokens:
    """Result of encoding or importing: ids in manifest order of the images that have them."""

    dicom_ids: list[str]
    unreadable: list[str]  # could not be read (encoding) or absent from the pickle (import)
    seconds: float


def check_token_dtype(cfg: VQGANConfig) -> None:
    """Refuse a codebook whose ids do not fit :data:`TOKEN_DTYPE`."""
    if cfg.n_embed > np.iinfo(TOKEN_DTYPE).max:
        raise ValueError(f"codebook of {cfg.n_embed} does not fit {np.dtype(TOKEN_DTYPE).name} token ids")


def token_meta(cfg: VQGANConfig, config_path: Path, ckpt_path: Path) -> dict[str, Any]:
    """meta.json's description of the tokens: grid, codebook, preprocessing, the VQ-GAN's files."""
    return {
        "grid": list(cfg.grid),
        "num_tokens": cfg.num_tokens,
        "codebook_size": cfg.n_embed,
        "mask_id": cfg.n_embed,
        "resolution": cfg.resolution,
        "in_channels": cfg.in_channels,
        "dtype": np.dtype(TOKEN_DTYPE).name,
        "order": "row-major",
        "preprocessing": PREPROCESSING,
        "vqgan": {
            "config": str(config_path),
            "checkpoint": str(ckpt_path),
            "config_sha256": sha256_file(config_path),
            "checkpoint_sha256": sha256_file(ckpt_path) if ckpt_path.is_file() else None,
        },
    }


def write_index(path: Path, dicom_ids: list[str]) -> None:
    """index.csv: the row of each image's ids in tokens.npy."""
    write_csv(path, pd.DataFrame({"dicom_id": dicom_ids, "row": np.arange(len(dicom_ids))}))


def token_counts(n_manifest_images: int, result: Tokens) -> dict[str, Any]:
    """meta.json's counts: images asked for, written, skipped (and which), and the speed."""
    return {
        "n_manifest_images": n_manifest_images,
        "n_images": len(result.dicom_ids),
        "n_unreadable": len(result.unreadable),
        "unreadable_ids": result.unreadable,
        "seconds": round(result.seconds, 2),
        "images_per_s": round(len(result.dicom_ids) / result.seconds, 2) if result.seconds > 0 else None,
    }


def encode_images(
    frame: pd.DataFrame,
    jpg_root: Path,
    config_path: Path,
    ckpt_path: Path,
    loading: ImageLoading,
    device: torch.device,
    tokens_path: Path,
) -> Tokens:
    """Encode every manifest image; write the readable ones' ids to ``tokens_path`` (int16 memmap)."""
    # NHWC convolutions: faster on the CPU (oneDNN); same fp32 arithmetic, summed in another order.
    vq = load_taming(config_path, ckpt_path, device).to(memory_format=torch.channels_last)
    cfg = vq.config
    loader = image_loader(
        CohortImages(frame, jpg_root, cfg.resolution, cfg.in_channels), loading.batch_size, loading.workers
    )
    dtype = autocast_dtype(device, loading.precision)
    kept: list[str] = []
    bad: list[str] = []
    t0 = time.perf_counter()
    with _scratch(tokens_path) as scratch:
        ids_mm = np.lib.format.open_memmap(scratch, mode="w+", dtype=TOKEN_DTYPE, shape=(len(frame), cfg.num_tokens))
        bar = tqdm(total=len(frame), desc="tokenize", unit="img")
        for batch in loader:
            ok = batch.ok
            bad += frame["dicom_id"].iloc[batch.index[~ok].numpy()].tolist()
            if ok.any():
                with autocast(device, dtype):
                    x = batch.pixels[ok].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    ids = vq.encode_ids(x)  # (b, h*w) int64
                ids_mm[len(kept) : len(kept) + len(ids)] = ids.cpu().numpy().astype(TOKEN_DTYPE)
                kept += frame["dicom_id"].iloc[batch.index[ok].numpy()].tolist()
            bar.update(len(ok))
        bar.close()
        ids_mm.flush()
        _finalise(ids_mm, len(kept), scratch, tokens_path)
        del ids_mm
    if bad:
        log.warning("%d unreadable image(s) skipped, e.g. %s", len(bad), bad[:5])
    return Tokens(dicom_ids=kept, unreadable=bad, seconds=time.perf_counter() - t0)


def import_pickle(path: Path, frame: pd.DataFrame, cfg: VQGANConfig, tokens_path: Path) -> Tokens:
    """Take the cohort's ids from UniXGen's ``{dicom_id: [h*w ints]}`` pickle (validated)."""
    if not path.is_file():
        raise FileNotFoundError(f"token pickle not found: {path}; the UniXGen repository's README links it")
    t0 = time.perf_counter()
    log.warning("unpickling %s: pickle can execute code, only import a file you trust (UniXGen's release)", path)
    with path.open("rb") as f:
        data = pickle.load(f)  # noqa: S301 - trusted file, warned above
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict {{dicom_id: ids}}, got {type(data).__name__}")
    table = {_dicom_key(k): v for k, v in data.items()}
    wanted = frame["dicom_id"].tolist()
    present = [d for d in wanted if d in table]
    missing = [d for d in wanted if d not in table]
    ids = np.zeros((len(present), cfg.num_tokens), dtype=np.int64)
    wrong_length = []
    for row, dicom in enumerate(present):
        values = np.asarray(table[dicom]).reshape(-1)
        if values.size != cfg.num_tokens:
            wrong_length.append(f"{dicom} ({values.size})")
            continue
        ids[row] = values
    if wrong_length:
        raise ValueError(
            f"{path}: {len(wrong_length)} entries do not have {cfg.num_tokens} ids "
            f"(grid {cfg.grid}): {', '.join(wrong_length[:10])}"
        )
    out_of_range = np.flatnonzero((ids < 0).any(1) | (ids >= cfg.n_embed).any(1))
    if len(out_of_range):
        examples = ", ".join(present[i] for i in out_of_range[:10])
        raise ValueError(f"{path}: {len(out_of_range)} entries have ids outside [0, {cfg.n_embed}): {examples}")
    with atomic_path(tokens_path) as tmp:
        _save_npy(tmp, ids)
    if missing:
        log.warning("%d cohort image(s) are not in %s, e.g. %s", len(missing), path, missing[:5])
    log.info("imported %d token rows from %s (%d entries in the file)", len(present), path, len(data))
    return Tokens(dicom_ids=present, unreadable=missing, seconds=time.perf_counter() - t0)


def _save_npy(path: Path, ids: np.ndarray) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=TOKEN_DTYPE, shape=ids.shape)
    out[:] = ids
    out.flush()
    del out


def _dicom_key(key: Any) -> str:
    """Pickle keys may be dicom ids or image paths; both map to the dicom id (the file stem)."""
    key = str(key)
    return Path(key).stem if ("/" in key or key.endswith(".jpg")) else key


@contextlib.contextmanager
def _scratch(final: Path):
    """A scratch file beside ``final`` that is removed whatever happens."""
    path = final.with_name(f".{final.name}.{os.getpid()}.scratch")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _finalise(ids_mm: np.ndarray, rows: int, scratch: Path, final: Path) -> None:
    """Publish the first ``rows`` rows of the scratch memmap as ``final``, atomically."""
    with atomic_path(final) as tmp:
        if rows == len(ids_mm):
            os.replace(scratch, tmp)
            return
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=TOKEN_DTYPE, shape=(rows, ids_mm.shape[1]))
        for start in range(0, rows, 65536):
            out[start : start + 65536] = ids_mm[start : min(rows, start + 65536)]
        out.flush()
        del out
