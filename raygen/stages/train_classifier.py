"""Stage ``train_classifier``: one DenseNet-121 per arm (real, real+50, real+100), the same recipe for each.

Command line::

    raygen train_classifier --manifest results/cohort/classifier.csv \\
        --jpg-root data/demo/mimic-cxr-jpg/2.0.0 --arm real+100 \\
        --synthetic results/synthesize/aug_100.csv --out results/train_classifier/real+100 \\
        [--init-chexnet FILE] [--init-xrv FILE] --params params.yaml --log logs/train_classifier.log

Recipe: 10 labels, BCE on logits (optionally positive-weighted), AdamW with linear warm-up then cosine
decay per step, small random affine + brightness/contrast augmentation (never flips), early stopping
on the validation macro AUROC (real validation images only; classes without both labels left out).
The model is evaluated once, with the best validation weights, on the real held-out test patients.
Real and synthetic images go through the same preprocessing at ``resolution`` (shortest side, centre
crop). ``--synthetic`` is the 100% synthetic set; ``real+50`` takes the first half of each class.
``epoch_size: real`` gives every arm the real arm's number of optimizer steps (an epoch draws as many
images as the real training set holds, from a stream of shuffled passes over the arm's images), so the
arms differ in their data only; ``epoch_size: arm`` makes an epoch one pass over the arm's own images
(the paper's protocol: more images, more steps).

Outputs in ``--out``: ``model.ckpt`` (plain dict: best-validation weights, classifier config, resolved
params, best epoch), ``history.csv`` (epoch, train_loss, val_macro_auroc, lr, seconds),
``val_predictions.csv`` / ``test_predictions.csv`` (dicom_id, subject_id, the 10 true labels,
``prob_<class>`` for each; the demo's ``true_*`` columns are carried along when present) and
``metrics.json`` (best epoch, val and test macro AUROC, counts, seed, wall time). ``last.ckpt`` is
written atomically after every epoch; a killed run started again with the same arguments resumes from
it (weights, optimizer, scheduler, best so far, patience counter, RNG) and removes it at the end. Data
order and augmentation are pure functions of (seed, epoch), so a resumed run equals an uninterrupted one.
``synthetic_use: pretrain`` first trains an augmented arm on its synthetic images alone, then runs the
real recipe on the real images from those weights (:mod:`raygen.training.synthetic_pretrain`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raygen import tracking
from raygen.cli import stage_parser
from raygen.config import check_cpu_threads, load_stage_params, to_dict
from raygen.data.classifier_config import ARMS, AugmentConfig
from raygen.io import file_record, write_csv, write_json
from raygen.runtime import configure_torch, pick_device, setup_logging

log = logging.getLogger(__name__)

STAGE = "train_classifier"


@dataclass(frozen=True)
class TrainClassifierParams:
    """The ``train_classifier`` section of params.yaml (defaults = the demo profile)."""

    resolution: int = 64  # px, square; real AND synthetic (96 px) images are resized to it the same way (CPU budget)
    channels: int = 1  # grey input; 3 replicates grey (ImageNet-style stems)
    epochs: int = 3  # max epochs
    epoch_size: Literal["arm", "real"] = "real"  # images per epoch: arm = one pass over the arm's own training set
    # (the paper: the augmented arms take 1.5x / 2x the optimizer steps); real = as many as the real training set,
    # so every arm takes the same optimizer steps and only the data differs (augmented arms see each image less often)
    batch_size: int = 24  # images per step (the demo's CPU throughput choice)
    lr: float = 2e-3  # AdamW peak; short from-scratch demo runs (CheXNet fine-tuning: Adam 1e-3)
    weight_decay: float = 1e-4  # decoupled, on conv / linear weights only
    warmup_steps: int = 20  # linear warm-up; then cosine decay to 0 at the last step
    patience: int = 2  # epochs without a better val macro AUROC before stopping
    pos_weight: Literal["none", "balanced"] = "none"  # balanced = neg/pos per class (capped); paper: none
    # Which labels of a synthetic image give loss: all (paper) | prompted (only the class it was generated for)
    synthetic_labels: Literal["all", "prompted"] = "all"
    # How an augmented arm uses its synthetic images: pretrain (demo: alone for pretrain_epochs passes, then the
    # real arm's recipe on real images from those weights) | mixed (paper: one training set with the real ones)
    synthetic_use: Literal["mixed", "pretrain"] = "pretrain"
    pretrain_epochs: int = 1  # passes over the synthetic images before the real phase (synthetic_use: pretrain)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))  # train-time only, never
    # flips; off in the demo's 3-epoch runs (it slowed learning), on in the paper profile's 30
    init: Literal["scratch", "chexnet", "xrv"] = "scratch"  # paper: CheXNet; demo: no weights offline
    memory_efficient: bool = False  # torchvision's checkpointed dense layers: less memory, slower
    channels_last: bool = True  # NHWC convolutions: faster on CPU (oneDNN) and tensor-core GPUs
    max_train_images: int = 0  # 0 = every real training image; > 0 a seeded subset (CPU budgets)
    eval_batch_size: int = 64  # images per inference batch
    seed: int = 0  # initialisation, data order, augmentation, max_train_images subset
    workers: int = 2  # JPEG-decoding processes (images are decoded once, kept in RAM)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    device: str = "auto"  # auto = CUDA if present else CPU
    cpu_threads: int = 0  # CPU threads (0: the launcher's: Snakemake's threads, else every core)

    def __post_init__(self) -> None:
        check_cpu_threads(STAGE, self.cpu_threads)
        if self.resolution < 32:
            raise ValueError("train_classifier.resolution must be >= 32 (DenseNet-121 downsamples 32x)")
        if self.channels not in (1, 3):
            raise ValueError("train_classifier.channels must be 1 or 3")
        if min(self.epochs, self.batch_size, self.patience, self.eval_batch_size, self.pretrain_epochs) < 1:
            raise ValueError(
                "train_classifier.epochs, batch_size, patience, eval_batch_size, pretrain_epochs must be >= 1"
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("train_classifier.lr must be > 0; weight_decay and warmup_steps >= 0")


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="cohort classifier.csv (split train|val|test)")
    parser.add_argument("--jpg-root", type=Path, required=True, help="JPG root the manifest's paths are relative to")
    parser.add_argument("--arm", choices=list(ARMS), required=True, help="real | real+50 | real+100")
    parser.add_argument("--synthetic", type=Path, default=None, help="the 100%% synthetic manifest (path + 10 labels)")
    parser.add_argument("--synthetic-root", type=Path, help="where relative synthetic paths start (default: its dir)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--init-chexnet", type=Path, default=None, help="local CheXNet checkpoint, used when params say init: chexnet"
    )
    parser.add_argument("--init-xrv", type=Path, help="local torchxrayvision DenseNet-121 weights (init: xrv)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the imports below: --help answers at once
    import pandas as pd

    from raygen.checkpoint import save_checkpoint
    from raygen.training import classifier as training

    setup_logging(args.log)
    profile, params = load_stage_params(args.params, STAGE, TrainClassifierParams, args.profile)
    weights = training.init_weights_file(params.init, args.init_chexnet, args.init_xrv)
    device = pick_device(params.device)
    configure_torch(device, params.cpu_threads)
    started = time.perf_counter()
    splits, data = training.load_arm(
        args.manifest, args.jpg_root, args.arm, args.synthetic, args.synthetic_root, params
    )
    config = {
        "params": to_dict(params),
        "profile": profile,
        "arm": args.arm,
        "train_ids_n": len(data["train"]),
        "val_ids_n": len(data["val"]),
        "weights": str(weights) if weights else None,
    }
    state, epoch_steps = _initial_state(args, params, data, weights, device, config)
    last_path = args.out / "last.ckpt"
    if not args.no_resume:
        training.resume(state, last_path, config)
    pw = training.pos_weights(data["train"].labels, params.pos_weight)
    pw = pw.to(device) if pw is not None else None

    with tracking.start_run(
        STAGE, profile, {**to_dict(params), "arm": args.arm}, instance=args.arm, params_file=args.params
    ) as tracker:
        tracker.set_tags({"raygen.arm": args.arm})
        for row in state.history:  # a resumed run re-logs the curve so far
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        training.run_epochs(state, data, params, device, pw, config, last_path, tracker)
        probs = training.best_predictions(state, data, params, device)
        for name in ("val", "test"):
            write_csv(args.out / f"{name}_predictions.csv", training.predictions_frame(data[name], probs[name]))
        write_csv(args.out / "history.csv", pd.DataFrame(state.history))
        save_checkpoint(args.out / "model.ckpt", training.best_checkpoint(state, params, args.arm))
        metrics = training.final_metrics(args.arm, state, data, probs, splits, epoch_steps, params, started)
        metrics["init_weights"] = file_record(weights)  # which pretrained file (name and hash), if any
        _write_metrics(args.out, metrics, tracker)
    return 0


def _initial_state(args: Any, params: TrainClassifierParams, data: dict, weights: Any, device: Any, config: dict):
    """The fresh training state and optimizer steps per epoch; under ``synthetic_use: pretrain`` an augmented
    arm's synthetic rows leave ``data["train"]`` and first train the weights it starts from."""
    from raygen.training import classifier as training
    from raygen.training import synthetic_pretrain as pre

    use = params.synthetic_use if args.arm != "real" else "mixed"
    reuse = not args.no_resume
    data["train"], data["pretrain"], start = pre.pretrained(
        data["train"], use, params, weights, device, args.out, config, reuse
    )
    epoch_steps = training.steps_per_epoch(data["train"], params)
    state = training.new_state(params, weights, device, epoch_steps)
    pre.start_from(state, start)
    return state, epoch_steps


def _write_metrics(out: Path, metrics: dict[str, Any], tracker: tracking.Tracker) -> None:
    """metrics.json and MLflow; the finished run no longer needs last.ckpt or pretrained.ckpt."""
    from raygen.training import classifier as training

    write_json(out / "metrics.json", metrics)
    for name in ("last.ckpt", "pretrained.ckpt"):
        (out / name).unlink(missing_ok=True)
    tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    for name in ("metrics.json", "history.csv"):
        tracker.log_artifact(out / name)
    training.log_summary(metrics)


if __name__ == "__main__":
    raise SystemExit(main())
