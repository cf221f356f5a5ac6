"""Stage ``vqgan``: the image tokenizer, loaded from a taming checkpoint or trained here.

    raygen vqgan --manifest results/cohort/generator.csv --jpg-root DATA/mimic-cxr-jpg/2.0.0 \\
        --out results/vqgan --params params.yaml --log logs/vqgan.log \\
        [--pretrained-config 2021-12-17T08-58-54-project.yaml --pretrained-ckpt last.ckpt] \\
        [--lpips-dir DIR] [--fid-weights densenet121-a639ec97.pth]

``source: pretrained`` (paper profile) installs UniXGen's MIMIC VQ-GAN: the yaml is copied, the
Lightning ``last.ckpt`` becomes a plain ``{"state_dict": ...}`` without optimizer or loss state.
``source: train`` (demo) trains a taming-style VQ-GAN on the manifest's ``train`` rows: L1
reconstruction, codebook + commitment losses, a PatchGAN hinge loss with taming's adaptive weight
from ``disc_start`` on, LPIPS only when ``--lpips-dir`` holds its weights. It checkpoints
``train_state.pt`` every ``checkpoint_every`` steps (atomically) and resumes from it when killed.

Either way the model is evaluated on held-out ``val`` rows (ids -> pixels, as the pipeline uses
it). Outputs in ``--out``: ``model.ckpt`` + ``config.yaml`` (taming format, loadable by
``raygen.models.vqgan.load_taming`` and by taming itself), ``metrics.json`` (SSIM, PSNR,
reconstruction FID with its named extractor or null with the reason, codebook usage),
``reconstructions.png`` (originals beside reconstructions), ``losses.csv`` (training curves).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import load_checkpoint, save_checkpoint
from raygen.cli import stage_parser
from raygen.config import ConfigError, load_stage_params, to_dict
from raygen.data.datasets import CohortImages, LoadedImages, load_all, read_manifests
from raygen.data.images import save_grid, signed_to_unit
from raygen.errors import MissingFileError
from raygen.io import sha256_file, write_csv, write_json, write_text
from raygen.metrics import reconstruction as rm
from raygen.models import discriminator as disc_lib
from raygen.models.vqgan import (
    VQGAN,
    VQGANConfig,
    build_vqgan,
    load_taming,
    model_state,
    read_taming_config,
    taming_yaml,
)
from raygen.runtime import autocast_dtype, configure_torch, pick_device, seed_everything, setup_logging

log = logging.getLogger(__name__)

UNIXGEN_HINT = (
    "the UniXGen repository's README (github.com/ttumyche/UniXGen) links the MIMIC VQ-GAN checkpoint and config"
)
STATE_FILE = "train_state.pt"
# Params that do not change the trained weights: a resumed run may differ in these.
_RESUME_IGNORES = {"steps", "eval_images", "grid_images", "workers", "checkpoint_every", "log_every"}


@dataclass(frozen=True)
class VqganParams:
    """The ``vqgan`` section of params.yaml (defaults = demo profile)."""

    source: Literal["train", "pretrained"] = "train"  # pretrained = UniXGen's MIMIC model (paper)
    # --- architecture (source=train; a pretrained model brings its own yaml) ---
    embed_dim: int = 64  # codebook vector size (UniXGen: 256)
    n_embed: int = 512  # codebook entries (UniXGen: 1024); demo images are one CT's DRRs, 512 suffice
    z_channels: int = 64  # encoder output channels (UniXGen: 256)
    resolution: int = 96  # pixels (UniXGen: 512); 96 (12x12 tokens) keeps the 2-core CPU demo within minutes
    in_channels: int = 1  # grey radiographs (UniXGen: 3, grey copied to RGB)
    ch: int = 32  # base width; taming's GroupNorm(32) makes 32 the minimum
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)  # 4 levels -> f=8 -> 12x12 tokens at 96 px (16x16 at 128)
    num_res_blocks: int = 1  # per level (UniXGen: 2); the decoder has one more
    attn_resolutions: tuple[int, ...] = ()  # extra attention levels; the mid block always has one
    dropout: float = 0.0  # as UniXGen
    # --- training (source=train) ---
    steps: int = 150  # optimiser steps: 600 image passes, ~1.5 min of stage time at 96 px on an idle 2-core CPU
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
    train_images: int = 0  # cap on training images decoded into RAM (0 = all train rows)
    checkpoint_every: int = 50  # steps between atomic train_state.pt saves (~1 min of demo training)
    log_every: int = 10  # steps between loss-curve points (MLflow, losses.csv)
    # --- evaluation (both sources) ---
    eval_images: int = 64  # held-out val images for SSIM/PSNR/FID/codebook usage
    grid_images: int = 8  # originals (and their reconstructions) in reconstructions.png
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        factor = self.model_config().factor
        if self.resolution < factor or self.resolution % factor:
            raise ValueError(
                f"vqgan.resolution {self.resolution} must be a multiple of {factor}, the downsampling "
                f"of ch_mult {list(self.ch_mult)}"
            )
        if self.source == "train" and self.steps < 1:
            raise ValueError(f"vqgan.steps must be >= 1 to train a VQ-GAN, got {self.steps}")
        if min(self.batch_size, self.eval_batch_size, self.checkpoint_every, self.log_every) < 1:
            raise ValueError("vqgan.batch_size, eval_batch_size, checkpoint_every and log_every must be >= 1")
        if self.lr <= 0 or self.disc_start < 0 or self.perceptual_weight < 0:
            raise ValueError("vqgan.lr must be > 0; disc_start and perceptual_weight >= 0")

    def model_config(self) -> VQGANConfig:
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


def parse_args(argv: list[str] | None):
    parser = stage_parser("vqgan", __doc__)
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
        help=f"folder with {' and '.join(disc_lib.LPIPS_FILES)} for the perceptual loss",
    )
    parser.add_argument(
        "--fid-weights",
        type=Path,
        default=None,
        help="torchvision DenseNet-121 state dict for the reconstruction FID "
        f"(default: {rm.TORCHVISION_DENSENET121} in the torch hub cache if present)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log)
    profile, params = load_stage_params(args.params, "vqgan", VqganParams, args.profile)
    device = pick_device(params.device)
    configure_torch(device)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tracking.start_run("vqgan", profile, params=to_dict(params)) as tracker:
        if params.source == "pretrained":
            model, extra = install_pretrained(args.pretrained_config, args.pretrained_ckpt, args.out, params)
        else:
            model, extra = train(params, args, device, tracker)
        metrics = evaluate(model.to(device), params, args, device)
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


# --------------------------------------------------------------------------------------------
# source = pretrained


def install_pretrained(
    config: Path | None, checkpoint: Path | None, out: Path, params: VqganParams
) -> tuple[VQGAN, dict[str, Any]]:
    """Validate UniXGen's files by loading them strictly, then write them to ``out`` in our format."""
    for flag, path in (("--pretrained-config", config), ("--pretrained-ckpt", checkpoint)):
        if path is None:
            raise MissingFileError(f"vqgan.source is 'pretrained' but {flag} was not given; {UNIXGEN_HINT}")
        if not path.is_file():
            raise MissingFileError(f"pretrained VQ-GAN file not found: {path}; {UNIXGEN_HINT}")
    _check_matches_params(read_taming_config(config)[0], params, config)
    model = load_taming(config, checkpoint)
    write_text(out / "config.yaml", config.read_text())  # verbatim: its lossconfig is never built
    save_checkpoint(
        out / "model.ckpt",
        {
            "state_dict": model_state(model),
            "source": "pretrained",
            "origin": {"config": str(config), "checkpoint": str(checkpoint), "sha256": sha256_file(checkpoint)},
        },
    )
    log.info("installed pretrained VQ-GAN %s -> %s", checkpoint, out / "model.ckpt")
    return model, {}


def _check_matches_params(found: VQGANConfig, params: VqganParams, config: Path) -> None:
    """The pretrained model's size must be what params.yaml says: later stages and the tables report
    the params, so a silent difference would mislabel every number."""
    wanted = params.model_config()
    differ = [
        f"{key}: params {getattr(wanted, key)}, {config.name} {getattr(found, key)}"
        for key in ("resolution", "in_channels", "n_embed", "embed_dim")
        if getattr(wanted, key) != getattr(found, key)
    ]
    if differ:
        raise ConfigError(
            f"vqgan params disagree with the pretrained model's config ({'; '.join(differ)}); set "
            "them to the checkpoint's values in params.yaml"
        )


# --------------------------------------------------------------------------------------------
# source = train


@dataclass
class Trainer:
    """Everything that a training step mutates (and a checkpoint restores)."""

    model: VQGAN
    disc: torch.nn.Module
    opt_ae: torch.optim.Optimizer
    opt_disc: torch.optim.Optimizer
    lpips: torch.nn.Module | None
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    code_counts: torch.Tensor | None = None  # (n_embed,) uses since the last dead-code restart


def build_trainer(params: VqganParams, device: torch.device, lpips: torch.nn.Module | None) -> Trainer:
    seed_everything(params.seed)  # taming's modules initialise from the global torch RNG
    model = build_vqgan(params.model_config()).to(device)
    disc = disc_lib.build_discriminator(params.in_channels, params.disc_ndf, params.disc_layers).to(device)
    betas = (0.5, 0.9)  # taming's Adam betas for both players
    return Trainer(
        model=model,
        disc=disc,
        lpips=lpips,
        opt_ae=torch.optim.Adam(model.parameters(), lr=params.lr, betas=betas),
        opt_disc=torch.optim.Adam(disc.parameters(), lr=params.lr, betas=betas),
        code_counts=torch.zeros(params.n_embed, dtype=torch.long),
    )


def train(params: VqganParams, args, device: torch.device, tracker: tracking.Tracker) -> tuple[VQGAN, dict[str, Any]]:
    """Train for ``params.steps`` (resuming from ``train_state.pt``), save model.ckpt + config.yaml."""
    lpips, perceptual = _perceptual(params, args.lpips_dir, device)
    trainer = build_trainer(params, device, lpips)
    _maybe_resume(trainer, params, args.out / STATE_FILE)
    images = _training_images(params, args)
    if len(images.pixels) < params.batch_size:
        raise ValueError(f"only {len(images.pixels)} readable train images for batch_size {params.batch_size}")
    t0 = time.perf_counter()
    first = trainer.step
    bar = tqdm(total=params.steps, initial=trainer.step, desc="vqgan train", unit="step")
    while trainer.step < params.steps:
        batch = _batch(images.pixels, params, trainer.step).to(device)
        losses = train_step(trainer, batch, params, device)
        trainer.step += 1
        bar.update(1)
        if trainer.step % params.log_every == 0 or trainer.step == params.steps:
            trainer.history.append({"step": trainer.step, **losses})
            tracker.log_metrics({f"train/{k}": v for k, v in losses.items()}, step=trainer.step)
            bar.set_postfix(l1=f"{losses['l1']:.3f}", q=f"{losses['codebook']:.3f}")
        if trainer.step % params.checkpoint_every == 0 or trainer.step == params.steps:
            _save_state(trainer, params, args.out / STATE_FILE)
    bar.close()
    seconds = time.perf_counter() - t0
    rate = (trainer.step - first) * params.batch_size / max(seconds, 1e-9)
    log.info("trained steps %d-%d in %.1f s (%.1f images/s)", first, trainer.step, seconds, rate)
    lossconfig = _lossconfig(params, perceptual)
    write_text(
        args.out / "config.yaml",
        yaml.safe_dump(taming_yaml(params.model_config(), lossconfig, params.lr), sort_keys=False),
    )
    save_checkpoint(
        args.out / "model.ckpt",
        {
            "state_dict": model_state(trainer.model),
            "step": trainer.step,
            "config": to_dict(params),
            "lossconfig": lossconfig,
            "source": "train",
        },
    )
    write_csv(args.out / "losses.csv", pd.DataFrame(trainer.history))
    extra = {
        "train_steps": trainer.step,
        "train_images": len(images.pixels),
        "unreadable_train": len(images.unreadable),
        "train_images_per_s": round(rate, 2),
        "perceptual_loss": perceptual,
        **{f"final_{k}": v for k, v in (trainer.history[-1].items() if trainer.history else []) if k != "step"},
    }
    return trainer.model.eval(), extra


def train_step(trainer: Trainer, x: torch.Tensor, params: VqganParams, device: torch.device) -> dict[str, float]:
    """One generator step and (after ``disc_start``) one discriminator step on x (B, C, R, R) [-1, 1]."""
    model, disc = trainer.model.train(), trainer.disc.train()
    gan_on = trainer.step >= params.disc_start
    dtype = autocast_dtype(device, params.precision)
    with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
        x_rec, q = model(x)
        l1 = (x - x_rec).abs().mean()
        nll = l1
        if trainer.lpips is not None:
            p = trainer.lpips(_rgb(x), _rgb(x_rec)).mean()
            nll = l1 + params.perceptual_weight * p
        loss = nll + params.codebook_weight * q.loss
        out = {"l1": l1.item(), "codebook": q.loss.item()}
        if gan_on:
            g_loss = -disc(x_rec).mean()
            d_weight = disc_lib.adaptive_weight(nll, g_loss, model.last_layer, params.disc_weight)
            loss = loss + d_weight * g_loss
            out.update(g_loss=g_loss.item(), d_weight=d_weight.item())
    trainer.opt_ae.zero_grad(set_to_none=True)
    loss.backward()
    trainer.opt_ae.step()
    out["loss"] = loss.item()
    if gan_on:
        d_loss = disc_lib.hinge_d_loss(disc(x), disc(x_rec.detach()))
        trainer.opt_disc.zero_grad(set_to_none=True)
        d_loss.backward()
        trainer.opt_disc.step()
        out["d_loss"] = d_loss.item()
    trainer.code_counts += torch.bincount(q.ids.reshape(-1).cpu(), minlength=params.n_embed)
    if params.dead_code_every and (trainer.step + 1) % params.dead_code_every == 0:
        out["dead_codes"] = float(_restart_dead_codes(trainer, q.z.detach(), params))
    return out


def _restart_dead_codes(trainer: Trainer, z: torch.Tensor, params: VqganParams) -> int:
    """Move codes unused since the last restart onto encoder outputs of this batch (z: (B, E, h, w)).

    A standard remedy for codebook collapse (e.g. Dhariwal et al. 2020 Jukebox); it edits only
    the embedding values, so the checkpoint stays in taming's format.
    """
    dead = (trainer.code_counts == 0).nonzero().flatten()
    trainer.code_counts.zero_()
    if len(dead) == 0:
        return 0
    vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*h*w, E)
    gen = torch.Generator().manual_seed(params.seed * 1_000_003 + trainer.step)
    pick = torch.randint(len(vectors), (len(dead),), generator=gen)
    with torch.no_grad():
        trainer.model.quantize.embedding.weight[dead.to(vectors.device)] = vectors[pick.to(vectors.device)].float()
    return len(dead)


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _batch(pixels: torch.Tensor, params: VqganParams, step: int) -> torch.Tensor:
    """The batch for ``step``: a function of (seed, step) only, so a resumed run sees the same batches."""
    rng = np.random.default_rng([params.seed, step])
    index = rng.choice(len(pixels), size=params.batch_size, replace=False)
    return pixels[torch.from_numpy(index)].float()  # (B, C, R, R) [-1, 1]


def _training_images(params: VqganParams, args) -> LoadedImages:
    frame = read_manifests([args.manifest], split="train")
    if params.train_images:
        frame = frame.iloc[: params.train_images]
    dataset = CohortImages(frame, args.jpg_root, params.resolution, params.in_channels)
    t0 = time.perf_counter()
    images = load_all(dataset, batch_size=32, workers=params.workers)
    log.info(
        "decoded %d train images (%d unreadable, skipped) in %.1f s",
        len(images.pixels),
        len(images.unreadable),
        time.perf_counter() - t0,
    )
    return images


def _perceptual(
    params: VqganParams, lpips_dir: Path | None, device: torch.device
) -> tuple[torch.nn.Module | None, str]:
    if params.perceptual_weight <= 0:
        return None, "off: perceptual_weight is 0"
    reason = disc_lib.lpips_unavailable(lpips_dir)
    if reason:
        # Never a silent fallback: the run would train a different objective than params.yaml says.
        raise MissingFileError(
            f"vqgan.perceptual_weight is {params.perceptual_weight} but the LPIPS weights are "
            f"{reason}; put them there (see {lpips_dir or 'weights/lpips'}/README.md) or set "
            "vqgan.perceptual_weight: 0"
        )
    return disc_lib.build_lpips(lpips_dir).to(device), f"on: LPIPS from {lpips_dir}"


def _lossconfig(params: VqganParams, perceptual: str) -> dict[str, Any]:
    """taming's lossconfig block describing the loss actually trained with (never built at load)."""
    return {
        "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
        "params": {
            "disc_conditional": False,
            "disc_in_channels": params.in_channels,
            "disc_start": params.disc_start,
            "disc_weight": params.disc_weight,
            "disc_num_layers": params.disc_layers,
            "disc_ndf": params.disc_ndf,
            "codebook_weight": params.codebook_weight,
            "pixelloss_weight": 1.0,
            "disc_loss": "hinge",
            "perceptual_weight": params.perceptual_weight if perceptual.startswith("on") else 0.0,
        },
    }


def _resume_key(params: VqganParams) -> dict[str, Any]:
    return {k: v for k, v in to_dict(params).items() if k not in _RESUME_IGNORES}


def _save_state(trainer: Trainer, params: VqganParams, path: Path) -> None:
    save_checkpoint(
        path,
        {
            "model": trainer.model.state_dict(),
            "disc": trainer.disc.state_dict(),
            "opt_ae": trainer.opt_ae.state_dict(),
            "opt_disc": trainer.opt_disc.state_dict(),
            "step": trainer.step,
            "history": trainer.history,
            "code_counts": trainer.code_counts,
            "config": _resume_key(params),
        },
    )


def _maybe_resume(trainer: Trainer, params: VqganParams, path: Path) -> None:
    if not path.is_file():
        return
    state = load_checkpoint(path)
    if state.get("config") != _resume_key(params):
        log.warning("%s was written with other params; starting training from scratch", path)
        return
    trainer.model.load_state_dict(state["model"])
    trainer.disc.load_state_dict(state["disc"])
    trainer.opt_ae.load_state_dict(state["opt_ae"])
    trainer.opt_disc.load_state_dict(state["opt_disc"])
    trainer.step, trainer.history = int(state["step"]), list(state["history"])
    trainer.code_counts = state["code_counts"]
    log.info("resuming training from %s at step %d", path, trainer.step)


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(model: VQGAN, params: VqganParams, args, device: torch.device) -> dict[str, Any]:
    """Reconstruct held-out images through token ids; SSIM, PSNR, FID, codebook usage, grid."""
    cfg = model.config
    frame = read_manifests([args.manifest], split="val")
    split = "val"
    if frame.empty:
        log.warning("%s has no val rows: evaluating on train rows (optimistic numbers)", args.manifest)
        frame, split = read_manifests([args.manifest], split="train"), "train"
    frame = frame.iloc[: params.eval_images]
    images = load_all(
        CohortImages(frame, args.jpg_root, cfg.resolution, cfg.in_channels),
        batch_size=params.eval_batch_size,
        workers=params.workers,
        dtype=torch.float32,
    )
    model.eval()
    originals, recons, ids = [], [], []
    for chunk in images.pixels.split(params.eval_batch_size):
        chunk_ids = model.encode_ids(chunk.to(device))  # (B, h*w)
        recons.append(signed_to_unit(model.decode_ids(chunk_ids)).cpu())  # (B, C, R, R) [0, 1]
        originals.append(signed_to_unit(chunk))
        ids.append(chunk_ids.cpu())
    if not originals:
        raise ValueError(f"no readable evaluation images in {args.manifest}")
    real, fake, all_ids = torch.cat(originals), torch.cat(recons), torch.cat(ids)
    usage = rm.codebook_usage(all_ids, cfg.n_embed)
    metrics: dict[str, Any] = {
        "ssim": float(rm.ssim(fake, real).mean()),
        "psnr": float(rm.psnr(fake, real).mean()),
        "codebook_perplexity": usage.perplexity,
        "codebook_used_fraction": usage.used_fraction,
        "codebook_used": usage.used,
        "n_embed": cfg.n_embed,
        "grid": list(cfg.grid),
        "resolution": cfg.resolution,
        "eval_images": len(real),
        "eval_split": split,
        "unreadable_eval": len(images.unreadable),
    }
    metrics.update(_fid(real, fake, args.fid_weights, device))
    _write_grid(real, fake, params.grid_images, args.out / "reconstructions.png")
    return metrics


def _fid(real: torch.Tensor, fake: torch.Tensor, weights: Path | None, device: torch.device) -> dict[str, Any]:
    """Reconstruction FID on a named local extractor, or null with the reason."""
    found = rm.find_densenet121_weights(weights)
    if found is None:
        reason = (
            f"unavailable: no local DenseNet-121 weights (pass --fid-weights, or place torchvision's "
            f"{rm.TORCHVISION_DENSENET121} in {Path(torch.hub.get_dir()) / 'checkpoints'})"
        )
        log.warning("reconstruction FID %s", reason)
        return {"fid": None, "fid_extractor": reason, "fid_images": 0}
    extractor = rm.densenet121_extractor(found, device)
    feats_real = torch.cat([extractor(b) for b in real.split(32)])
    feats_fake = torch.cat([extractor(b) for b in fake.split(32)])
    fid = rm.frechet_distance(feats_real.numpy(), feats_fake.numpy())
    if len(real) < 1024:
        log.warning(
            "reconstruction FID on %d images (< the 1024 feature dims): biased upwards, compare only like with like",
            len(real),
        )
    return {"fid": fid, "fid_extractor": extractor.name, "fid_images": len(real)}


def _write_grid(real: torch.Tensor, fake: torch.Tensor, count: int, path: Path) -> None:
    """Pairs (original, reconstruction) side by side, 4 pairs per row."""
    n = min(count, len(real))
    pairs = torch.stack([real[:n], fake[:n]], dim=1).flatten(0, 1)  # (2n, C, R, R): o1 r1 o2 r2 ...
    save_grid(pairs, path, columns=min(8, 2 * n))
    log.info("wrote %s (%d originals | reconstructions)", path, n)


if __name__ == "__main__":
    raise SystemExit(main())
