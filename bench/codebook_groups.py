"""A coarser vocabulary for the decoder without re-training the VQ-GAN: a copy of the token cache with
the codebook's codes merged into ``--groups`` groups.

    python bench/codebook_groups.py --groups 64 --out /tmp/tokens-64      # in a folder where `make demo` ran
    python bench/tune_generator.py --tokens /tmp/tokens-64 --decoder "init=scratch,steps=2000,warmup_steps=100"

The demo VQ-GAN spreads its tokens over nearly all of its codes, so much of what a token says is fine
texture that neither its neighbours nor the report predict. The question this answers: does a decoder
that predicts fewer, coarser codes generate better or more varied images? The codes' vectors are
clustered with k-means (seed 0), and each code is replaced by the member of its cluster nearest the centre, so
the VQ-GAN decodes the merged ids unchanged. A decoder trained on the copy keeps the codebook's size of
outputs and soon learns to give the merged-away codes no probability. The copy keeps the cache's
``meta.json`` (so it still names the VQ-GAN that made it, which generation checks), with ``code_groups``
added. ``bench/tune_generator.py --tokens <out>`` then trains decoders on it and measures them; its
reference line gives the merged tokens' own reconstruction FID, MS-SSIM and fidelity. Results:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raygen.data.token_dataset import read_meta  # noqa: E402
from raygen.generation.render import load_vqgan  # noqa: E402
from raygen.io import atomic_open, write_json  # noqa: E402
from raygen.metrics.reconstruction import codebook_usage  # noqa: E402


def code_groups(codebook: np.ndarray, groups: int, seed: int) -> np.ndarray:
    """(V, D) code vectors -> (V,) the id each code becomes: the member of its k-means cluster nearest the
    cluster's centre. Choosing among the members (not among all codes) keeps every representative its own
    image and gives exactly ``groups`` ids."""
    from sklearn.cluster import KMeans

    fit = KMeans(groups, n_init=4, random_state=seed).fit(codebook)
    centres = torch.from_numpy(fit.cluster_centers_).float()
    distance = torch.cdist(centres, torch.from_numpy(codebook).float()).numpy()  # (groups, V)
    members = fit.labels_[None, :] == np.arange(groups)[:, None]
    representatives = np.where(members, distance, np.inf).argmin(axis=1)
    return representatives[fit.labels_]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vqgan", type=Path, default=Path("results/vqgan"))
    parser.add_argument("--tokens", type=Path, default=Path("results/tokenize"))
    parser.add_argument("--groups", type=int, required=True, help="how many codes remain")
    parser.add_argument("--out", type=Path, required=True, help="the merged token cache to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.resolve() == args.tokens.resolve():
        raise SystemExit("--out must not be the token cache itself")
    meta = read_meta(args.tokens)
    vq = load_vqgan(args.vqgan, torch.device("cpu"), token_meta=meta)  # the VQ-GAN that made these tokens
    codebook = vq.quantize.embedding.weight.detach().float().numpy()
    if not 1 < args.groups < len(codebook):
        raise SystemExit(f"--groups {args.groups}: expected between 2 and {len(codebook) - 1}")
    mapping = code_groups(codebook, args.groups, args.seed)
    tokens = np.load(args.tokens / "tokens.npy")
    merged = mapping[tokens.astype(np.int64)].astype(tokens.dtype)
    with atomic_open(args.out / "index.csv", "wb") as f:
        f.write((args.tokens / "index.csv").read_bytes())
    with atomic_open(args.out / "tokens.npy", "wb") as f:
        np.save(f, merged)
    meta["code_groups"] = {"groups": args.groups, "seed": args.seed, "from": str(args.tokens)}
    write_json(args.out / "meta.json", meta)  # last: a copy cut short has no meta, and readers refuse it
    usage_before, usage_after = (codebook_usage(torch.from_numpy(ids), len(codebook)) for ids in (tokens, merged))
    summary = {
        "groups": args.groups,
        "perplexity_before": round(usage_before.perplexity, 1),
        "perplexity_after": round(usage_after.perplexity, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
