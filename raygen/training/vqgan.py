"""The VQ-GAN tokenizer's three sources and its evaluation.

``pretrained``: UniXGen's taming files, checked against the params and rewritten in our plain format.
``demo``: the demo's pinned VQ-GAN (``weights/demo/vqgan``, in UniXGen's layout), checked by hash, then
installed exactly as UniXGen's.
``train``: a taming-style VQ-GAN trained here (L1 reconstruction, codebook + commitment losses, a
PatchGAN hinge loss with taming's adaptive weight from ``disc_start`` on, LPIPS only from local files),
checkpointed to ``train_state.pt`` and resumed from it. Batches and dead-code restarts are functions of
(seed, step), so a resumed run equals an uninterrupted one. Evaluation reconstructs held-out images
through token ids, as the pipeline uses the model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import save_checkpoint
from raygen.config import ConfigError, to_dict
from raygen.data.datasets import CohortImages, LoadedImages, load_all, read_manifests
from raygen.data.images import save_grid, signed_to_unit
from raygen.errors import MissingFileError
from raygen.io import file_record, write_csv, write_text
from raygen.metrics.features import FeatureExtractor, densenet121_extractor, find_densenet121_weights
from raygen.metrics.fid import frechet_distance
from raygen.metrics.image_similarity import ssim
from raygen.metrics.reconstruction import codebook_usage, psnr
from raygen.models import discriminator as disc_lib
from raygen.models.releases import TORCHVISION_DENSENET121
from raygen.models.taming_config import VQGANConfig, read_taming_config, taming_yaml
from raygen.models.vqgan import VQGAN, build_vqgan, load_taming, model_state
from raygen.runtime import autocast, autocast_dtype, seed_everything
from raygen.training.scaffolding import resumable, without_keys

if TYPE_CHECKING:
    from raygen.stages.vqgan import VqganParams

log = logging.getLogger(__name__)

UNIXGEN_HINT = (
    "the UniXGen repository's README (github.com/ttumyche/UniXGen) links the MIMIC VQ-GAN checkpoint and config"
)
STATE_FILE = "train_state.pt"
ADAM_BETAS = (0.5, 0.9)  # taming's Adam betas for both players
# Params that do not change the trained weights: a resumed run may differ in these.
RESUME_FREE = ("steps", "eval_images", "grid_images", "workers", "checkpoint_every", "log_every")


# --------------------------------------------------------------------------------------------
# source = pretrained


def install_pretrained(
    config: Path | None, checkpoint: Path | None, out: Path, params: VqganParams
) -> tuple[VQGAN, dict[str, Any]]:
    """Validate taming files (UniXGen's, or the demo's pinned ones) by loading them strictly, then write
    them to ``out`` in our format."""
    for flag, path in (("--pretrained-config", config), ("--pretrained-ckpt", checkpoint)):
        if path is None:
            raise MissingFileError(f"vqgan.source is 'pretrained' but {flag} was not given; {UNIXGEN_HINT}")
        if not path.is_file():
            raise MissingFileError(f"pretrained VQ-GAN file not found: {path}; {UNIXGEN_HINT}")
    _check_matches_params(read_taming_config(config)[0], params, config)
    model = load_taming(config, checkpoint)
    write_text(out / "config.yaml", config.read_text())  # verbatim: its lossconfig is never built
    origin = {"config": file_record(config), "checkpoint": file_record(checkpoint)}
    save_checkpoint(out / "model.ckpt", {"state_dict": model_state(model), "source": params.source, "origin": origin})
    log.info("installed %s VQ-GAN %s -> %s", params.source, checkpoint, out / "model.ckpt")
    return model, {"pretrained": origin}


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
    return Trainer(
        model=model,
        disc=disc,
        lpips=lpips,
        opt_ae=torch.optim.Adam(model.parameters(), lr=params.lr, betas=ADAM_BETAS),
        opt_disc=torch.optim.Adam(disc.parameters(), lr=params.lr, betas=ADAM_BETAS),
        code_counts=torch.zeros(params.n_embed, dtype=torch.long),
    )


def train(
    params: VqganParams,
    manifest: Path,
    jpg_root: Path,
    out: Path,
    lpips_dir: Path | None,
    device: torch.device,
    tracker: tracking.Tracker,
) -> tuple[VQGAN, dict[str, Any]]:
    """Train for ``params.steps`` (resuming from ``train_state.pt``), save model.ckpt + config.yaml."""
    lpips, perceptual = _perceptual(params, lpips_dir, device)
    trainer = build_trainer(params, device, lpips)
    _maybe_resume(trainer, params, out / STATE_FILE)
    images = _training_images(params, manifest, jpg_root)
    if len(images.pixels) < params.batch_size:
        raise ValueError(f"only {len(images.pixels)} readable train images for batch_size {params.batch_size}")
    t0 = time.perf_counter()
    first = trainer.step
    fit(trainer, images.pixels, params, device, tracker, out / STATE_FILE)
    seconds = time.perf_counter() - t0
    rate = (trainer.step - first) * params.batch_size / max(seconds, 1e-9)
    log.info("trained steps %d-%d in %.1f s (%.1f images/s)", first, trainer.step, seconds, rate)
    _save_trained(trainer, params, perceptual, out)
    extra = {
        "train_steps": trainer.step,
        "train_images": len(images.pixels),
        "unreadable_train": len(images.unreadable),
        "train_images_per_s": round(rate, 2),
        "perceptual_loss": perceptual,
        **{f"final_{k}": v for k, v in (trainer.history[-1].items() if trainer.history else []) if k != "step"},
    }
    return trainer.model.eval(), extra


def fit(
    trainer: Trainer,
    pixels: torch.Tensor,
    params: VqganParams,
    device: torch.device,
    tracker: tracking.Tracker,
    state_path: Path,
) -> None:
    """Steps ``trainer.step .. params.steps - 1``: loss curve every ``log_every``, state every ``checkpoint_every``."""
    bar = tqdm(total=params.steps, initial=trainer.step, desc="vqgan train", unit="step")
    while trainer.step < params.steps:
        batch = _batch(pixels, params, trainer.step).to(device)
        losses = train_step(trainer, batch, params, device)
        trainer.step += 1
        bar.update(1)
        if trainer.step % params.log_every == 0 or trainer.step == params.steps:
            trainer.history.append({"step": trainer.step, **losses})
            tracker.log_metrics({f"train/{k}": v for k, v in losses.items()}, step=trainer.step)
            bar.set_postfix(l1=f"{losses['l1']:.3f}", q=f"{losses['codebook']:.3f}")
        if trainer.step % params.checkpoint_every == 0 or trainer.step == params.steps:
            _save_state(trainer, params, state_path)
    bar.close()


def _save_trained(trainer: Trainer, params: VqganParams, perceptual: str, out: Path) -> None:
    """config.yaml + model.ckpt in taming's format, losses.csv."""
    lossconfig = _lossconfig(params, perceptual)
    write_text(
        out / "config.yaml",
        yaml.safe_dump(taming_yaml(params.model_config(), lossconfig, params.lr), sort_keys=False),
    )
    save_checkpoint(
        out / "model.ckpt",
        {
            "state_dict": model_state(trainer.model),
            "step": trainer.step,
            "config": to_dict(params),
            "lossconfig": lossconfig,
            "source": "train",
        },
    )
    write_csv(out / "losses.csv", pd.DataFrame(trainer.history))


def train_step(trainer: Trainer, x: torch.Tensor, params: VqganParams, device: torch.device) -> dict[str, float]:
    """One generator step and (after ``disc_start``) one discriminator step on x (B, C, R, R) [-1, 1]."""
    model, disc = trainer.model.train(), trainer.disc.train()
    gan_on = trainer.step >= params.disc_start
    with autocast(device, autocast_dtype(device, params.precision)):
        x_rec, q = model(x)
        l1 = (x - x_rec).abs().mean()
        nll = l1
        if trainer.lpips is not None:
            perceptual = trainer.lpips(_rgb(x), _rgb(x_rec)).mean()
            nll = l1 + params.perceptual_weight * perceptual
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


def _training_images(params: VqganParams, manifest: Path, jpg_root: Path) -> LoadedImages:
    frame = read_manifests([manifest], split="train")
    if params.train_images:
        frame = frame.iloc[: params.train_images]
    dataset = CohortImages(frame, jpg_root, params.resolution, params.in_channels)
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
    """What ``train_state.pt`` stores as its ``config``: the params that change the trained weights."""
    return without_keys(to_dict(params), RESUME_FREE)


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
    state = resumable(
        path, _resume_key(params), lambda key: key, "%s was written with other params; starting training from scratch"
    )
    if state is None:
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


def _evaluation_images(model: VQGAN, params: VqganParams, manifest: Path, jpg_root: Path) -> tuple[LoadedImages, str]:
    """The first ``eval_images`` readable val rows (train rows, with a warning, when there are none)."""
    cfg = model.config
    frame = read_manifests([manifest], split="val")
    split = "val"
    if frame.empty:
        log.warning("%s has no val rows: evaluating on train rows (optimistic numbers)", manifest)
        frame, split = read_manifests([manifest], split="train"), "train"
    frame = frame.iloc[: params.eval_images]
    images = load_all(
        CohortImages(frame, jpg_root, cfg.resolution, cfg.in_channels),
        batch_size=params.eval_batch_size,
        workers=params.workers,
        dtype=torch.float32,
    )
    return images, split


@torch.no_grad()
def evaluate(
    model: VQGAN,
    params: VqganParams,
    manifest: Path,
    jpg_root: Path,
    fid: FeatureExtractor | str,
    out: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Reconstruct held-out images through token ids; SSIM, PSNR, FID (on the extractor ``fid``, or null
    with ``fid`` as the reason), codebook usage, grid."""
    cfg = model.config
    images, split = _evaluation_images(model, params, manifest, jpg_root)
    model.eval()
    originals, recons, ids = [], [], []
    for chunk in images.pixels.split(params.eval_batch_size):
        chunk_ids = model.encode_ids(chunk.to(device))  # (B, h*w)
        recons.append(signed_to_unit(model.decode_ids(chunk_ids)).cpu())  # (B, C, R, R) [0, 1]
        originals.append(signed_to_unit(chunk))
        ids.append(chunk_ids.cpu())
    if not originals:
        raise ValueError(f"no readable evaluation images in {manifest}")
    real, fake, all_ids = torch.cat(originals), torch.cat(recons), torch.cat(ids)
    usage = codebook_usage(all_ids, cfg.n_embed)
    metrics: dict[str, Any] = {
        "ssim": float(ssim(fake, real).mean()),
        "psnr": float(psnr(fake, real).mean()),
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
    metrics.update(_fid(real, fake, fid))
    _write_grid(real, fake, params.grid_images, out / "reconstructions.png")
    return metrics


def reconstruction_extractor(
    params: VqganParams, fid_weights: Path | None, demo_weights: Path | None, device: torch.device
) -> FeatureExtractor | str:
    """The reconstruction FID's extractor, or why there is none: the demo's pinned network for the demo's
    pinned VQ-GAN (both trained on demo images), else torchvision's ImageNet DenseNet-121 from a local file."""
    if params.source == "demo":
        from raygen.metrics.conditional import load_pinned_network

        return load_pinned_network(demo_weights, device).extractor(device)
    found = find_densenet121_weights(fid_weights)
    if found is None:
        return (
            f"unavailable: no local DenseNet-121 weights (pass --fid-weights, or place torchvision's "
            f"{TORCHVISION_DENSENET121} in {Path(torch.hub.get_dir()) / 'checkpoints'})"
        )
    return densenet121_extractor(found, device)


def _fid(real: torch.Tensor, fake: torch.Tensor, extractor: FeatureExtractor | str) -> dict[str, Any]:
    """Reconstruction FID on a named local extractor, or null with the reason."""
    if isinstance(extractor, str):
        log.warning("reconstruction FID %s", extractor)
        return {"fid": None, "fid_extractor": extractor, "fid_images": 0}
    feats_real = torch.cat([extractor(b) for b in real.split(32)])
    feats_fake = torch.cat([extractor(b) for b in fake.split(32)])
    fid = frechet_distance(feats_real.numpy(), feats_fake.numpy())
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
