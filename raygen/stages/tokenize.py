"""Stage ``tokenize``: every cohort image as VQ-GAN token ids, memory-mapped.

    raygen tokenize --vqgan results/vqgan \\
        --manifests results/cohort/generator.csv results/cohort/fid.csv results/cohort/classifier.csv \\
        --jpg-root DATA/mimic-cxr-jpg/2.0.0 --out results/tokenize --params params.yaml --log logs/tokenize.log \\
        [--import-pickle mimiccxr_vqgan1024_res512_codebook_indices.pickle]

The images are the union of the manifests' rows (unique ``dicom_id``, first occurrence wins),
preprocessed exactly as the paper's tokens were made (grey -> C channels, shortest side to R,
centre crop, [-1, 1], no flips; raygen.data.images) and encoded in batches while DataLoader
workers decode the next JPEGs. ``--import-pickle`` takes UniXGen's precomputed
``{dicom_id: [h*w ints]}`` instead of encoding (lengths and id range are validated).

Outputs in ``--out``: ``tokens.npy`` (int16 (N, h*w) row-major ids, ``np.load(mmap_mode="r")``),
``index.csv`` (dicom_id,row), ``meta.json`` (grid, codebook size, resolution, VQ-GAN files and
SHA-256, counts of unreadable / missing images and their ids, speed). Unreadable images are
skipped, counted and listed; they get no row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from raygen.cli import stage_parser
from raygen.config import check_cpu_threads, load_stage_params, to_dict
from raygen.io import write_json
from raygen.models.taming_config import read_taming_config
from raygen.runtime import configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)

STAGE = "tokenize"


@dataclass(frozen=True)
class TokenizeParams:
    """The ``tokenize`` section of params.yaml (defaults = demo profile)."""

    batch_size: int = 32  # images per encoder call
    workers: int = 2  # DataLoader processes decoding JPEGs while the main process encodes
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # fp32: taming's ids (bf16 flips near-tie argmins)
    device: str = "auto"  # auto: CUDA when present
    cpu_threads: int = 0  # CPU threads (0: the launcher's: Snakemake's threads, else every core)

    def __post_init__(self) -> None:
        check_cpu_threads(STAGE, self.cpu_threads)


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument(
        "--vqgan", type=Path, required=True, help="folder with config.yaml + model.ckpt (results/vqgan)"
    )
    parser.add_argument("--manifests", type=Path, nargs="+", required=True, help="cohort CSVs (dicom_id, path)")
    parser.add_argument(
        "--jpg-root", type=Path, default=None, help="DATA/mimic-cxr-jpg/2.0.0 (not needed with --import-pickle)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (results/tokenize)")
    parser.add_argument(
        "--import-pickle",
        type=Path,
        default=None,
        help="UniXGen's {dicom_id: [h*w ints]} pickle (trusted file) instead of encoding",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygen.data.datasets import read_manifests
    from raygen.data.token_cache import (
        check_token_dtype,
        encode_images,
        import_pickle,
        token_counts,
        token_meta,
        write_index,
    )

    setup_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, TokenizeParams, args.profile)
    config_path, ckpt_path = args.vqgan / "config.yaml", args.vqgan / "model.ckpt"
    cfg, _ = read_taming_config(config_path)
    check_token_dtype(cfg)
    frame = read_manifests(args.manifests)
    log.info("%d unique images in %d manifest(s)", len(frame), len(args.manifests))
    args.out.mkdir(parents=True, exist_ok=True)
    tokens_path = args.out / "tokens.npy"
    if args.import_pickle is not None:
        result = import_pickle(args.import_pickle, frame, cfg, tokens_path)
        source, device = f"pickle:{args.import_pickle}", "none"
    else:
        if args.jpg_root is None:
            raise ValueError("--jpg-root is required unless --import-pickle is given")
        device = pick_device(params.device)
        configure_torch(device, params.cpu_threads)
        result = encode_images(frame, args.jpg_root, config_path, ckpt_path, params, device, tokens_path)
        source = "encoded"
    write_index(args.out / "index.csv", result.dicom_ids)
    meta = {
        **token_meta(cfg, config_path, ckpt_path),
        "source": source,
        "manifests": [str(path) for path in args.manifests],
        "params": to_dict(params),
        "device": str(device),
        **token_counts(len(frame), result),
    }
    write_json(args.out / "meta.json", meta)
    log.info(
        "tokenize done: %d images -> %s (%d skipped: %s) in %.1f s (%.1f images/s)",
        meta["n_images"],
        tokens_path,
        meta["n_unreadable"],
        "missing from the pickle" if args.import_pickle else "unreadable",
        result.seconds,
        meta["images_per_s"] or 0.0,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
