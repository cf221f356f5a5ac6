"""Prompt following against classifier-free guidance: conditional fidelity of class-name prompts per CFG scale.

    PYTHONPATH=. python bench/bench_guidance.py --classifier results/train_classifier/real/model.ckpt \\
        [--cfg 1 3] [--per-class 30] [--out /tmp/guidance]

Generates ``--per-class`` images for each of the 10 class-name prompts with the trained decoder and
VQ-GAN of the current profile (the synthesize stage's sampler and seeds), scores them with the real-only
classifier and prints one JSON line per scale: macro and per-class AUROC against the class each prompt
asked for (:func:`raygen.metrics.conditional.conditional_fidelity`), and the time taken.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from raygen.config import load_section
from raygen.data.images import load_pngs
from raygen.data.labels import CLASSES
from raygen.data.synthetic_plan import class_prompt
from raygen.generation.prompts import encode_prompts
from raygen.generation.render import load_vqgan
from raygen.generation.sampler import load_decoder_checkpoint
from raygen.generation.synthetic_sets import generate_set
from raygen.metrics.conditional import classifier_probs, conditional_fidelity, load_classifier
from raygen.runtime import configure_torch
from raygen.stages import synthesize as syn
from raygen.stages.embed_text import EmbedTextParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", type=Path, default=Path("results/train_classifier/real/model.ckpt"))
    parser.add_argument("--checkpoint", type=Path, default=Path("results/train_decoder/model.ckpt"))
    parser.add_argument("--vqgan", type=Path, default=Path("results/vqgan"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("/tmp/raygen-guidance"))
    args = parser.parse_args()
    device = torch.device("cpu")
    configure_torch(device)
    trained = load_decoder_checkpoint(args.checkpoint, device)
    vq = load_vqgan(args.vqgan, device, token_meta=trained.token_meta).to(memory_format=torch.channels_last)
    real_only = load_classifier(args.classifier, device)  # never the judge evaluate reports with
    base = syn.SynthesizeParams()
    texts = [class_prompt(base.class_template, c) for c in CLASSES]
    text_params = load_section(args.params, "embed_text", EmbedTextParams)
    states, lengths = encode_prompts(texts, text_params, args.params, None, trained.config["text_meta"], device)
    labels = np.repeat(np.eye(len(CLASSES), dtype=np.int64), args.per_class, axis=0)
    for scale in args.cfg:
        started = time.perf_counter()
        config = replace(base, cfg=scale).sampler()
        paths = []
        for k, name in enumerate(CLASSES):
            group = [args.out / f"cfg{scale:g}" / f"{k}_{i:04d}.png" for i in range(args.per_class)]
            generate_set(
                trained, vq, states[k : k + 1], lengths[k : k + 1], group, config, base.seed, 100 + k, None, name
            )
            paths += group
        probs = classifier_probs(real_only.model, load_pngs(paths), real_only.resolution, device)
        score = conditional_fidelity(labels, probs)
        print(
            json.dumps(
                {
                    "cfg": scale,
                    "per_class_images": args.per_class,
                    "macro_auroc": round(score["macro"], 4),
                    "per_class": {c: round(v, 3) for c, v in score["per_class"].items()},
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
