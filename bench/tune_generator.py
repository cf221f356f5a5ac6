"""Decoder and decoding settings chosen on generator-training data only: fidelity, diversity, prompt following.

    python bench/tune_generator.py --variant "" --variant "steps=8" --variant "steps=8,cfg=5"   # after `make demo`
    python bench/tune_generator.py --decoder "steps=1000" --decoder "lr=2.0e-3" --out /tmp/tune-decoder
    python bench/tune_generator.py --decoder "init=scratch"    # the pinned pre-trained decoder's worth

Never reads a held-out (classifier validation / test) image or report, so nothing it chooses is tuned on
the data the evaluate stage reports. ``--decoder`` variants (``key=value`` overrides of the active
profile's ``train_decoder`` section) are trained with the stage's own command on the pipeline's caches
into ``<out>/<variant>/`` (reused when trained with the same params); without any, the pipeline's
``results/train_decoder/model.ckpt`` is measured. Per decoder and ``--variant`` (overrides of the
``synthesize`` section; "" = as in params.yaml) it prints one JSON line with

- ``fid_equal_n``: real half A vs images generated from half B's reports, beside ``floor``, real A vs
  real B: two patient-disjoint halves of the generator-training split (``--per-half`` images each);
- ``ms_ssim``: between two seeds of each of B's reports, beside ``ms_ssim_real_pairs`` (A_i vs B_i);
- ``fidelity_per_report``: the pinned judge's macro AUROC on B's generations against their reports'
  ``true_*`` labels, beside ``fidelity_real`` (the same judge on B's real images);
- ``fidelity_class_name``: its macro AUROC on ``--per-class`` images per class-name prompt against the
  class each asked for (the augmentation set's measure);
- ``fid_vs_reconstructed``: the VQ-GAN's reconstructions of A (the decoding of their cached tokens) vs
  B's generations, the decoder's own gap, beside the reference line's ``reconstructed_floor``
  (reconstructed A vs reconstructed B). The reference line also gives the tokenizer's limits:
  ``fid_reconstructed`` (real A vs reconstructed B), ``ms_ssim_reconstructed_pairs`` and
  ``fidelity_reconstructed``, what a decoder that got every token right would score.

The judge and FID features are the demo's pinned DenseNet-121 (``weights/demo``), trained on a dataset
that shares no patient with the demo's. The halves are images the decoder was trained on, so a decoder
that memorised them would look better here than on held-out data: compare variants of one decoder, and
keep the evaluate stage's memorisation check in view.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from variants import parse_variant, variant_name, variant_params  # noqa: E402

from raygen.config import load_section, load_stage_params, read_params, resolve_profile  # noqa: E402
from raygen.data.images import signed_to_uint8  # noqa: E402
from raygen.data.labels import CLASSES  # noqa: E402
from raygen.data.synthetic_plan import class_prompt  # noqa: E402
from raygen.data.text_cache import TextCache  # noqa: E402
from raygen.data.token_dataset import read_meta, token_ids_for  # noqa: E402
from raygen.generation.prompts import encode_prompts  # noqa: E402
from raygen.generation.render import generate_images, load_vqgan, tokens_to_images  # noqa: E402
from raygen.generation.sampler import TrainedDecoder, load_decoder_checkpoint  # noqa: E402
from raygen.metrics.conditional import classifier_probs, conditional_fidelity, load_pinned_network  # noqa: E402
from raygen.metrics.fid import compute_fid  # noqa: E402
from raygen.metrics.fidelity import patient_halves  # noqa: E402
from raygen.metrics.image_sets import load_images_checked  # noqa: E402
from raygen.metrics.image_similarity import ms_ssim  # noqa: E402
from raygen.runtime import configure_torch  # noqa: E402
from raygen.stages.embed_text import EmbedTextParams  # noqa: E402
from raygen.stages.synthesize import SynthesizeParams  # noqa: E402

TRUE = [f"true_{c}" for c in CLASSES]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] generations -> [0, 1] as the 8-bit PNGs the evaluate stage reads."""
    return signed_to_uint8(images).float() / 255.0


def train_decoder(raw: dict, profile: str, text: str, args: argparse.Namespace) -> Path:
    """The ``train_decoder`` stage's own command with ``text``'s overrides on the pipeline's caches, into
    ``<out>/<variant>/``; returns its model.ckpt (an existing one trained with the same params is reused)."""
    folder = args.out / variant_name(text)
    folder.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_dump(variant_params(raw, profile, "train_decoder", parse_variant(text)), sort_keys=False)
    done = folder / "model.ckpt"
    stamp = folder / "params.yaml"
    if done.is_file() and stamp.is_file() and stamp.read_text() == params:
        return done
    done.unlink(missing_ok=True)
    stamp.write_text(params)
    command = [
        *(sys.executable, "-m", "raygen.stages.train_decoder", "--params", str(stamp), "--profile", profile),
        *("--tokens", str(args.tokens), "--text", str(args.text), "--manifest", str(args.generator)),
        *("--vqgan", str(args.vqgan), "--demo-weights", str(args.demo_weights)),  # init: demo checks both
        *("--out", str(folder), "--log", str(folder / "stage.log"), "--no-resume"),
    ]
    with (folder / "console.txt").open("w") as console:
        env = {**os.environ, "RAYGEN_TRACKING": "off"}
        subprocess.run(command, check=True, env=env, stdout=console, stderr=subprocess.STDOUT)
    return done


class Bench:
    """The fixed halves, real images, judge and prompts every decoder and variant is measured against."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.device = device
        token_meta = read_meta(args.tokens)
        vq = load_vqgan(args.vqgan, device, token_meta=token_meta)  # it decodes these tokens too
        self.vq = vq.to(memory_format=torch.channels_last)
        self.judge = load_pinned_network(args.demo_weights, device)
        self.features = self.judge.extractor(device)
        frame = pd.read_csv(args.generator)
        frame = frame[frame["split"] == "train"].reset_index(drop=True)
        halves = patient_halves(frame, args.seed)
        n = min(args.per_half, len(halves.a))
        self.a, self.b = frame.iloc[halves.a[:n]], frame.iloc[halves.b[:n]]
        side = token_meta["resolution"]  # the images the decoder makes
        real_a = self._real(args.jpg_root, self.a, side)
        self.real_b = self._real(args.jpg_root, self.b, side)
        self.feats_a = self.features(real_a).numpy()
        recon_a, recon_b = (self._reconstructed(args.tokens, half) for half in (self.a, self.b))
        self.feats_recon_a = self.features(recon_a).numpy()
        cache = TextCache(args.text)
        batch = cache.get(cache.rows_for(self.b["study_id"]))
        self.states_b, self.lengths_b = batch.states, batch.lengths
        self.labels_b = self.b[TRUE].to_numpy(dtype=np.int64)
        self.text_params = load_section(args.params, "embed_text", EmbedTextParams, args.profile)
        self.params_path = args.params
        self.per_class = args.per_class
        self.reference = {
            "n_per_half": n,
            "floor": round(self._fid(self.real_b), 2),
            "ms_ssim_real_pairs": round(ms_ssim(real_a, self.real_b).value, 4),
            "fidelity_real": round(self._fidelity(self.labels_b, self.real_b), 4),
            "fid_reconstructed": round(self._fid(recon_b), 2),
            "reconstructed_floor": round(self._fid(recon_b, self.feats_recon_a), 2),
            "ms_ssim_reconstructed_pairs": round(ms_ssim(recon_a, recon_b).value, 4),
            "fidelity_reconstructed": round(self._fidelity(self.labels_b, recon_b), 4),
        }

    @staticmethod
    def _real(root: Path, rows: pd.DataFrame, side: int) -> torch.Tensor:
        images, ok = load_images_checked([root / p for p in rows["path"]], side, workers=2)
        if not ok.all():
            raise SystemExit(f"{int((~ok).sum())} real images unreadable under {root}")
        return images

    def _reconstructed(self, tokens: Path, rows: pd.DataFrame) -> torch.Tensor:
        ids, found = token_ids_for(tokens, list(rows["dicom_id"]))
        if not found.all():
            raise SystemExit(f"{int((~found).sum())} real images have no tokens in {tokens}")
        return to_unit(tokens_to_images(self.vq, ids))

    def _fid(self, images: torch.Tensor, reference: np.ndarray | None = None) -> float:
        """FID of ``images`` against real A's features (or ``reference``)."""
        reference = self.feats_a if reference is None else reference
        return compute_fid(reference, self.features(images).numpy(), self.features.name, 10, 50).fid

    def _fidelity(self, labels: np.ndarray, images: torch.Tensor) -> float:
        probs = classifier_probs(self.judge.model, images, self.judge.resolution, self.device)
        return conditional_fidelity(labels, probs)["macro"]

    def _generate(self, trained: TrainedDecoder, states: torch.Tensor, lengths: torch.Tensor, config, seed: int):
        images, _ = generate_images(trained, states, lengths, config, seed, self.vq)
        return to_unit(images)

    def class_prompts(self, trained: TrainedDecoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Each class-name prompt ``per_class`` times, CLASSES order."""
        texts = [class_prompt(SynthesizeParams().class_template, c) for c in CLASSES]
        meta = trained.config["text_meta"]
        states, lengths = encode_prompts(texts, self.text_params, self.params_path, None, meta, self.device)
        return states.repeat_interleave(self.per_class, dim=0), lengths.repeat_interleave(self.per_class, dim=0)

    def measure(self, trained: TrainedDecoder, prompts: tuple[torch.Tensor, torch.Tensor], params) -> dict:
        """One decoding variant of ``trained``; ``prompts`` from :meth:`class_prompts` (encoded once per decoder)."""
        config = params.sampler()
        started = time.perf_counter()
        gen0 = self._generate(trained, self.states_b, self.lengths_b, config, 0)
        gen1 = self._generate(trained, self.states_b, self.lengths_b, config, 1)
        classes = self._generate(trained, *prompts, config, 2)
        labels = np.repeat(np.eye(len(CLASSES), dtype=np.int64), self.per_class, axis=0)
        return {
            "fid_equal_n": round(self._fid(gen0), 2),
            "fid_vs_reconstructed": round(self._fid(gen0, self.feats_recon_a), 2),
            "ms_ssim": round(ms_ssim(gen0, gen1).value, 4),
            "fidelity_per_report": round(self._fidelity(self.labels_b, gen0), 4),
            "fidelity_class_name": round(self._fidelity(labels, classes), 4),
            "seconds": round(time.perf_counter() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("results/train_decoder/model.ckpt"))
    parser.add_argument("--vqgan", type=Path, default=Path("results/vqgan"))
    parser.add_argument("--text", type=Path, default=Path("results/embed_text"))
    parser.add_argument("--tokens", type=Path, default=Path("results/tokenize"))
    parser.add_argument("--generator", type=Path, default=Path("results/cohort/generator.csv"))
    parser.add_argument("--jpg-root", type=Path, default=Path("data/demo/mimic-cxr-jpg/2.0.0"))
    parser.add_argument("--demo-weights", type=Path, default=Path("weights/demo"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile", default=None, help="params profile (default: the file's own)")
    parser.add_argument("--decoder", action="append", default=[], help='train_decoder overrides, e.g. "steps=1000"')
    parser.add_argument("--variant", action="append", default=[], help='synthesize overrides, e.g. "steps=8,cfg=5"')
    parser.add_argument("--out", type=Path, default=Path("/tmp/raygen-tune-generator"))
    parser.add_argument("--per-half", type=int, default=85, help="images per real half (the demo's FID floor: 85)")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device("cpu")
    configure_torch(device)
    raw = read_params(args.params)
    profile = resolve_profile(raw, args.profile)
    _, base = load_stage_params(args.params, "synthesize", SynthesizeParams, profile)
    bench = Bench(args, device)
    print(json.dumps({"reference": bench.reference}), flush=True)
    decoders = {text: train_decoder(raw, profile, text, args) for text in args.decoder}
    if not decoders:
        decoders = {"pipeline": args.checkpoint}
    for name, checkpoint in decoders.items():
        trained = load_decoder_checkpoint(checkpoint, device)
        prompts = bench.class_prompts(trained)
        for text in args.variant or [""]:
            result = bench.measure(trained, prompts, replace(base, **parse_variant(text)))
            row = {"decoder": name or "params.yaml", "variant": text or "params.yaml", **result}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
