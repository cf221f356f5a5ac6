"""Stage ``synthesize``: the synthetic image sets the evaluation and the augmented classifiers use.

Command line::

    raygen synthesize --checkpoint results/train_decoder/model.ckpt --vqgan results/vqgan \\
        --text results/embed_text --fid results/cohort/fid.csv --generator results/cohort/generator.csv \\
        --classifier results/cohort/classifier.csv --out results/synthesize --params params.yaml

Two sets, both as 8-bit grey PNGs at the VQ-GAN's resolution under ``<out>/images/``:

- **Per-report set** (``per_report.csv``): every held-out FID image's own impression, generated once
  per seed in ``per_report_seeds`` (two by default): fidelity against the real image (FID, SSIM) and
  diversity between the two generations of one prompt (MS-SSIM). The prompts' text states come from
  the ``embed_text`` cache. Columns: the FID row's ids, ``text``, ``real_path`` (relative to the JPG
  root), ``path_<k>`` per seed (relative to ``<out>``), and its ``true_*`` columns when it has them.
- **Augmentation set** (``aug_100.csv``): the 100% arm, as large as the real classifier training set,
  counts per class by :func:`raygen.data.augment_recipe.class_counts` (the rarest class gets the most),
  rows grouped by class in CLASSES order. ``prompts: class_name`` (the paper) prompts with the class
  name through ``class_template`` and labels each image one-hot; ``prompts: impression`` prompts with
  real training impressions of studies positive for the class and keeps those studies' labels. The
  50% arm is the first half of each class (``train_classifier --arm real+50`` takes it from this file).
  Columns: ``path`` (relative to ``<out>``), ``prompt``, ``prompt_class``, the 10 labels,
  ``source_study_id`` (impression prompts only).

Also ``samples_per_class.png`` (the first images of each class), ``progressive.png`` (the paper's
Figure 3: the canvas after each decoding step) and ``meta.json`` (counts per ``prompt_class`` for both
arms, sampler settings, speed). ``schedule`` picks the decoding loop (:mod:`raygen.generation.sampler`):
``maskgit`` (MaskGIT-style, the default) or ``raygen_paper`` (the RayGen authors' own).

Each batch is generated with its own seed (``seed``, set, batch index), so a killed run started again
keeps the finished batches of ``images.partial/`` and still produces exactly the same images; the
folder becomes ``images/`` only when every image is written.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.data.augment_recipe import RULES, class_counts
from raygen.data.classifier_data import read_classifier_manifest
from raygen.data.images import image_side, load_grey, signed_to_uint8
from raygen.data.labels import CLASSES
from raygen.data.text_cache import TextCache
from raygen.generation.sampler import (
    SamplerConfig,
    TrainedDecoder,
    load_decoder_checkpoint,
    sample_tokens,
)
from raygen.io import sha256_file, write_csv, write_json
from raygen.runtime import (
    Dist,
    autocast_dtype,
    barrier,
    configure_torch,
    gather_object,
    run_per_gpu,
    setup_rank_logging,
)
from raygen.tools.generate import (
    encode_prompts,
    generate_images,
    load_vqgan,
    save_image_grid,
    save_progressive,
    tokens_to_images,
)

log = logging.getLogger(__name__)

STAGE = "synthesize"
IMAGES, PARTIAL = "images", "images.partial"
DECODE_BATCH = 8  # VQ-GAN decode chunk: small chunks stay in cache (faster on CPU than 32)


@dataclass(frozen=True)
class SynthesizeParams:
    """The ``synthesize`` section of params.yaml (defaults = the demo profile)."""

    steps: int = 3  # K decoding steps (paper: 3)
    temperature: float = 1.3  # paper: T = 1.3
    temperature_anneal: bool = True
    alpha: float = 0.5  # paper: drop the lowest half of the logits
    gumbel: float = 0.0  # Gumbel noise on the confidence (0 = the paper's none)
    cfg: float = 3.0  # classifier-free guidance scale (1 = conditional only, the paper; the demo needs 3)
    schedule: Literal["maskgit", "raygen_paper"] = "maskgit"  # decoding loop: MaskGIT-style | the paper authors' own
    batch_size: int = 32  # prompts per decoder batch
    per_report_seeds: list[int] = field(default_factory=lambda: [0, 1])  # one generation per seed and report
    per_report_max: int = 0  # 0 = every FID image; > 0 the first N (smaller budgets)
    prompts: Literal["class_name", "impression"] = "class_name"  # augmentation prompts (paper: class names)
    class_template: str = "{name}"  # class-name prompt; {name} = "Pleural Effusion", {lower} = "pleural effusion"
    count_rule: str = "complement"  # raygen.data.augment_recipe.RULES (complement reproduces the paper's 2,337)
    aug_total: int = 0  # 100% arm size; 0 = the real classifier training set size (the paper)
    progressive_prompts: int = 4  # rows of progressive.png (the first FID reports)
    grid_per_class: int = 4  # columns of samples_per_class.png
    seed: int = 0  # augmentation set seed (per-report sets use per_report_seeds)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    gpus: int = 0  # processes (one per GPU) via torchrun, each generating every world-th batch; 0 = every visible GPU

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError("synthesize.gpus must be >= 0 (0 = every visible GPU)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"synthesize.steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.temperature < 0 or self.cfg < 0 or not 0.0 <= self.alpha < 1.0:
            raise ValueError(
                f"synthesize.temperature and cfg must be >= 0 and alpha in [0, 1); got "
                f"{self.temperature}, {self.cfg}, {self.alpha}"
            )
        if self.schedule == "raygen_paper" and self.gumbel > 0:
            raise ValueError(
                "synthesize.gumbel must be 0 with schedule raygen_paper (the authors' loop has no confidence noise)"
            )
        if self.count_rule not in RULES:
            raise ValueError(f"synthesize.count_rule must be one of {sorted(RULES)}, got {self.count_rule!r}")
        if len(set(self.per_report_seeds)) < 1 or len(set(self.per_report_seeds)) != len(self.per_report_seeds):
            raise ValueError("synthesize.per_report_seeds must be distinct and at least one")
        if "{name}" not in self.class_template and "{lower}" not in self.class_template:
            raise ValueError("synthesize.class_template must contain {name} or {lower}")

    def sampler(self) -> SamplerConfig:
        return SamplerConfig(
            steps=self.steps,
            temperature=self.temperature,
            temperature_anneal=self.temperature_anneal,
            alpha=self.alpha,
            gumbel_scale=self.gumbel,
            cfg_scale=self.cfg,
            batch_size=self.batch_size,
            schedule=self.schedule,
        )


# ---------------------------------------------------------------------------------------------
# Plans: which prompt goes to which file
# ---------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A file-system name for a class: "Lung Lesion" -> "lung_lesion"."""
    return name.lower().replace(" ", "_")


def class_prompt(template: str, name: str) -> str:
    return template.format(name=name, lower=name.lower())


def augmentation_plan(
    classifier: pd.DataFrame, p: SynthesizeParams, impressions: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The 100% arm's rows (path, prompt, prompt_class, labels[, source_study_id]), grouped by class.

    classifier:  the real classifier manifest; its training split sets the size and the class counts.
    impressions: for ``prompts: impression``, training studies with their ``text`` and 10 labels.
    """
    train = classifier[classifier["split"] == "train"]
    positives = train[list(CLASSES)].sum().astype(int).tolist()
    total = p.aug_total or len(train)
    counts = class_counts(positives, total, p.count_rule)
    rng = np.random.default_rng(p.seed)
    rows: list[dict[str, Any]] = []
    for k, (name, n) in enumerate(zip(CLASSES, counts)):
        if p.prompts == "class_name":
            label = [int(j == k) for j in range(len(CLASSES))]
            for i in range(n):
                rows.append(
                    {
                        "path": f"{IMAGES}/aug/{slug(name)}/{i:05d}.png",
                        "prompt": class_prompt(p.class_template, name),
                        "prompt_class": name,
                        **dict(zip(CLASSES, label)),
                    }
                )
            continue
        assert impressions is not None
        pool = impressions[impressions[name] == 1]
        if pool.empty and n:
            raise ValueError(f"prompts: impression needs training impressions positive for {name}; none found")
        picks = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // max(len(pool), 1)))])[:n]
        for i, j in enumerate(picks):
            source = pool.iloc[int(j)]
            rows.append(
                {
                    "path": f"{IMAGES}/aug/{slug(name)}/{i:05d}.png",
                    "prompt": source["text"],
                    "prompt_class": name,
                    **{c: int(source[c]) for c in CLASSES},
                    "source_study_id": int(source["study_id"]),
                }
            )
    return pd.DataFrame(rows)


def aug_class_counts(aug: pd.DataFrame) -> dict[str, int]:
    """Images per ``prompt_class`` in CLASSES order: what meta.json reports, and how ``train_classifier``
    groups the rows for the 50% arm (the first ``n // 2`` of each)."""
    counts = aug.groupby("prompt_class", sort=False).size().reindex(list(CLASSES), fill_value=0)
    return {c: int(n) for c, n in counts.items()}


def training_impressions(classifier: pd.DataFrame, generator: pd.DataFrame) -> pd.DataFrame:
    """Classifier training studies that have a generator prompt: study_id, text, the 10 labels."""
    train = classifier[classifier["split"] == "train"].drop_duplicates("study_id")
    texts = generator.drop_duplicates("study_id")[["study_id", "text"]]
    return train[["study_id", *CLASSES]].merge(texts, on="study_id", how="inner")


def per_report_plan(fid: pd.DataFrame, seeds: list[int], limit: int) -> pd.DataFrame:
    """One row per FID image: ids, text, real_path, path_<k> per seed, the true_* columns when present."""
    fid = fid.iloc[:limit] if limit > 0 else fid
    keep = [c for c in ("dicom_id", "subject_id", "study_id", "view", "text") if c in fid.columns]
    plan = fid[keep].copy()
    plan["real_path"] = fid["path"]
    for k in range(len(seeds)):
        plan[f"path_{k}"] = [f"{IMAGES}/per_report/seed{seeds[k]}/{d}.png" for d in fid["dicom_id"]]
    truth = [c for c in fid.columns if c.startswith("true_")]
    return pd.concat([plan.reset_index(drop=True), fid[truth].reset_index(drop=True)], axis=1)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def batch_seed(seed: int, set_index: int, batch_index: int) -> int:
    """A distinct seed per (set, batch): batches are independent, so a resumed run is exact."""
    return (seed * 1_000_003 + set_index * 10_007 + batch_index) % (2**63 - 1)


def write_png(pixels: torch.Tensor, path: Path) -> None:
    """(C, R, R) [-1, 1] -> 8-bit grey PNG (channel mean), written via a temporary name."""
    array = signed_to_uint8(pixels.float().mean(0, keepdim=True))[0].numpy()
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array, mode="L").save(tmp, format="PNG")
    tmp.replace(path)


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
    n = len(paths)
    for b, start in enumerate(tqdm(range(0, n, config.batch_size), desc=desc, unit="batch", leave=False)):
        chunk = paths[start : start + config.batch_size]
        if b % world != rank or all(p.is_file() for p in chunk):
            continue
        if states.shape[0] == 1:
            s, ln = states.expand(len(chunk), -1, -1), lengths.expand(len(chunk))
        else:
            s, ln = states[start : start + len(chunk)], lengths[start : start + len(chunk)]
        generator = torch.Generator(device=device).manual_seed(batch_seed(seed, set_index, b))
        out = sample_tokens(trained.model, s, ln, config, generator, trained.null_states, trained.null_length, amp)
        images = tokens_to_images(vq, out.ids, DECODE_BATCH)
        for image, path in zip(images, chunk):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(image, path)
        made += len(chunk)
    return made


def _claim_partial(partial: Path, fingerprint: dict[str, Any]) -> None:
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


def load_pngs(paths: list[Path]) -> torch.Tensor:
    """(N, 1, R, R) [0, 1] float32 from grey PNGs."""
    return torch.stack([torch.from_numpy(np.asarray(load_grey(p), dtype=np.float32) / 255.0)[None] for p in paths])


# ---------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="train_decoder model.ckpt")
    parser.add_argument("--vqgan", type=Path, required=True, help="VQ-GAN folder (config.yaml, model.ckpt)")
    parser.add_argument("--text", type=Path, required=True, help="embed_text cache folder (the FID impressions)")
    parser.add_argument("--fid", type=Path, required=True, help="cohort fid.csv: held-out images and their impressions")
    parser.add_argument("--generator", type=Path, required=True, help="cohort generator.csv (impression prompts)")
    parser.add_argument("--classifier", type=Path, required=True, help="cohort classifier.csv (class counts)")
    parser.add_argument(
        "--text-model",
        type=Path,
        default=None,
        help="local text encoder folder for the class-name prompts (as embed_text --model-dir)",
    )
    parser.add_argument(
        "--cxr-bert-dir",
        type=Path,
        default=None,
        help="where the pipeline keeps the CXR-BERT snapshot (params inputs.cxr_bert); used "
        "only when embed_text.source is cxr-bert and no --text-model is given",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_rank_logging(args.log)
    profile, p = load_stage_params(args.params, STAGE, SynthesizeParams, args.profile)
    return run_per_gpu("raygen.stages.synthesize", argv, p.gpus, p.device, lambda ctx: _run(args, p, profile, ctx))


def _run(args: Any, p: SynthesizeParams, profile: str, ctx: Dist) -> int:
    with tracking.start_run(STAGE, profile, params=to_dict(p), enabled=ctx.main) as tracker:  # MLflow starts meanwhile
        return _synthesize(args, p, profile, ctx, tracker)


def _synthesize(args: Any, p: SynthesizeParams, profile: str, ctx: Dist, tracker: tracking.Tracker) -> int:
    device = ctx.device
    configure_torch(device)
    amp = autocast_dtype(device, p.precision)
    config = p.sampler()
    started = time.perf_counter()

    trained = load_decoder_checkpoint(args.checkpoint, device)
    vq = load_vqgan(args.vqgan, device).to(memory_format=torch.channels_last)  # NHWC convs: faster on CPU
    cache = TextCache(args.text)
    fid = pd.read_csv(args.fid, dtype={"dicom_id": str, "path": str})
    classifier = read_classifier_manifest(args.classifier)
    generator = pd.read_csv(args.generator, dtype={"dicom_id": str, "path": str})

    per_report = per_report_plan(fid, p.per_report_seeds, p.per_report_max)
    impressions = training_impressions(classifier, generator) if p.prompts == "impression" else None
    aug = augmentation_plan(classifier, p, impressions)
    log.info(
        "plan: %d reports x %d seeds, augmentation %d images (%s prompts), sampler %s",
        len(per_report),
        len(p.per_report_seeds),
        len(aug),
        p.prompts,
        config,
    )

    out, partial = args.out, args.out / PARTIAL
    if ctx.main:
        if (out / IMAGES).exists():
            shutil.rmtree(out / IMAGES)  # a rerun replaces the finished set
        _claim_partial(
            partial,
            {
                "params": {k: v for k, v in to_dict(p).items() if k not in ("gpus", "device")},
                "decoder": sha256_file(args.checkpoint),
                "vqgan": sha256_file(args.vqgan / "model.ckpt"),
                "fid": sha256_file(args.fid),
                "classifier": sha256_file(args.classifier),
            },
        )
    barrier(ctx)
    shard = {"rank": ctx.rank, "world": ctx.world_size}

    def at(rel: str) -> Path:  # manifests hold IMAGES/...; write into the partial folder
        return partial / Path(rel).relative_to(IMAGES)

    made = 0
    batch = cache.get(cache.rows_for(per_report["study_id"]), dtype=torch.float16, device=device)
    for k, seed in enumerate(p.per_report_seeds):
        made += generate_set(
            trained,
            vq,
            batch.states,
            batch.lengths,
            [at(x) for x in per_report[f"path_{k}"]],
            config,
            seed,
            k,
            amp,
            f"per-report seed {seed}",
            **shard,
        )
    if p.prompts == "class_name":
        texts = [class_prompt(p.class_template, c) for c in CLASSES]
        states, lengths = encode_prompts(
            texts, args.params, args.profile, args.text_model, trained.config["text_meta"], device, args.cxr_bert_dir
        )
        for k, name in enumerate(CLASSES):
            group = aug[aug["prompt_class"] == name]
            made += generate_set(
                trained,
                vq,
                states[k : k + 1],
                lengths[k : k + 1],
                [at(x) for x in group["path"]],
                config,
                p.seed,
                100 + k,
                amp,
                f"augmentation {name}",
                **shard,
            )
    else:
        batch = cache.get(cache.rows_for(aug["source_study_id"]), dtype=torch.float16, device=device)
        made += generate_set(
            trained,
            vq,
            batch.states,
            batch.lengths,
            [at(x) for x in aug["path"]],
            config,
            p.seed,
            100,
            amp,
            "augmentation",
            **shard,
        )
    made = sum(gather_object(made, ctx))
    barrier(ctx)
    if not ctx.main:
        return 0
    (partial / "fingerprint.json").unlink()
    partial.replace(out / IMAGES)
    elapsed = time.perf_counter() - started
    n_images = len(per_report) * len(p.per_report_seeds) + len(aug)

    write_csv(out / "per_report.csv", per_report)
    write_csv(out / "aug_100.csv", aug)
    _figures(out, per_report, aug, p, trained, vq, cache, config, amp, device)
    counts = aug_class_counts(aug)
    meta = {
        "profile": profile,
        "params": to_dict(p),
        "per_report_images": len(per_report),
        "per_report_seeds": p.per_report_seeds,
        "aug_100_images": len(aug),
        "aug_50_images": sum(n // 2 for n in counts.values()),
        "aug_per_class": counts,
        "aug_50_per_class": {c: n // 2 for c, n in counts.items()},
        "resolution": image_side(out / per_report["path_0"].iloc[0]) if len(per_report) else None,
        "images_generated_now": made,
        "wall_s": round(elapsed, 2),
        "images_per_s": round(made / elapsed, 3) if made else None,
    }
    write_json(out / "meta.json", meta)
    log.info(
        "wrote %d images (%d generated now) in %.1f s (%.2f images/s); 100%% arm %d, 50%% arm %d",
        n_images,
        made,
        elapsed,
        made / max(elapsed, 1e-9),
        len(aug),
        meta["aug_50_images"],
    )
    tracker.log_metrics(
        {"images_per_s": meta["images_per_s"] or 0.0, "aug_100_images": len(aug), "per_report_images": len(per_report)}
    )
    for name in ("samples_per_class.png", "progressive.png", "meta.json"):
        tracker.log_artifact(out / name)
    return 0


def _figures(
    out: Path,
    per_report: pd.DataFrame,
    aug: pd.DataFrame,
    p: SynthesizeParams,
    trained: TrainedDecoder,
    vq: Any,
    cache: TextCache,
    config: SamplerConfig,
    amp: torch.dtype | None,
    device: torch.device,
) -> None:
    """samples_per_class.png (first images of each class) and progressive.png (paper Figure 3)."""
    tiles, titles = [], []
    for name in CLASSES:
        group = aug[aug["prompt_class"] == name].head(p.grid_per_class)
        for _, row in group.iterrows():
            tiles.append(load_pngs([out / row["path"]])[0].mul(2).sub(1))
            titles.append(row["prompt"] if p.prompts == "class_name" else f"[{name}] {row['prompt']}")
    if tiles:
        save_image_grid(torch.stack(tiles), out / "samples_per_class.png", titles=titles, ncol=p.grid_per_class)
    rows = per_report.head(max(1, p.progressive_prompts))
    batch = cache.get(cache.rows_for(rows["study_id"]), dtype=torch.float16, device=device)
    _, frames = generate_images(
        trained,
        batch.states,
        batch.lengths,
        replace(config, batch_size=len(rows)),
        p.per_report_seeds[0],
        vq,
        progressive=True,
    )
    save_progressive(frames, out / "progressive.png", list(rows["text"]))


if __name__ == "__main__":
    raise SystemExit(main())
