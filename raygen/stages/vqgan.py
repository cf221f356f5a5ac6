"""Stage ``vqgan``: the image tokenizer, loaded from a taming checkpoint or trained here.

    raygen vqgan --manifest results/cohort/generator.csv --jpg-root DATA/mimic-cxr-jpg/2.0.0 \\
        --out results/vqgan --params params.yaml --log logs/vqgan.log \\
        [--pretrained-config 2021-12-17T08-58-54-project.yaml --pretrained-ckpt last.ckpt] \\
        [--lpips-dir DIR] [--fid-weights densenet121-a639ec97.pth] [--demo-weights weights/demo]

``source: pretrained`` (paper profile) installs UniXGen's MIMIC VQ-GAN: the yaml is copied, the
Lightning ``last.ckpt`` becomes a plain ``{"state_dict": ...}`` without optimizer or loss state.
``source: demo`` (demo profile) installs the demo's pinned VQ-GAN from ``--demo-weights`` the same way,
after checking both files against the folder's SHA256SUMS.
``source: train`` (smoke profile; ``raygen demo-weights``) trains a taming-style VQ-GAN on the
manifest's ``train`` rows: L1 reconstruction, codebook + commitment losses, a PatchGAN hinge loss with
taming's adaptive weight from ``disc_start`` on, LPIPS only when ``--lpips-dir`` holds its weights. It checkpoints
``train_state.pt`` every ``checkpoint_every`` steps (atomically) and resumes from it when killed.

Either way the model is evaluated on held-out ``val`` rows (ids -> pixels, as the pipeline uses
it). Outputs in ``--out``: ``model.ckpt`` + ``config.yaml`` (taming format, loadable by
``raygen.models.vqgan.load_taming`` and by taming itself), ``metrics.json`` (SSIM, PSNR,
reconstruction FID with its named extractor or null with the reason, codebook usage),
``reconstructions.png`` (originals beside reconstructions), ``losses.csv`` (training curves).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import check_cpu_threads, load_stage_params, to_dict
from raygen.io import write_json
from raygen.models.pinned import FID_NETWORK, VQGAN_CHECKPOINT, VQGAN_CONFIG, pinned_vqgan
from raygen.models.releases import LPIPS_FILES, TORCHVISION_DENSENET121
from raygen.models.taming_config import VQGANConfig
from raygen.runtime import configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)

STAGE = "vqgan"


@dataclass(frozen=True)
class VqganParams:
    """The ``vqgan`` section of params.yaml (defaults = the demo's training recipe; the demo profile itself
    installs the pinned VQ-GAN those settings describe, trained longer by profile ``demo_weights``)."""

    # train here | pretrained = UniXGen's MIMIC model (paper) | demo = the demo's pinned one (weights/demo)
    source: Literal["train", "pretrained", "demo"] = "train"
    # --- architecture (source=train; a pretrained or demo model brings its own yaml, checked against these) ---
    embed_dim: int = 64  # codebook vector size (UniXGen: 256)
    n_embed: int = 512  # codebook entries (UniXGen: 1024); demo images are one CT's DRRs, 512 suffice
    z_channels: int = 64  # encoder output channels (UniXGen: 256)
    resolution: int = 96  # pixels (UniXGen: 512); small enough for the CPU demo
    in_channels: int = 1  # grey radiographs (UniXGen: 3, grey copied to RGB)
    ch: int = 32  # base width; taming's GroupNorm(32) makes 32 the minimum
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)  # 4 levels -> f=8 -> 12x12 tokens at 96 px (16x16 at 128)
    num_res_blocks: int = 1  # per level (UniXGen: 2); the decoder has one more
    attn_resolutions: tuple[int, ...] = ()  # extra attention levels; the mid block always has one
    dropout: float = 0.0  # as UniXGen
    # --- training (source=train) ---
    steps: int = 150  # optimiser steps
    batch_size: int = 4  # images per step (CPU: more steps beat bigger batches in a fixed budget)
    lr: float = 2e-4  # Adam; taming uses 4.5e-6 x batch, too slow for a few hundred CPU steps
    disc_start: int = 100  # step at which the GAN loss switches on, once L1 has shaped the images
    disc_weight: float = 0.8  # taming's ImageNet/faces configs
    disc_ndf: int = 32  # discriminator base width (taming: 64)
    disc_layers: int = 2  # PatchGAN depth (taming: 3; 2 gives 30-px receptive fields)
    codebook_weight: float = 1.0  # taming default
    perceptual_weight: float = 0.0  # LPIPS weight; > 0 needs its files in --lpips-dir (an error otherwise)
    dead_code_every: int = 25  # steps between re-seeding unused codes from encoder outputs (0 = off);
    #                          short runs otherwise collapse onto a handful of codes
    seed: int = 0
    workers: int = 2  # DataLoader processes decoding JPEGs
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"
    cpu_threads: int = 0  # CPU threads (0: the launcher's: Snakemake's threads, else every core)
    train_images: int = 0  # cap on training images decoded into RAM (0 = all train rows)
    checkpoint_every: int = 50  # steps between atomic train_state.pt saves
    log_every: int = 10  # steps between loss-curve points (MLflow, losses.csv)
    # --- evaluation (both sources) ---
    eval_images: int = 64  # held-out val images for SSIM/PSNR/FID/codebook usage
    grid_images: int = 8  # originals (and their reconstructions) in reconstructions.png
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        check_cpu_threads(STAGE, self.cpu_threads)
        factor = self.model_config().factor
        if self.resolution < factor or self.resolution % factor:
            raise ValueError(
                f"vqgan.resolution {self.resolution} must be a multiple of {factor}, the downsampling "
                f"of ch_mult {list(self.ch_mult)}"
            )
        if self.steps < 1:  # checked whatever the source: a nonsense value is never kept for later
            raise ValueError(f"vqgan.steps must be >= 1 to train a VQ-GAN, got {self.steps}")
        if min(self.batch_size, self.eval_batch_size, self.checkpoint_every, self.log_every) < 1:
            raise ValueError("vqgan.batch_size, eval_batch_size, checkpoint_every and log_every must be >= 1")
        if self.lr <= 0 or self.disc_start < 0 or self.perceptual_weight < 0:
            raise ValueError("vqgan.lr must be > 0; disc_start and perceptual_weight >= 0")

    def model_config(self) -> VQGANConfig:
        """The network these params describe: the one mapping from params to :class:`VQGANConfig`."""
        return VQGANConfig(
            embed_dim=self.embed_dim,
            n_embed=self.n_embed,
            z_channels=self.z_channels,
            resolution=self.resolution,
            in_channels=self.in_channels,
            out_ch=self.in_channels,
            ch=self.ch,
            ch_mult=tuple(self.ch_mult),
            num_res_blocks=self.num_res_blocks,
            attn_resolutions=tuple(self.attn_resolutions),
            dropout=self.dropout,
        )


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument(
        "--manifest", type=Path, required=True, help="generator.csv (train rows train, val rows evaluate)"
    )
    parser.add_argument("--jpg-root", type=Path, required=True, help="DATA/mimic-cxr-jpg/2.0.0")
    parser.add_argument("--out", type=Path, required=True, help="output folder (results/vqgan)")
    parser.add_argument("--pretrained-config", type=Path, default=None, help="taming yaml (source=pretrained)")
    parser.add_argument(
        "--pretrained-ckpt", type=Path, default=None, help="taming/Lightning last.ckpt (source=pretrained)"
    )
    parser.add_argument(
        "--lpips-dir",
        type=Path,
        default=None,
        help=f"folder with {' and '.join(LPIPS_FILES)} for the perceptual loss",
    )
    parser.add_argument(
        "--fid-weights",
        type=Path,
        default=None,
        help="torchvision DenseNet-121 state dict for the reconstruction FID "
        f"(default: {TORCHVISION_DENSENET121} in the torch hub cache if present)",
    )
    parser.add_argument(
        "--demo-weights",
        type=Path,
        default=None,
        help=f"the demo's pinned weights folder (source=demo: {VQGAN_CONFIG}, {VQGAN_CHECKPOINT}; "
        f"its {FID_NETWORK} measures the reconstruction FID)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.training.vqgan import STATE_FILE, evaluate, install_pretrained, reconstruction_extractor, train

    setup_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, VqganParams, args.profile)
    device = pick_device(params.device)
    configure_torch(device, params.cpu_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tracking.start_run(STAGE, profile, params=to_dict(params), params_file=args.params) as tracker:
        if params.source == "pretrained":
            model, extra = install_pretrained(args.pretrained_config, args.pretrained_ckpt, args.out, params)
        elif params.source == "demo":
            model, extra = install_pretrained(*pinned_vqgan(args.demo_weights), args.out, params)
        else:
            model, extra = train(params, args.manifest, args.jpg_root, args.out, args.lpips_dir, device, tracker)
        fid = reconstruction_extractor(params, args.fid_weights, args.demo_weights, device)
        metrics = evaluate(model.to(device), params, args.manifest, args.jpg_root, fid, args.out, device)
        metrics.update(extra, source=params.source, seconds=round(time.perf_counter() - start, 1))
        write_json(args.out / "metrics.json", metrics)
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
        for name in ("reconstructions.png", "config.yaml", "metrics.json", "losses.csv"):
            tracker.log_artifact(args.out / name)
    (args.out / STATE_FILE).unlink(missing_ok=True)  # finished: the resume state is no longer needed
    log.info(
        "vqgan done in %.1f s: SSIM %.4f, PSNR %.2f dB, FID %s (%s), codebook perplexity %.1f (%.0f%% used)",
        metrics["seconds"],
        metrics["ssim"],
        metrics["psnr"],
        metrics["fid"],
        metrics["fid_extractor"],
        metrics["codebook_perplexity"],
        100 * metrics["codebook_used_fraction"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
