"""The tokenizer's limit of any VQ-GAN folder on a finished run's held-out images, as `evaluate` measures it.

    python bench/tokenizer_limit.py --vqgan /path/to/other/vqgan     # in a folder where `make demo` ran

Encodes and decodes every held-out real image of ``results/synthesize/per_report.csv`` with ``--vqgan``
(a ``config.yaml`` + ``model.ckpt`` folder; default: the run's own ``results/vqgan``), rounds the
reconstructions to 8 bits like the stage's PNGs, and prints one JSON line: the equal-N FID of real half A
against reconstructed half B beside the real floor and the reconstructed floor (the evaluate stage's
patient-disjoint halves), SSIM to the real images, MS-SSIM between the reconstructed pairs, and the
pinned judge's macro AUROC on the reconstructions. With the run's own VQ-GAN it reproduces the run's
``metrics.json``; with another it says what that tokenizer would give before anything is retrained.
Features and judge: the demo's pinned DenseNet-121 (``weights/demo``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raygen.data.images import signed_to_uint8  # noqa: E402
from raygen.data.labels import CLASSES  # noqa: E402
from raygen.generation.render import load_vqgan  # noqa: E402
from raygen.metrics.conditional import classifier_probs, conditional_fidelity, load_pinned_network  # noqa: E402
from raygen.metrics.fid import compute_fid  # noqa: E402
from raygen.metrics.fidelity import patient_halves  # noqa: E402
from raygen.metrics.image_sets import load_images_checked  # noqa: E402
from raygen.metrics.image_similarity import ms_ssim, ssim  # noqa: E402


@torch.inference_mode()
def reconstruct(vq, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """[0, 1] images through ``vq``'s encoder, quantiser and decoder, back to 8-bit [0, 1] (the stage's PNGs)."""
    out = [vq.decode_ids(vq.encode_ids(chunk * 2 - 1)).float().clamp(-1, 1) for chunk in images.split(batch_size)]
    return signed_to_uint8(torch.cat(out)).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vqgan", type=Path, default=Path("results/vqgan"))
    parser.add_argument("--synthetic", type=Path, default=Path("results/synthesize"))
    parser.add_argument("--jpg-root", type=Path, default=Path("data/demo/mimic-cxr-jpg/2.0.0"))
    parser.add_argument("--demo-weights", type=Path, default=Path("weights/demo"))
    parser.add_argument("--seed", type=int, default=0, help="the evaluate section's seed (halves, KID subsets)")
    args = parser.parse_args()
    device = torch.device("cpu")
    per_report = pd.read_csv(args.synthetic / "per_report.csv", dtype={"dicom_id": str})
    vq = load_vqgan(args.vqgan, device, token_meta=None)  # decodes the ids it encodes itself
    real, ok = load_images_checked([args.jpg_root / p for p in per_report["real_path"]], vq.config.resolution, 2)
    if not ok.all():
        raise SystemExit(f"{int((~ok).sum())} held-out images unreadable under {args.jpg_root}")
    recon = reconstruct(vq, real)
    judge = load_pinned_network(args.demo_weights, device)
    features = judge.extractor(device)
    f_real, f_recon = np.asarray(features(real)), np.asarray(features(recon))
    halves = patient_halves(per_report, args.seed)
    a, b = halves.a, halves.b

    def fid(first: np.ndarray, second: np.ndarray) -> float:
        return round(compute_fid(first[a], second[b], features.name, 100, 100, args.seed).fid, 2)

    labels = per_report[[f"true_{c}" for c in CLASSES]].fillna(0).to_numpy(np.int64)
    probs = classifier_probs(judge.model, recon, judge.resolution, device)
    row = {
        "vqgan": str(args.vqgan),
        "n_per_half": len(a),
        "floor": fid(f_real, f_real),
        "real_a_vs_reconstructed_b": fid(f_real, f_recon),
        "reconstructed_floor": fid(f_recon, f_recon),
        "ssim": round(float(ssim(real, recon).mean()), 4),
        "ms_ssim_reconstructed_pairs": round(ms_ssim(recon[a], recon[b]).value, 4),
        "fidelity_reconstructed": round(conditional_fidelity(labels, probs)["macro"], 4),
        "extractor": features.name,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
