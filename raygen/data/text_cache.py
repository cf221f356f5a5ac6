"""The text-embedding cache: prompts in (:func:`read_prompts`), writer (:func:`write_text_cache`), reader
(:class:`TextCache`).

Layout of ``results/embed_text/`` (the contract every reader relies on)::

    states.npy   float16 (U, L, D) .npy memmap: one row per unique prompt text, normalised per
                 token, positions >= length exactly 0
    lengths.npy  int32 (U,): real tokens per row, [CLS] and [SEP] included, in [2, L]
    index.csv    study_id,row  (sorted by study_id; several studies may share a row)
    null.npy     float16 (L, D): the empty prompt "" encoded the same way, for classifier-free
                 guidance; its length (2: [CLS] [SEP]) is meta.json's ``null_length``
    meta.json    encoder identity, L, D, normalize, counts, token-length stats; written last, so
                 its presence marks a complete cache

Masks: the attention mask is ``arange(L) < length``. The reader hands out ``pad_mask`` with the
project convention for ``_mask`` names (style.md): **True = padding**, i.e. ``~attention_mask``.
(SDPA's boolean ``attn_mask`` is the opposite, True = attend: pass ``~pad_mask`` there.)

Deduplication: texts are compared after collapsing whitespace (``" ".join(text.split())``), which
BERT tokenisation ignores anyway; each unique text is encoded once. Empty or whitespace-only
texts (and missing values) are **dropped**: counted in meta.json (``empty_texts``) with a warning,
and absent from index.csv, so :meth:`TextCache.rows_for` raises for them instead of silently
returning some other study's row. A study that appears with two different texts is an error.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from raygen.io import atomic_path, write_csv, write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1
STATES, LENGTHS, INDEX, NULL, META = "states.npy", "lengths.npy", "index.csv", "null.npy", "meta.json"
UNK_ERROR_FRACTION = 0.5  # above this share of [UNK] tokens the tokenizer does not fit the texts
UNK_WARN_FRACTION = 0.02
PROMPT_COLUMNS = ("study_id", "text")  # what the prompt manifests must have


class EncoderLike(Protocol):
    """What the writer needs from a text encoder (:class:`raygen.models.text_encoder.TextEncoder`)."""

    max_length: int
    dim: int

    def token_lengths(self, texts: list[str]) -> np.ndarray: ...

    def encode(self, texts: list[str], pad_to_max: bool = True) -> Any: ...


@dataclass(frozen=True)
class CacheStats:
    """What :func:`write_text_cache` did (also stored in meta.json)."""

    studies: int  # studies in index.csv
    unique_texts: int  # rows U of states.npy
    duplicate_texts: int  # studies whose text was already encoded for another study
    empty_texts: int  # studies dropped for an empty / whitespace-only / missing text
    truncated: int  # unique texts longer than L tokens, cut to L
    unk_tokens: int  # [UNK] tokens over all unique texts (after truncation)
    tokens: int  # real tokens over all unique texts (after truncation)
    seconds: float  # wall time of the encoding loop


def canonical_text(text: Any) -> str:
    """The dedupe key: whitespace collapsed; missing values (None / NaN) become ""."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    return " ".join(str(text).split())


def unique_prompts(study_ids: list[int], texts: list[Any]) -> tuple[list[str], dict[int, int], list[int]]:
    """Deduplicate: (unique texts in first-appearance order, study_id -> row, dropped study ids).

    Raises ValueError when one study comes with two different texts.
    """
    rows: dict[str, int] = {}
    study_row: dict[int, int] = {}
    study_text: dict[int, str] = {}
    dropped: dict[int, None] = {}  # ordered set
    for sid, raw in zip(study_ids, texts):
        sid, text = int(sid), canonical_text(raw)
        if sid in study_text and study_text[sid] != text:
            raise ValueError(f"study {sid} has two different texts: {study_text[sid]!r} and {text!r}")
        study_text[sid] = text
        if not text:
            dropped[sid] = None
            continue
        study_row[sid] = rows.setdefault(text, len(rows))
    return list(rows), study_row, list(dropped)


def read_prompts(paths: list[Path]) -> pd.DataFrame:
    """Concatenate the ``study_id``, ``text`` columns of the manifests; text kept verbatim ("" if blank)."""
    frames = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"prompt manifest not found: {path} (run the cohort stage first)")
        frame = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
        missing = [c for c in PROMPT_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(frame.columns)}")
        frames.append(frame[list(PROMPT_COLUMNS)].astype({"study_id": "int64"}))
        log.info("%s: %d rows, %d studies", path, len(frame), frame["study_id"].nunique())
    return pd.concat(frames, ignore_index=True)


def write_text_cache(
    out_dir: str | Path,
    study_ids: list[int],
    texts: list[Any],
    encoder: EncoderLike,
    batch_size: int = 64,
    meta: dict[str, Any] | None = None,
) -> CacheStats:
    """Encode each unique text once and write the cache (layout in the module docstring).

    study_ids / texts: parallel lists (one entry per manifest row; repeats are fine).
    encoder:           gives (B, T, D) float states with padding zeroed, lengths, truncated, unk_count.
    meta:              extra entries for meta.json (encoder identity, resolved params).
    Every file is written atomically; meta.json last.
    """
    out_dir = Path(out_dir)
    (out_dir / META).unlink(missing_ok=True)  # no meta.json = incomplete cache, until this run finishes
    uniques, study_row, dropped = _texts_to_encode(study_ids, texts)
    full_lengths = encoder.token_lengths(uniques)  # (U,) untruncated
    encoded = _encode_states(out_dir / STATES, uniques, full_lengths, encoder, batch_size)
    _check_unk(encoded.unk_tokens, encoded.tokens)
    null = encoder.encode([""], pad_to_max=True)

    _save_npy(out_dir / LENGTHS, encoded.lengths)
    _save_npy(out_dir / NULL, null.states[0].numpy().astype(np.float16))  # (L, D)
    index = pd.DataFrame(sorted(study_row.items()), columns=["study_id", "row"])
    write_csv(out_dir / INDEX, index)
    stats = CacheStats(
        studies=len(study_row),
        unique_texts=len(uniques),
        duplicate_texts=len(study_row) - len(uniques),
        empty_texts=len(dropped),
        truncated=encoded.truncated,
        unk_tokens=encoded.unk_tokens,
        tokens=encoded.tokens,
        seconds=round(encoded.seconds, 3),
    )
    write_json(out_dir / META, _cache_meta(meta or {}, encoder, int(null.lengths[0]), dropped, full_lengths, stats))
    return stats


def _cache_meta(
    extra: dict[str, Any],
    encoder: EncoderLike,
    null_length: int,
    dropped: list[int],
    full_lengths: np.ndarray,
    stats: CacheStats,
) -> dict[str, Any]:
    """meta.json: ``extra`` (encoder identity, params), the layout, the dropped studies, token-length stats."""
    return {
        **extra,
        "version": CACHE_VERSION,
        "max_length": int(encoder.max_length),
        "dim": int(encoder.dim),
        "dtype": "float16",
        "null_length": null_length,
        "null_text": "",
        "pad_mask": "True = padding; attention mask = arange(L) < length",
        "dropped_study_ids": dropped,
        "token_lengths": _length_stats(full_lengths),
        "stats": {k: v for k, v in asdict(stats).items() if k != "seconds"},  # deterministic meta for DVC
    }


def _texts_to_encode(study_ids: list[int], texts: list[Any]) -> tuple[list[str], dict[int, int], list[int]]:
    """:func:`unique_prompts`, with a warning for the dropped studies and an error when nothing is left."""
    uniques, study_row, dropped = unique_prompts(study_ids, texts)
    if dropped:
        log.warning(
            "%d studies have an empty impression and are left out of the cache (first: %s)", len(dropped), dropped[:5]
        )
    if not uniques:
        raise ValueError("no non-empty prompt texts to encode")
    return uniques, study_row, dropped


class EncodedStates(NamedTuple):
    """What :func:`_encode_states` wrote and counted: lengths (U,) int32 and totals over the unique texts."""

    lengths: np.ndarray
    truncated: int
    unk_tokens: int
    tokens: int
    seconds: float


def _encode_states(
    path: Path, uniques: list[str], full_lengths: np.ndarray, encoder: EncoderLike, batch_size: int
) -> EncodedStates:
    """Encode ``uniques`` in batches into the (U, L, D) float16 memmap ``path`` (written atomically)."""
    big_l, dim = int(encoder.max_length), int(encoder.dim)
    # Longest first: similar lengths share a batch (little padding) and memory peaks show at once.
    order = np.argsort(-full_lengths, kind="stable")
    lengths = np.zeros(len(uniques), dtype=np.int32)
    counts = {"truncated": 0, "unk": 0, "tokens": 0}
    t0 = time.perf_counter()
    with atomic_path(path) as tmp:
        states = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(uniques), big_l, dim))
        bar = tqdm(range(0, len(order), batch_size), desc="embed_text", unit="batch", mininterval=5)
        for start in bar:
            rows = np.sort(order[start : start + batch_size])
            enc = encoder.encode([uniques[r] for r in rows], pad_to_max=False)
            width = enc.states.shape[1]
            states[rows, :width] = enc.states.numpy().astype(np.float16)  # beyond width: zeros of the new file
            lengths[rows] = enc.lengths.numpy()
            counts["truncated"] += int(enc.truncated.sum())
            counts["unk"] += int(enc.unk_count.sum())
            counts["tokens"] += int(enc.lengths.sum())
            bar.set_postfix(prompts_per_s=f"{(start + len(rows)) / (time.perf_counter() - t0):.1f}")
        states.flush()
        del states
    seconds = time.perf_counter() - t0
    return EncodedStates(lengths, counts["truncated"], counts["unk"], counts["tokens"], seconds)


def log_summary(stats: CacheStats, max_length: int, rate: float, out_dir: Path) -> None:
    """The ``embed_text`` stage's closing lines: counts, speed, and a warning when texts were cut."""
    log.info(
        "%d studies -> %d unique texts (%d duplicates, %d empty dropped, %d truncated at L=%d); "
        "encoded in %.1f s (%.1f prompts/s); cache in %s",
        stats.studies,
        stats.unique_texts,
        stats.duplicate_texts,
        stats.empty_texts,
        stats.truncated,
        max_length,
        stats.seconds,
        rate,
        out_dir,
    )
    if stats.truncated:
        log.warning(
            "%d of %d unique texts were longer than max_length=%d tokens and were truncated",
            stats.truncated,
            stats.unique_texts,
            max_length,
        )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array)


def _check_unk(unk: int, tokens: int) -> None:
    """Raise when the tokenizer maps the corpus mostly to [UNK]; warn above a few percent."""
    share = unk / max(tokens, 1)
    if share > UNK_ERROR_FRACTION:
        raise ValueError(
            f"{share:.0%} of all prompt tokens are [UNK]: the tokenizer does not fit these "
            "texts (wrong vocabulary, or a tokenizer built the transformers v5 trap way)"
        )
    if share > UNK_WARN_FRACTION:
        log.warning("%.1f%% of prompt tokens are [UNK]", 100 * share)


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    """Untruncated token-length distribution of the unique texts (chooses L)."""
    q = np.percentile(lengths, [50, 90, 95, 99])
    return {
        "min": int(lengths.min()),
        "median": float(q[0]),
        "p90": float(q[1]),
        "p95": float(q[2]),
        "p99": float(q[3]),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
    }


class TextBatch(NamedTuple):
    """Cached text states for a batch; unpacks as ``states, pad_mask, lengths``.

    states:   (B, L, D) torch float16 (or the requested dtype), padding positions exactly 0.
    pad_mask: (B, L) torch bool, **True = padding** (style.md ``_mask`` convention);
              ``~pad_mask`` is the attention mask / SDPA ``attn_mask`` (True = attend).
    lengths:  (B,) torch int64, real tokens per row.
    """

    states: torch.Tensor
    pad_mask: torch.Tensor
    lengths: torch.Tensor


class TextCache:
    """Read-only access to a cache written by :func:`write_text_cache`.

    ``states`` is opened as a read-only memmap lazily in each process (DataLoader workers pickle
    the cache without its memmap and reopen it). Attributes: ``max_length`` L, ``dim`` D,
    ``lengths`` (U,) int32, ``null_states`` (L, D) float16 numpy, ``null_length`` int, ``meta`` dict.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)
        meta_path = self.dir / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} missing: run the embed_text stage first (or it did not finish)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.max_length = int(self.meta["max_length"])
        self.dim = int(self.meta["dim"])
        self.lengths: np.ndarray = np.load(self.dir / LENGTHS)
        self.null_states: np.ndarray = np.load(self.dir / NULL)
        self.null_length = int(self.meta["null_length"])
        index = pd.read_csv(self.dir / INDEX, dtype={"study_id": np.int64, "row": np.int64})
        self._row = dict(zip(index["study_id"].tolist(), index["row"].tolist()))
        self._states: np.ndarray | None = None
        shape = self.states.shape
        if shape != (len(self.lengths), self.max_length, self.dim) or self.null_states.shape != shape[1:]:
            raise ValueError(
                f"{self.dir}: states {shape}, lengths {self.lengths.shape}, null "
                f"{self.null_states.shape} disagree with meta L={self.max_length} D={self.dim}"
            )

    @property
    def states(self) -> np.ndarray:
        """(U, L, D) float16 read-only memmap."""
        if self._states is None:
            self._states = np.load(self.dir / STATES, mmap_mode="r")
        return self._states

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_states": None}

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def study_ids(self) -> np.ndarray:
        """(S,) int64 study ids in the index, sorted."""
        return np.array(sorted(self._row), dtype=np.int64)

    def rows_for(self, study_ids: Any) -> np.ndarray:
        """(N,) int64 rows of ``study_ids``; KeyError naming the studies not in the cache."""
        ids = np.asarray(study_ids, dtype=np.int64).reshape(-1)
        missing = [int(s) for s in ids if int(s) not in self._row]
        if missing:
            raise KeyError(
                f"{len(missing)} study ids not in the text cache {self.dir} (empty impression or "
                f"not in the prompt manifests), e.g. {missing[:5]}"
            )
        return np.array([self._row[int(s)] for s in ids], dtype=np.int64)

    def get(self, rows: Any, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> TextBatch:
        """States, padding mask and lengths of ``rows`` (ints in [0, U)); see :class:`TextBatch`."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(
                f"rows must be in [0, {len(self)}); got min {rows.min()} max {rows.max()} "
                "(the null prompt is get_null(), not row -1)"
            )
        states = torch.from_numpy(np.ascontiguousarray(self.states[rows]))  # (B, L, D) float16
        lengths = torch.from_numpy(self.lengths[rows].astype(np.int64))  # (B,)
        return self._batch(states, lengths, dtype, device)

    def get_null(
        self, batch_size: int = 1, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> TextBatch:
        """The empty prompt repeated ``batch_size`` times (classifier-free guidance's unconditional input)."""
        states = torch.from_numpy(self.null_states.copy())[None].expand(batch_size, -1, -1).contiguous()
        lengths = torch.full((batch_size,), self.null_length, dtype=torch.int64)
        return self._batch(states, lengths, dtype, device)

    def _batch(
        self, states: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> TextBatch:
        pad_mask = torch.arange(self.max_length)[None, :] >= lengths[:, None]  # (B, L) True = padding
        if dtype is not None:
            states = states.to(dtype)
        if device is not None:
            states, pad_mask, lengths = states.to(device), pad_mask.to(device), lengths.to(device)
        return TextBatch(states, pad_mask, lengths)
