"""Torch datasets over cohort manifests (results/cohort/*.csv) that read the JPGs.

A manifest row names an image by ``dicom_id`` and ``path`` (relative to the JPG root). Unreadable
files (missing, truncated, not an image) never stop a run: the item comes back with ``ok=False``
and a zero image, and the caller counts and drops it. Counting happens in the main process, so
it is right with any number of DataLoader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from raygen.data.images import load_preprocessed

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("dicom_id", "path")


def read_manifests(paths: list[str | Path], split: str | None = None) -> pd.DataFrame:
    """Union of cohort manifests: one row per unique ``dicom_id`` (first occurrence wins).

    Args:
        paths: cohort CSVs with at least ``dicom_id`` and ``path`` columns.
        split: keep only rows whose ``split`` column equals this (None keeps all rows).
    Returns:
        DataFrame with ``dicom_id`` (str) and ``path`` (str) plus the first file's other columns,
        in manifest order, index reset.
    """
    frames = []
    for path in paths:
        frame = pd.read_csv(path, dtype={"dicom_id": str, "path": str})
        missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {missing}; has {list(frame.columns)}")
        if split is not None:
            if "split" not in frame.columns:
                raise ValueError(f"{path}: no 'split' column to select split={split!r}")
            frame = frame[frame["split"] == split]
        frames.append(frame)
    union = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    return union.drop_duplicates("dicom_id", keep="first").reset_index(drop=True)


@dataclass(frozen=True)
class ImageItem:
    """One dataset item. ``pixels`` is (C, R, R) float32 in [-1, 1] (zeros when ``ok`` is False)."""

    index: int
    pixels: torch.Tensor
    ok: bool


class CohortImages(Dataset):
    """The images of a manifest, preprocessed as the paper's tokenizer expects (see raygen.data.images)."""

    def __init__(self, frame: pd.DataFrame, jpg_root: str | Path, resolution: int, channels: int) -> None:
        self.paths = [Path(jpg_root) / p for p in frame["path"].astype(str)]
        self.resolution = resolution
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> ImageItem:
        try:
            pixels = load_preprocessed(self.paths[index], self.resolution, self.channels)
            return ImageItem(index, pixels, True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped and counted
            log.warning("unreadable image %s: %s", self.paths[index], err)
            return ImageItem(index, torch.zeros(self.channels, self.resolution, self.resolution), False)


@dataclass(frozen=True)
class ImageBatch:
    """A collated batch: ``index`` (B,) int64 rows of the manifest, ``pixels`` (B, C, R, R) [-1, 1],
    ``ok`` (B,) bool (False = unreadable, pixels are zeros)."""

    index: torch.Tensor
    pixels: torch.Tensor
    ok: torch.Tensor


def collate_items(items: list[ImageItem]) -> ImageBatch:
    return ImageBatch(
        index=torch.tensor([it.index for it in items], dtype=torch.int64),
        pixels=torch.stack([it.pixels for it in items]),
        ok=torch.tensor([it.ok for it in items], dtype=torch.bool),
    )


def image_loader(dataset: CohortImages, batch_size: int, workers: int) -> DataLoader:
    """An ordered (no shuffle) loader; workers decode JPEGs while the main process encodes."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_items,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


@dataclass(frozen=True)
class LoadedImages:
    """Readable images of a manifest in memory: ``pixels`` (N, C, R, R) [-1, 1] in ``dtype``;
    ``rows`` (N,) manifest rows they came from; ``unreadable`` the skipped manifest rows."""

    pixels: torch.Tensor
    rows: list[int]
    unreadable: list[int]


def load_all(
    dataset: CohortImages,
    batch_size: int,
    workers: int,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
) -> LoadedImages:
    """Decode every image of ``dataset`` once into RAM (demo cohorts: 2,000 x 128^2 fp16 = 66 MB)."""
    from tqdm import tqdm

    chunks, rows, bad = [], [], []
    for batch in tqdm(
        image_loader(dataset, batch_size, workers), desc="decode images", unit="batch", disable=not progress
    ):
        chunks.append(batch.pixels[batch.ok].to(dtype))
        rows += batch.index[batch.ok].tolist()
        bad += batch.index[~batch.ok].tolist()
    c, r = dataset.channels, dataset.resolution
    pixels = torch.cat(chunks) if chunks else torch.zeros(0, c, r, r, dtype=dtype)
    return LoadedImages(pixels=pixels, rows=rows, unreadable=bad)
