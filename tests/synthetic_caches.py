"""Token and text caches with the real layouts, for tests and benchmarks (no images, no models).

Used by the decoder tests and ``bench/bench_decoder.py`` (which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_synthetic_caches(
    root: str | Path,
    n_items: int,
    grid: tuple[int, int],
    codebook_size: int,
    text_len: int,
    text_dim: int,
    seed: int = 0,
    val_share: float = 0.1,
    n_prompts: int = 8,
) -> tuple[Path, Path, Path]:
    """Write token + text caches and a generator manifest with the real layouts, for tests and benchmarks.

    Each pair belongs to one of ``n_prompts`` synthetic "findings": its text states are that
    finding's embedding plus noise, its tokens that finding's pattern with 10% of ids replaced, so
    the text is informative and a decoder can learn the mapping. Returns (tokens_dir, text_dir,
    manifest_path) under ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    tokens_dir, text_dir, cohort = root / "tokenize", root / "embed_text", root / "cohort"
    for d in (tokens_dir, text_dir, cohort):
        d.mkdir(parents=True, exist_ok=True)
    finding = rng.integers(0, n_prompts, n_items)
    dicom = [f"d{i:07d}" for i in range(n_items)]
    study = np.arange(n_items, dtype=np.int64) + 50_000_000
    _write_tokens(tokens_dir, rng, finding, dicom, grid, codebook_size, n_prompts)
    _write_text(text_dir, rng, finding, study, text_len, text_dim, n_prompts)
    split = np.where(rng.random(n_items) < val_share, "val", "train")
    manifest = pd.DataFrame(
        {
            "dicom_id": dicom,
            "subject_id": 10_000_000 + np.arange(n_items),
            "study_id": study,
            "split": split,
            "view": "PA",
            "path": [f"files/p10/p{10_000_000 + i}/s{s}/{d}.jpg" for i, s, d in zip(range(n_items), study, dicom)],
            "text": [f"Synthetic finding {f}." for f in finding],
        }
    )
    manifest.to_csv(cohort / "generator.csv", index=False)
    return tokens_dir, text_dir, cohort / "generator.csv"


def _write_tokens(
    tokens_dir: Path,
    rng: np.random.Generator,
    finding: np.ndarray,
    dicom: list[str],
    grid: tuple[int, int],
    codebook_size: int,
    n_prompts: int,
) -> None:
    """tokens.npy (each finding's pattern, 10% of ids replaced), index.csv, meta.json."""
    n_items, n_tok = len(finding), grid[0] * grid[1]
    patterns = rng.integers(0, codebook_size, (n_prompts, n_tok))
    tokens = patterns[finding]
    noise = rng.random((n_items, n_tok)) < 0.1
    tokens[noise] = rng.integers(0, codebook_size, int(noise.sum()))
    tok = np.lib.format.open_memmap(tokens_dir / "tokens.npy", mode="w+", dtype=np.int16, shape=(n_items, n_tok))
    tok[:] = tokens
    tok.flush()
    pd.DataFrame({"dicom_id": dicom, "row": np.arange(n_items)}).to_csv(tokens_dir / "index.csv", index=False)
    (tokens_dir / "meta.json").write_text(
        json.dumps({"grid": list(grid), "codebook_size": codebook_size, "resolution": grid[0] * 16, "synthetic": True})
    )


def _write_text(
    text_dir: Path,
    rng: np.random.Generator,
    finding: np.ndarray,
    study: np.ndarray,
    text_len: int,
    text_dim: int,
    n_prompts: int,
) -> None:
    """states.npy (each finding's embedding plus noise, padding zeroed), lengths, null prompt, index, meta."""
    n_items = len(finding)
    prompt_emb = rng.standard_normal((n_prompts, text_len, text_dim)).astype(np.float32)
    lengths = rng.integers(max(1, text_len // 4), text_len + 1, n_items).astype(np.int32)
    states = np.lib.format.open_memmap(
        text_dir / "states.npy", mode="w+", dtype=np.float16, shape=(n_items, text_len, text_dim)
    )
    for start in range(0, n_items, 512):
        stop = min(start + 512, n_items)
        block = prompt_emb[finding[start:stop]] + 0.1 * rng.standard_normal((stop - start, text_len, text_dim))
        block[np.arange(text_len)[None, :] >= lengths[start:stop, None]] = 0.0
        states[start:stop] = block.astype(np.float16)
    states.flush()
    np.save(text_dir / "lengths.npy", lengths)
    null = np.zeros((text_len, text_dim), np.float16)
    null[0] = 1.0
    np.save(text_dir / "null.npy", null)
    pd.DataFrame({"study_id": study, "row": np.arange(n_items)}).to_csv(text_dir / "index.csv", index=False)
    (text_dir / "meta.json").write_text(
        json.dumps(
            {"max_length": text_len, "dim": text_dim, "null_length": 1, "encoder": "synthetic", "normalise": False}
        )
    )
