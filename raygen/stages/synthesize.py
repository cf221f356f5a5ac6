"""Stage ``synthesize``: the synthetic image sets the evaluation and the augmented classifiers use.

Command line::

    raygen synthesize --checkpoint results/train_decoder/model.ckpt --vqgan results/vqgan --tokens results/tokenize \\
        --text results/embed_text --fid results/cohort/fid.csv --generator results/cohort/generator.csv \\
        --classifier results/cohort/classifier.csv --out results/synthesize --params params.yaml

Two sets, both as 8-bit grey PNGs at the VQ-GAN's resolution under ``<out>/images/``:

- **Per-report set** (``per_report.csv``): every held-out FID image's own impression, generated once
  per seed in ``per_report_seeds`` (two by default): fidelity against the real image (FID, SSIM) and
  diversity between the two generations of one prompt (MS-SSIM). The prompts' text states come from
  the ``embed_text`` cache. Columns: the FID row's ids, ``text``, ``real_path`` (relative to the JPG
  root), ``path_<k>`` per seed (relative to ``<out>``), ``recon_path`` (the VQ-GAN's decoding of the real
  image's own tokens: the best any decoder can do), and its ``true_*`` columns when it has them.
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
arms, sampler settings, speed). ``schedule`` picks the decoding loop (:mod:`raygen.generation.sampler`).
A killed run started again keeps the finished batches of ``images.partial/`` and still produces exactly
the same images (:mod:`raygen.generation.synthetic_sets`); the folder becomes ``images/`` when all exist.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from raygen import runtime, tracking
from raygen.cli import stage_parser
from raygen.config import load_section, load_stage_params, to_dict
from raygen.data.augment_recipe import RULES
from raygen.data.labels import CLASSES
from raygen.stages.embed_text import EmbedTextParams  # the params section that chose the text encoder

if TYPE_CHECKING:
    from raygen.generation.sampler import SamplerConfig

log = logging.getLogger(__name__)

STAGE = "synthesize"


@dataclass(frozen=True)
class SynthesizeParams:
    """The ``synthesize`` section of params.yaml (defaults = the demo profile)."""

    steps: int = 3  # K decoding steps (paper: 3)
    temperature: float = 1.3  # paper: T = 1.3
    temperature_anneal: bool = True
    alpha: float = 0.5  # paper: drop the lowest half of the logits
    gumbel: float = 0.0  # Gumbel noise on the confidence (0 = the paper's none)
    cfg: float = 3.0  # classifier-free guidance scale (1 = conditional only, the paper; the demo needs 3)
    cfg_schedule: Literal["constant", "linear"] = "constant"  # guidance over the steps: s throughout | 1 up to s
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
        from raygen.generation.sampler import SamplerConfig

        shared = ("steps", "temperature", "temperature_anneal", "alpha", "batch_size", "schedule", "cfg_schedule")
        renamed = {"gumbel_scale": self.gumbel, "cfg_scale": self.cfg}
        return SamplerConfig(**{name: getattr(self, name) for name in shared}, **renamed)


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="train_decoder model.ckpt")
    parser.add_argument("--vqgan", type=Path, required=True, help="VQ-GAN folder (config.yaml, model.ckpt)")
    parser.add_argument("--tokens", type=Path, required=True, help="tokenize cache folder (held-out images' tokens)")
    parser.add_argument("--text", type=Path, required=True, help="embed_text cache folder (the FID impressions)")
    parser.add_argument("--fid", type=Path, required=True, help="cohort fid.csv: held-out images and their impressions")
    parser.add_argument("--generator", type=Path, required=True, help="cohort generator.csv (impression prompts)")
    parser.add_argument("--classifier", type=Path, required=True, help="cohort classifier.csv (class counts)")
    parser.add_argument("--text-model", type=Path, help="text encoder folder (as embed_text --model-dir)")
    parser.add_argument("--cxr-bert-dir", type=Path, help="CXR-BERT snapshot (inputs.cxr_bert) if no --text-model")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runtime.setup_rank_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, SynthesizeParams, args.profile)
    body = partial(_run, args, params, profile)  # run by each process (one per GPU) with its Dist
    return runtime.run_per_gpu(f"raygen.stages.{STAGE}", argv, params.gpus, params.device, body)


def _run(args: Any, params: SynthesizeParams, profile: str, ctx: runtime.Dist) -> int:
    from raygen.data.synthetic_plan import plan_sets
    from raygen.data.text_cache import TextCache
    from raygen.generation import synthetic_sets as sets

    # Opened first: the MLflow helper starts up while the models load.
    with tracking.start_run(
        STAGE, profile, params=to_dict(params), params_file=args.params, enabled=ctx.main
    ) as tracker:
        runtime.configure_torch(ctx.device)
        config, started = params.sampler(), time.perf_counter()
        # The plans first: a recipe the cohort cannot fill is a params error before any model loads.
        per_report, aug = plan_sets(args.fid, args.classifier, args.generator, params)
        generator = sets.SetGenerator.load(args.checkpoint, args.vqgan, config, params.precision, args.out, ctx)
        cache = TextCache(args.text)
        log.info(
            "plan: %d reports x %d seeds, augmentation %d images (%s prompts), sampler %s",
            len(per_report),
            len(params.per_report_seeds),
            len(aug),
            params.prompts,
            config,
        )
        if ctx.main:
            inputs = (args.checkpoint, args.vqgan, args.tokens, args.fid, args.classifier)
            sets.start_sets(args.out, sets.fingerprint(to_dict(params), *inputs))
        runtime.barrier(ctx)
        made = generator.per_report(cache, per_report, params.per_report_seeds)
        made += generator.reconstructions(args.tokens, per_report)
        if params.prompts == "class_name":
            states = _class_name_states(args, params, generator.trained.config, ctx.device)
            made += generator.class_names(aug, *states, params.seed)
        else:
            made += generator.impressions(cache, aug, params.seed)
        made = sum(runtime.gather_object(made, ctx))
        runtime.barrier(ctx)
        if not ctx.main:
            return 0
        sets.finish_sets(args.out)
        head = {"profile": profile, "params": to_dict(params)}
        meta = generator.write_outputs(cache, per_report, aug, params, head, made, time.perf_counter() - started)
        counts = {key: meta[key] for key in ("aug_100_images", "per_report_images")}
        tracker.log_metrics({"images_per_s": meta["images_per_s"] or 0.0, **counts})
        for name in ("samples_per_class.png", "progressive.png", "meta.json"):
            tracker.log_artifact(args.out / name)
        return 0


def _class_name_states(args: Any, params: SynthesizeParams, decoder_config: dict, device: Any) -> tuple:
    """The class-name prompts (CLASSES order) through the ``embed_text`` section's encoder."""
    from raygen.data.synthetic_plan import class_prompt
    from raygen.generation.prompts import encode_prompts

    text_params = load_section(args.params, "embed_text", EmbedTextParams, args.profile)
    texts = [class_prompt(params.class_template, c) for c in CLASSES]
    meta = decoder_config["text_meta"]
    return encode_prompts(texts, text_params, args.params, args.text_model, meta, device, args.cxr_bert_dir)


if __name__ == "__main__":
    raise SystemExit(main())
