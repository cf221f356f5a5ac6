"""Generating the synthesize stage's image sets into PNG files: seeded per batch, resumable, shardable.

Each batch is generated with its own seed (:func:`batch_seed`: seed, set, batch index), so a killed
run started again keeps the finished batches of the partial folder (:func:`claim_partial`) and still
produces exactly the same images, and the images do not depend on the number of processes.
:class:`SetGenerator` writes the per-report and augmentation sets planned by
:mod:`raygen.data.synthetic_plan`, then the manifests, the stage's two figures and meta.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from tqdm import tqdm

from raygen.data.images import image_side, load_pngs, write_png
from raygen.data.labels import CLASSES
from raygen.data.synthetic_plan import IMAGES, aug_class_counts
from raygen.data.text_cache import TextCache
from raygen.data.token_dataset import token_ids_for
from raygen.generation.render import generate_images, load_vqgan, save_image_grid, save_progressive, tokens_to_images
from raygen.generation.sampler import SamplerConfig, TrainedDecoder, load_decoder_checkpoint, sample_tokens
from raygen.io import sha256_file, write_csv, write_json
from raygen.runtime import Dist, autocast_dtype

log = logging.getLogger(__name__)

PARTIAL = "images.partial"  # where images are written until every one exists
DECODE_BATCH = 8  # VQ-GAN decode chunk: small chunks stay in cache (faster on CPU than 32)


def batch_seed(seed: int, set_index: int, batch_index: int) -> int:
    """A distinct seed per (set, batch): batches are independent, so a resumed run is exact."""
    return (seed * 1_000_003 + set_index * 10_007 + batch_index) % (2**63 - 1)


def generate_set(
    trained: TrainedDecoder,
    vq: Any,
    states: torch.Tensor,
    lengths: torch.Tensor,
    paths: list[Path],
    config: SamplerConfig,
    seed: int,
    set_index: int,
    amp: torch.dtype | None,
    desc: str,
    rank: int = 0,
    world: int = 1,
) -> int:
    """Generate one image per row into ``paths``; batches whose files all exist are skipped (resume).

    states (N, L, D) float16 on the decoder's device (or (1, L, D) shared by every row), lengths (N,)
    or (1,). With ``world`` > 1 processes, this one generates batches ``rank, rank + world, ...``;
    every batch has its own seed, so the images do not depend on the number of processes.
    Returns the number of images generated now.
    """
    device = next(trained.model.parameters()).device
    made = 0
    for b, start, chunk in pending_batches(paths, config.batch_size, rank, world, desc):
        if states.shape[0] == 1:
            s, ln = states.expand(len(chunk), -1, -1), lengths.expand(len(chunk))
        else:
            s, ln = states[start : start + len(chunk)], lengths[start : start + len(chunk)]
        generator = torch.Generator(device=device).manual_seed(batch_seed(seed, set_index, b))
        out = sample_tokens(trained.model, s, ln, config, generator, trained.null_states, trained.null_length, amp)
        write_pngs(tokens_to_images(vq, out.ids, DECODE_BATCH), chunk)
        made += len(chunk)
    return made


def pending_batches(
    paths: list[Path], batch_size: int, rank: int, world: int, desc: str
) -> Iterator[tuple[int, int, list[Path]]]:
    """(batch index, start row, paths) of this process's batches (``rank, rank + world, ...``) that still
    miss a file: a resumed run skips finished batches, and the split does not depend on what exists."""
    for b, start in enumerate(tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False)):
        chunk = paths[start : start + batch_size]
        if b % world == rank and not all(p.is_file() for p in chunk):
            yield b, start, chunk


def write_pngs(images: torch.Tensor, paths: list[Path]) -> None:
    """One 8-bit grey PNG per image ((B, C, R, R) in [-1, 1]), folders made as needed."""
    for image, path in zip(images, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(image, path)


def claim_partial(partial: Path, fingerprint: dict[str, Any]) -> None:
    """Reuse ``partial`` only if it was started with the same params, models and manifests."""
    stamp = partial / "fingerprint.json"
    if partial.exists():
        try:
            same = json.loads(stamp.read_text()) == fingerprint
        except (OSError, ValueError):
            same = False
        if same:
            log.info("resuming: keeping the finished batches in %s", partial)
            return
        log.info("discarding %s: it was started with other params or inputs", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_json(stamp, fingerprint)


def fingerprint(
    params: dict[str, Any], checkpoint: Path, vqgan_dir: Path, tokens_dir: Path, fid: Path, classifier: Path
) -> dict[str, Any]:
    """What a partial folder must have been started with to be resumed: params (without where it runs), inputs."""
    return {
        "params": {k: v for k, v in params.items() if k not in ("gpus", "device")},
        "decoder": sha256_file(checkpoint),
        "vqgan": sha256_file(vqgan_dir / "model.ckpt"),
        "tokens": sha256_file(tokens_dir / "tokens.npy"),
        "fid": sha256_file(fid),
        "classifier": sha256_file(classifier),
    }


def start_sets(out: Path, fingerprint: dict[str, Any]) -> None:
    """Drop a finished image folder (a rerun replaces it) and claim the partial one."""
    if (out / IMAGES).exists():
        shutil.rmtree(out / IMAGES)
    claim_partial(out / PARTIAL, fingerprint)


def finish_sets(out: Path) -> None:
    """Every image is written: the partial folder becomes the image folder."""
    partial = out / PARTIAL
    (partial / "fingerprint.json").unlink()
    partial.replace(out / IMAGES)


class OutputSettings(Protocol):
    """What :meth:`SetGenerator.write_outputs` reads from the ``synthesize`` params section."""

    prompts: str
    per_report_seeds: list[int]
    progressive_prompts: int
    grid_per_class: int


@dataclass(frozen=True)
class SetGenerator:
    """Writes planned image sets into ``out``'s partial folder; this process's share of them when ``world`` > 1."""

    trained: TrainedDecoder
    vq: Any
    config: SamplerConfig
    precision: str  # auto | fp32 | bf16 | fp16 (raygen.runtime.autocast_dtype)
    out: Path
    device: torch.device
    rank: int = 0
    world: int = 1

    @classmethod
    def load(
        cls, checkpoint: Path, vqgan_dir: Path, config: SamplerConfig, precision: str, out: Path, ctx: Dist
    ) -> SetGenerator:
        """The trained decoder and VQ-GAN on ``ctx.device``; this process is ``ctx.rank`` of ``ctx.world_size``."""
        trained = load_decoder_checkpoint(checkpoint, ctx.device)
        vq = load_vqgan(vqgan_dir, ctx.device, token_meta=trained.token_meta)
        vq = vq.to(memory_format=torch.channels_last)  # NHWC convs: faster on CPU
        return cls(trained, vq, config, precision, out, ctx.device, ctx.rank, ctx.world_size)

    def _generate(
        self, states: torch.Tensor, lengths: torch.Tensor, rels: Any, seed: int, index: int, desc: str
    ) -> int:
        # The plans hold IMAGES/...; until the end the files go into the partial folder.
        paths = [self.out / PARTIAL / Path(rel).relative_to(IMAGES) for rel in rels]
        sampling = (self.config, seed, index, autocast_dtype(self.device, self.precision), desc)
        return generate_set(self.trained, self.vq, states, lengths, paths, *sampling, rank=self.rank, world=self.world)

    def per_report(self, cache: TextCache, plan: pd.DataFrame, seeds: list[int]) -> int:
        """Every report's image once per seed (set index = the seed's position)."""
        batch = cache.get(cache.rows_for(plan["study_id"]), dtype=torch.float16, device=self.device)
        made = 0
        for k, seed in enumerate(seeds):
            made += self._generate(batch.states, batch.lengths, plan[f"path_{k}"], seed, k, f"per-report seed {seed}")
        return made

    def reconstructions(self, tokens_dir: Path, plan: pd.DataFrame) -> int:
        """The VQ-GAN's decoding of every held-out image's own cached tokens (``recon_path``): the images a
        decoder that reproduced those tokens exactly would give, the tokenizer's limit on fidelity. An
        image the tokenizer could not read has no tokens and no reconstruction (evaluate counts it)."""
        ids, found = token_ids_for(tokens_dir, list(plan["dicom_id"]))
        rels = plan["recon_path"][found]
        paths = [self.out / PARTIAL / Path(rel).relative_to(IMAGES) for rel in rels]
        if not found.all():
            log.warning("%d held-out image(s) have no tokens: no reconstruction", int((~found).sum()))
        made = 0
        for _, start, chunk in pending_batches(paths, self.config.batch_size, self.rank, self.world, "reconstructions"):
            write_pngs(tokens_to_images(self.vq, ids[start : start + len(chunk)].to(self.device), DECODE_BATCH), chunk)
            made += len(chunk)
        return made

    def class_names(self, aug: pd.DataFrame, states: torch.Tensor, lengths: torch.Tensor, seed: int) -> int:
        """The augmentation set prompted by class name: one prompt row per class in CLASSES order."""
        made = 0
        for k, name in enumerate(CLASSES):
            group = aug[aug["prompt_class"] == name]
            made += self._generate(
                states[k : k + 1], lengths[k : k + 1], group["path"], seed, 100 + k, f"augmentation {name}"
            )
        return made

    def impressions(self, cache: TextCache, aug: pd.DataFrame, seed: int) -> int:
        """The augmentation set prompted by its source studies' cached impressions."""
        batch = cache.get(cache.rows_for(aug["source_study_id"]), dtype=torch.float16, device=self.device)
        return self._generate(batch.states, batch.lengths, aug["path"], seed, 100, "augmentation")

    def progressive_figure(self, path: Path, cache: TextCache, rows: pd.DataFrame, seed: int) -> None:
        """The paper's Figure 3 for the per-report ``rows``: the canvas after each decoding step."""
        batch = cache.get(cache.rows_for(rows["study_id"]), dtype=torch.float16, device=self.device)
        config = replace(self.config, batch_size=len(rows))
        _, frames = generate_images(
            self.trained, batch.states, batch.lengths, config, seed, self.vq, progressive=True, precision=self.precision
        )
        save_progressive(frames, path, list(rows["text"]))

    def write_outputs(
        self,
        cache: TextCache,
        per_report: pd.DataFrame,
        aug: pd.DataFrame,
        params: OutputSettings,
        meta: dict[str, Any],
        made: int,
        elapsed: float,
    ) -> dict[str, Any]:
        """Once every image exists: the two manifests, both figures and meta.json (``meta`` first); returns meta."""
        write_csv(self.out / "per_report.csv", per_report)
        write_csv(self.out / "aug_100.csv", aug)
        save_samples_per_class(self.out, aug, params.grid_per_class, params.prompts == "class_name")
        rows = per_report.head(max(1, params.progressive_prompts))
        self.progressive_figure(self.out / "progressive.png", cache, rows, params.per_report_seeds[0])
        meta = {**meta, **synthesis_meta(self.out, per_report, params.per_report_seeds, aug, made, elapsed)}
        write_json(self.out / "meta.json", meta)
        log_summary(meta, per_report, aug, made, elapsed)
        return meta


def save_samples_per_class(out: Path, aug: pd.DataFrame, per_class: int, class_name_prompts: bool) -> None:
    """samples_per_class.png: the first ``per_class`` images of each class, titled by their prompt."""
    tiles, titles = [], []
    for name in CLASSES:
        group = aug[aug["prompt_class"] == name].head(per_class)
        for _, row in group.iterrows():
            tiles.append(load_pngs([out / row["path"]])[0].mul(2).sub(1))
            titles.append(row["prompt"] if class_name_prompts else f"[{name}] {row['prompt']}")
    if tiles:
        save_image_grid(torch.stack(tiles), out / "samples_per_class.png", titles=titles, ncol=per_class)


def synthesis_meta(
    out: Path, per_report: pd.DataFrame, seeds: list[int], aug: pd.DataFrame, made: int, elapsed: float
) -> dict[str, Any]:
    """meta.json's counts and speed: both arms per ``prompt_class``, the images' resolution, images/s."""
    counts = aug_class_counts(aug)
    return {
        "per_report_images": len(per_report),
        "per_report_seeds": seeds,
        "aug_100_images": len(aug),
        "aug_50_images": sum(n // 2 for n in counts.values()),
        "aug_per_class": counts,
        "aug_50_per_class": {c: n // 2 for c, n in counts.items()},
        "resolution": image_side(out / per_report["path_0"].iloc[0]) if len(per_report) else None,
        "images_generated_now": made,
        "wall_s": round(elapsed, 2),
        "images_per_s": round(made / elapsed, 3) if made else None,
    }


def log_summary(meta: dict[str, Any], per_report: pd.DataFrame, aug: pd.DataFrame, made: int, elapsed: float) -> None:
    """The stage's closing line: images in both sets, how many were generated now, speed, arm sizes."""
    log.info(
        "wrote %d images (%d generated now) in %.1f s (%.2f images/s); 100%% arm %d, 50%% arm %d",
        len(per_report) * len(meta["per_report_seeds"]) + len(aug),
        made,
        elapsed,
        made / max(elapsed, 1e-9),
        len(aug),
        meta["aug_50_images"],
    )
