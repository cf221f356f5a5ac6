"""Training pairs for the masked-token decoder, read from the memory-mapped caches.

Inputs (layouts documented by their writers, :mod:`raygen.data.token_cache` and
:mod:`raygen.data.text_cache`):

- ``results/tokenize/``: ``tokens.npy`` int16 (N, h*w), ``index.csv`` (dicom_id,row), ``meta.json``
  (grid [h, w], codebook_size, ...);
- ``results/embed_text/``: ``states.npy`` float16 (U, L, D), ``lengths.npy`` int32 (U,),
  ``index.csv`` (study_id,row), ``null.npy`` float16 (L, D), ``meta.json`` (max_length L, dim D,
  null_length, ...);
- the generator manifest (dicom_id, subject_id, study_id, split, view, path, text).

A pair is one manifest image: its token row and its study's text row. Batches are gathered with
one fancy-index per array (no per-item Python), so a whole batch costs a few memcpy calls. The
order of batches is a pure function of (seed, epoch), which makes resumed runs exact without
storing any loader state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)


def read_meta(cache_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a cache folder; a missing file names the stage that writes it."""
    path = Path(cache_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the stage that writes {Path(cache_dir).name}/ first")
    return json.loads(path.read_text())


def text_dims(meta: dict[str, Any]) -> tuple[int, int]:
    """(L, D) of a text cache from its meta (keys ``max_length`` / ``dim``, with fallbacks)."""
    length = meta.get("max_length", meta.get("L"))
    dim = meta.get("dim", meta.get("D"))
    if length is None or dim is None:
        raise KeyError(f"text cache meta lacks max_length/dim: {sorted(meta)}")
    return int(length), int(dim)


def load_null_prompt(text_dir: str | Path) -> tuple[torch.Tensor, int]:
    """The null prompt's states (L, D) float16 and its length, for condition dropout and CFG."""
    text_dir = Path(text_dir)
    states = torch.from_numpy(np.load(text_dir / "null.npy").astype(np.float16))
    length = int(read_meta(text_dir).get("null_length", 1))
    return states, length


def token_ids_for(tokens_dir: str | Path, dicom_ids: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """The cached ids of ``dicom_ids``: (M, h*w) int64 for the M images that have a row, and the (N,)
    bool mask of which do (the tokenizer gives an unreadable image no row)."""
    tokens_dir = Path(tokens_dir)
    index = pd.read_csv(tokens_dir / "index.csv", dtype={"dicom_id": str}).set_index("dicom_id")["row"]
    rows = index.reindex(dicom_ids)
    found = rows.notna().to_numpy()
    ids = np.load(tokens_dir / "tokens.npy", mmap_mode="r")[rows[found].astype(np.int64).to_numpy()]
    return torch.from_numpy(ids.astype(np.int64)), found


@dataclass
class TokenBatch:
    """A batch of pairs (CPU tensors from the loader, moved with :meth:`to`).

    ids:          (B, N) int64 codebook ids.
    text_states:  (B, L, D) float16 text states (cast on the device, half the transfer).
    text_lengths: (B,) int64 real text tokens per row.
    """

    ids: torch.Tensor
    text_states: torch.Tensor
    text_lengths: torch.Tensor

    def pin_memory(self) -> TokenBatch:
        return TokenBatch(self.ids.pin_memory(), self.text_states.pin_memory(), self.text_lengths.pin_memory())

    def to(self, device: torch.device) -> TokenBatch:
        nb = device.type == "cuda"
        return TokenBatch(
            self.ids.to(device, non_blocking=nb),
            self.text_states.to(device, non_blocking=nb),
            self.text_lengths.to(device, non_blocking=nb),
        )

    def __len__(self) -> int:
        return self.ids.shape[0]


class TokenTextDataset(torch.utils.data.Dataset):
    """Pairs of (token grid, text states) for one manifest split, memory-mapped.

    ``dataset[indices]`` / ``__getitems__`` return a whole :class:`TokenBatch`; memmaps are opened
    lazily per process so DataLoader workers never pickle array data.
    """

    def __init__(
        self, tokens_dir: str | Path, text_dir: str | Path, manifest: str | Path | pd.DataFrame, split: str | None
    ) -> None:
        self.tokens_dir, self.text_dir = Path(tokens_dir), Path(text_dir)
        self.token_meta = read_meta(self.tokens_dir)
        self.text_meta = read_meta(self.text_dir)
        frame = manifest if isinstance(manifest, pd.DataFrame) else pd.read_csv(manifest)
        if split is not None:
            frame = frame[frame["split"] == split]
        token_index = pd.read_csv(self.tokens_dir / "index.csv", dtype={"dicom_id": str})
        text_index = pd.read_csv(self.text_dir / "index.csv")
        frame = frame.assign(dicom_id=frame["dicom_id"].astype(str), study_id=frame["study_id"].astype(np.int64))
        joined = frame.merge(token_index.rename(columns={"row": "token_row"}), on="dicom_id", how="inner")
        joined = joined.merge(
            text_index.astype({"study_id": np.int64}).rename(columns={"row": "text_row"}), on="study_id", how="inner"
        )
        dropped = len(frame) - len(joined)
        if dropped:
            log.warning("split %s: %d manifest rows have no token or text cache row; dropped", split, dropped)
        self.frame = joined.reset_index(drop=True)
        self.token_rows = self.frame["token_row"].to_numpy(np.int64)
        self.text_rows = self.frame["text_row"].to_numpy(np.int64)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        log.info(
            "split %s: %d pairs (%d tokens/image, text %s)",
            split,
            len(self),
            self.num_tokens,
            text_dims(self.text_meta),
        )

    # Memmaps are per process: dropped from the pickled state, reopened on first access.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (
                np.load(self.tokens_dir / "tokens.npy", mmap_mode="r"),
                np.load(self.text_dir / "states.npy", mmap_mode="r"),
                np.load(self.text_dir / "lengths.npy", mmap_mode="r"),
            )
        return self._arrays

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.token_meta["grid"]
        return int(h), int(w)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def codebook_size(self) -> int:
        return int(self.token_meta["codebook_size"])

    @property
    def text_dim(self) -> int:
        return text_dims(self.text_meta)[1]

    def __len__(self) -> int:
        return len(self.frame)

    def gather(self, indices: np.ndarray | list[int]) -> TokenBatch:
        """The pairs at ``indices`` (dataset positions) as one batch; sorted indices read fastest."""
        idx = np.asarray(indices, dtype=np.int64)
        tokens, states, lengths = self.arrays
        ids = torch.from_numpy(tokens[self.token_rows[idx]].astype(np.int64))  # (B, N)
        text_rows = self.text_rows[idx]
        return TokenBatch(
            ids=ids,
            text_states=torch.from_numpy(np.ascontiguousarray(states[text_rows])),  # (B, L, D) fp16
            text_lengths=torch.from_numpy(lengths[text_rows].astype(np.int64)),
        )

    __getitems__ = gather

    def __getitem__(self, index: int | np.ndarray | list[int]) -> TokenBatch:
        return self.gather(np.atleast_1d(index))


class StepBatchSampler(torch.utils.data.Sampler):
    """Index batches for steps ``start_step .. total_steps - 1``, reproducible from (seed, step).

    Each epoch is a permutation drawn from ``numpy.random.default_rng([seed, epoch])``; a global
    batch of ``global_batch`` indices is split evenly across ``world_size`` ranks (this rank gets
    every ``world_size``-th). The last incomplete batch of an epoch is dropped (static shapes).
    """

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        total_steps: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by {world_size} processes")
        if num_items < global_batch:
            raise ValueError(f"{num_items} training pairs are fewer than one batch of {global_batch}")
        self.num_items, self.global_batch = num_items, global_batch
        self.total_steps, self.start_step, self.seed = total_steps, start_step, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = num_items // global_batch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def batch_for_step(self, step: int, _cache: dict[int, np.ndarray] | None = None) -> np.ndarray:
        epoch, j = divmod(step, self.steps_per_epoch)
        perm = None if _cache is None else _cache.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            if _cache is not None:
                _cache.clear()
                _cache[epoch] = perm
        batch = perm[j * self.global_batch : (j + 1) * self.global_batch]
        return np.sort(batch[self.rank :: self.world_size])

    def __iter__(self) -> Iterator[np.ndarray]:
        cache: dict[int, np.ndarray] = {}
        for step in range(self.start_step, self.total_steps):
            yield self.batch_for_step(step, cache)


def make_loader(
    dataset: TokenTextDataset, sampler: StepBatchSampler, workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding one :class:`TokenBatch` per sampler batch (``batch_size=None``).

    Starting an iterator draws a worker seed; the loader's own generator takes that draw, so the global
    torch RNG (dropout) is the same after a resume as in an uninterrupted run. Nothing in the workers is
    random: the batches come from ``sampler``.
    """
    return torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_identity,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0),
    )


def _identity(batch: TokenBatch) -> TokenBatch:
    return batch
