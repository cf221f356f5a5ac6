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
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from raygen import tracking
from raygen.checkpoint import load_checkpoint, save_checkpoint
from raygen.cli import stage_parser
from raygen.config import load_stage_params, to_dict
from raygen.data.classifier_data import (
    ARMS,
    AugmentConfig,
    ClassifierImages,
    augment_batch,
    build_splits,
    load_images,
    read_classifier_manifest,
    read_synthetic_manifest,
)
from raygen.data.labels import CLASSES
from raygen.io import write_csv, write_json
from raygen.metrics.classification import auroc
from raygen.models.classifier import XrayDenseNet, build_classifier
from raygen.runtime import autocast_dtype, configure_torch, pick_device, seed_everything, setup_logging

log = logging.getLogger(__name__)

STAGE = "train_classifier"
POS_WEIGHT_MAX = 20.0  # cap on neg/pos: a class with 2 positives must not dominate the loss


@dataclass(frozen=True)
class TrainClassifierParams:
    """The ``train_classifier`` section of params.yaml (defaults = the demo profile)."""

    resolution: int = 64  # px, square; real AND synthetic (96 px) images are resized to it the same way (CPU budget)
    channels: int = 1  # grey input; 3 replicates grey (ImageNet-style stems)
    epochs: int = 3  # max epochs; demo: ~90 s for ~900 images at 64 px
    epoch_size: Literal["arm", "real"] = "real"  # images per epoch: arm = one pass over the arm's own training set
    # (the paper: the augmented arms take 1.5x / 2x the optimizer steps); real = as many as the real training set,
    # so every arm takes the same optimizer steps and only the data differs (augmented arms see each image less often)
    batch_size: int = 24  # images per step; demo: 18% more images/s than 16 on one CPU thread, AUROC within 0.01
    lr: float = 2e-3  # AdamW peak; short from-scratch demo runs (CheXNet fine-tuning: Adam 1e-3)
    weight_decay: float = 1e-4  # decoupled, on conv / linear weights only
    warmup_steps: int = 20  # linear warm-up (~1/3 epoch at demo size); then cosine decay to 0 at the last step
    patience: int = 2  # epochs without a better val macro AUROC before stopping
    pos_weight: Literal["none", "balanced"] = "none"  # balanced = neg/pos per class (capped); paper: none
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

    def __post_init__(self) -> None:
        if self.resolution < 32:
            raise ValueError("train_classifier.resolution must be >= 32 (DenseNet-121 downsamples 32x)")
        if self.channels not in (1, 3):
            raise ValueError("train_classifier.channels must be 1 or 3")
        if min(self.epochs, self.batch_size, self.patience, self.eval_batch_size) < 1:
            raise ValueError("train_classifier.epochs, batch_size, patience, eval_batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("train_classifier.lr must be > 0; weight_decay and warmup_steps >= 0")


# Params that may change between a killed run and its resumption without invalidating it.
_RESUME_FREE = ("workers", "device", "eval_batch_size", "patience")


# ---------------------------------------------------------------------------------------------
# Metrics, early stopping, schedule
# ---------------------------------------------------------------------------------------------


def _macro_auroc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Macro AUROC of (N, 10) labels / scores over the classes that hold both 0 and 1; NaN when none do
    (the evaluation metric, :func:`raygen.metrics.classification.auroc`)."""
    return auroc(y_true, y_prob, CLASSES).macro


@dataclass
class EarlyStopping:
    """Best-so-far bookkeeping: a strictly higher score is an improvement; NaN never is, except that
    the first epoch always becomes the best (so a run always has weights to keep)."""

    patience: int
    best_score: float = float("nan")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s score; True when it is the new best."""
        if self.best_epoch < 0 or (not math.isnan(score) and (math.isnan(self.best_score) or score > self.best_score)):
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps to 1, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def pos_weights(labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """(K,) BCE positive weights: neg / pos per class for ``balanced`` (capped, 1 without positives)."""
    if mode == "none":
        return None
    pos = labels.sum(0)
    neg = len(labels) - pos
    return torch.where(pos > 0, neg / pos.clamp(min=1), torch.ones_like(pos)).clamp(1.0, POS_WEIGHT_MAX)


# ---------------------------------------------------------------------------------------------
# Training and inference
# ---------------------------------------------------------------------------------------------


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _to_device(pixels: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = pixels.to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(model: XrayDenseNet, data: ClassifierImages, p: TrainClassifierParams, device: torch.device) -> np.ndarray:
    """Sigmoid probabilities (N, K) float64 for every image of ``data`` (eval mode, no augmentation)."""
    model.eval()
    amp = autocast_dtype(device, p.precision)
    out = []
    for start in range(0, len(data), p.eval_batch_size):
        x = _to_device(data.pixels[start : start + p.eval_batch_size], device, p.channels_last)
        with _autocast(device, amp):
            logits = model(x)
        out.append(torch.sigmoid(logits.float()).double().cpu())
    model.train()
    return torch.cat(out).numpy() if out else np.zeros((0, len(CLASSES)))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of ``epoch``: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_indices(n: int, per_epoch: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of ``epoch`` when each epoch takes ``per_epoch`` of ``n`` images.

    The images come from an endless stream of passes, pass k being :func:`epoch_order` (n, seed, k), so
    every image is drawn once per pass and the order is a function of (seed, epoch) only (resumable).
    ``per_epoch == n`` is exactly ``epoch_order(n, seed, epoch)``.
    """
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    first, last = start // n, (stop - 1) // n
    stream = np.concatenate([epoch_order(n, seed, k) for k in range(first, last + 1)])
    return stream[start - first * n : stop - first * n]


def images_per_epoch(data: ClassifierImages, epoch_size: str) -> int:
    """``len(data)`` for ``epoch_size: arm``; for ``real`` the number of readable real training images
    (``build_splits`` marks each training row's ``synthetic`` column)."""
    return len(data) if epoch_size == "arm" else int((~data.frame["synthetic"]).sum())


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The augmentation generator of ``epoch`` (CPU), a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches plus the remainder, except a remainder of one image (BatchNorm needs two)."""
    return n // batch_size + (1 if n % batch_size > 1 else 0)


def train_epoch(
    model: XrayDenseNet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data: ClassifierImages,
    epoch: int,
    p: TrainClassifierParams,
    device: torch.device,
    pos_weight: torch.Tensor | None,
) -> float:
    """One epoch (:func:`images_per_epoch` images of ``data`` in the epoch's order); returns the mean loss."""
    model.train()
    amp = autocast_dtype(device, p.precision)
    per_epoch = images_per_epoch(data, p.epoch_size)
    order = torch.from_numpy(epoch_indices(len(data), per_epoch, p.seed, epoch))
    generator = epoch_generator(p.seed, epoch)
    steps = batches_per_epoch(per_epoch, p.batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    bar = tqdm(range(steps), desc=f"{STAGE} epoch {epoch + 1}/{p.epochs}", unit="batch", mininterval=2.0, leave=False)
    for i in bar:
        idx = order[i * p.batch_size : (i + 1) * p.batch_size]
        x = augment_batch(data.pixels[idx].float(), generator, p.augment)  # augmentation on the CPU generator
        x = _to_device(x, device, p.channels_last)
        y = data.labels[idx].to(device)
        with _autocast(device, amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach().double() * len(idx)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return float(total) / max(1, min(per_epoch, steps * p.batch_size))


def make_optimizer(model: XrayDenseNet, p: TrainClassifierParams, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on conv / linear weights only (not BatchNorm, biases)."""
    params = [t for t in model.parameters() if t.requires_grad]
    groups = [
        {"params": [t for t in params if t.dim() >= 2], "weight_decay": p.weight_decay},
        {"params": [t for t in params if t.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=p.lr, fused=device.type == "cuda")


# ---------------------------------------------------------------------------------------------
# Checkpoints and outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything the epoch loop mutates and ``last.ckpt`` stores."""

    model: XrayDenseNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    stopper: EarlyStopping
    best_weights: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    epoch: int = 0  # epochs completed


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def last_state(state: TrainState, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.epoch,
        "epoch": state.epoch,
        "best": {
            "weights": state.best_weights,
            "epoch": state.stopper.best_epoch,
            "score": state.stopper.best_score,
            "bad_epochs": state.stopper.bad_epochs,
        },
        "history": pd.DataFrame(state.history).to_dict(orient="list"),
        "rng": {"torch": torch.get_rng_state()},
        "config": config,
    }


def resumable(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when a run with the same essential settings wrote it, else None."""
    if not path.is_file():
        return None
    state = load_checkpoint(path)

    def essential(cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, "params": {k: v for k, v in cfg.get("params", {}).items() if k not in _RESUME_FREE}}

    if essential(state.get("config", {})) != essential(config):
        log.warning("%s was written with other settings or data; starting afresh", path)
        return None
    return state


def restore(state: TrainState, ckpt: dict[str, Any]) -> None:
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    best = ckpt["best"]
    state.best_weights = best["weights"]
    state.stopper.best_epoch, state.stopper.best_score = int(best["epoch"]), float(best["score"])
    state.stopper.bad_epochs = int(best["bad_epochs"])
    state.history = pd.DataFrame(ckpt["history"]).to_dict(orient="records")
    state.epoch = int(ckpt["epoch"])
    torch.set_rng_state(ckpt["rng"]["torch"])


def predictions_frame(data: ClassifierImages, prob: np.ndarray) -> pd.DataFrame:
    """dicom_id, subject_id, the 10 true labels, ``prob_<class>`` each (+ the demo's ``true_*``)."""
    frame = data.frame
    truth = [c for c in frame.columns if c.startswith("true_")]
    out = frame[["dicom_id", "subject_id", *CLASSES, *truth]].copy()
    for k, name in enumerate(CLASSES):
        out[f"prob_{name}"] = prob[:, k]
    return out


def _on_epoch_end(epoch: int) -> None:
    """Called after each epoch's checkpoint (a seam for fault-injection tests)."""


# ---------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------


def build_parser():
    parser = stage_parser(STAGE, __doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="cohort classifier.csv (split train|val|test)")
    parser.add_argument("--jpg-root", type=Path, required=True, help="JPG root the manifest's paths are relative to")
    parser.add_argument("--arm", choices=list(ARMS), required=True, help="real | real+50 | real+100")
    parser.add_argument("--synthetic", type=Path, default=None, help="the 100%% synthetic manifest (path + 10 labels)")
    parser.add_argument(
        "--synthetic-root",
        type=Path,
        default=None,
        help="folder relative synthetic paths start from (default: the manifest's folder)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--init-chexnet", type=Path, default=None, help="local CheXNet checkpoint, used when params say init: chexnet"
    )
    parser.add_argument(
        "--init-xrv",
        type=Path,
        default=None,
        help="local torchxrayvision DenseNet-121 weights, used when params say init: xrv",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    return parser


def _weights_file(args: Any, p: TrainClassifierParams) -> Path | None:
    """The weight file ``p.init`` chooses. The flags say where each kind of file lives (the pipeline
    passes both); only the chosen one must exist, and a missing one is an error naming where to get it."""
    if p.init == "scratch":
        return None
    from raygen.models.classifier import CHEXNET_URL, XRV_URL

    path = {"chexnet": args.init_chexnet, "xrv": args.init_xrv}[p.init]
    where = CHEXNET_URL if p.init == "chexnet" else XRV_URL
    if path is None:
        raise SystemExit(
            f"params say init: {p.init}; pass its local weight file with --init-{p.init} "
            f"(get it from {where}; nothing is downloaded)"
        )
    if not Path(path).is_file():
        raise SystemExit(
            f"params say init: {p.init} but {path} does not exist; get it from {where} and put it "
            "there (nothing is downloaded), or set train_classifier.init: scratch"
        )
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    profile, p = load_stage_params(args.params, STAGE, TrainClassifierParams, args.profile)
    weights = _weights_file(args, p)
    device = pick_device(p.device)
    configure_torch(device)
    started = time.perf_counter()

    manifest = read_classifier_manifest(args.manifest)
    synthetic = read_synthetic_manifest(args.synthetic, args.synthetic_root) if args.synthetic else None
    splits = build_splits(manifest, args.arm, synthetic, p.max_train_images, p.seed)
    log.info(
        "arm %s: %d real + %d synthetic training rows, %d val, %d test",
        args.arm,
        splits.n_real_train,
        splits.n_synthetic,
        len(splits.val),
        len(splits.test),
    )
    data = {
        name: load_images(frame, args.jpg_root, p.resolution, p.channels, p.workers)
        for name, frame in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    }
    log.info(
        "decoded %d / %d / %d images at %d px in %.1f s",
        len(data["train"]),
        len(data["val"]),
        len(data["test"]),
        p.resolution,
        time.perf_counter() - started,
    )
    if len(data["train"]) < 2:
        raise SystemExit("fewer than 2 readable training images")

    config = {
        "params": to_dict(p),
        "profile": profile,
        "arm": args.arm,
        "train_ids_n": len(data["train"]),
        "val_ids_n": len(data["val"]),
        "weights": str(weights) if weights else None,
    }
    seed_everything(p.seed)
    model = build_classifier(p.channels, p.init, weights, memory_efficient=p.memory_efficient).to(device)
    if p.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, p, device)
    steps_per_epoch = batches_per_epoch(images_per_epoch(data["train"], p.epoch_size), p.batch_size)
    if steps_per_epoch == 0:
        raise SystemExit("epoch_size: real needs at least 2 readable real training images")
    total_steps = p.epochs * steps_per_epoch
    log.info(
        "epoch size %s: %d steps of %d images per epoch, at most %d epochs",
        p.epoch_size,
        steps_per_epoch,
        p.batch_size,
        p.epochs,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, p.warmup_steps, total_steps))
    state = TrainState(model, optimizer, scheduler, EarlyStopping(p.patience), _cpu_state(model), [])
    last_path = args.out / "last.ckpt"
    resumed = None if args.no_resume else resumable(last_path, config)
    if resumed is not None:
        restore(state, resumed)
        log.info(
            "resumed from %s after epoch %d (best %.4f at epoch %d)",
            last_path,
            state.epoch,
            state.stopper.best_score,
            state.stopper.best_epoch + 1,
        )
    pw = pos_weights(data["train"].labels, p.pos_weight)
    pw = pw.to(device) if pw is not None else None

    with tracking.start_run(STAGE, profile, params={**to_dict(p), "arm": args.arm}) as tracker:
        tracker.set_tags({"raygen.arm": args.arm})
        for row in state.history:  # a resumed run re-logs the curve so far
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        run_epochs(state, data, p, device, pw, config, last_path, tracker)
        _finish(args, p, state, data, device, splits, tracker, started, steps_per_epoch)
    return 0


def run_epochs(
    state: TrainState,
    data: dict[str, ClassifierImages],
    p: TrainClassifierParams,
    device: torch.device,
    pw: torch.Tensor | None,
    config: dict[str, Any],
    last_path: Path,
    tracker: tracking.Tracker,
) -> None:
    """Epochs ``state.epoch .. p.epochs - 1`` with validation, early stopping and a checkpoint each."""
    val_y = data["val"].labels.numpy()
    while state.epoch < p.epochs and not state.stopper.stop:
        tic = time.perf_counter()
        loss = train_epoch(state.model, state.optimizer, state.scheduler, data["train"], state.epoch, p, device, pw)
        score = _macro_auroc(val_y, predict(state.model, data["val"], p, device))
        if state.stopper.update(state.epoch, score):
            state.best_weights = _cpu_state(state.model)
        row = {
            "epoch": state.epoch + 1,
            "train_loss": loss,
            "val_macro_auroc": score,
            "lr": state.scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - tic,
        }
        state.history.append(row)
        state.epoch += 1
        log.info(
            "epoch %d: train loss %.4f, val macro AUROC %.4f, %.0f s%s",
            state.epoch,
            loss,
            score,
            row["seconds"],
            " (best)" if state.stopper.best_epoch == state.epoch - 1 else "",
        )
        tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=state.epoch)
        save_checkpoint(last_path, last_state(state, config))
        _on_epoch_end(state.epoch)
    if state.stopper.stop:
        log.info("early stop after epoch %d: no better val macro AUROC for %d epochs", state.epoch, p.patience)


def _finish(
    args: Any,
    p: TrainClassifierParams,
    state: TrainState,
    data: dict[str, ClassifierImages],
    device: torch.device,
    splits: Any,
    tracker: tracking.Tracker,
    started: float,
    steps_per_epoch: int,
) -> None:
    """Best weights -> val / test predictions, model.ckpt, history.csv, metrics.json; drop last.ckpt."""
    state.model.load_state_dict(state.best_weights)
    probs = {name: predict(state.model, data[name], p, device) for name in ("val", "test")}
    for name in ("val", "test"):
        write_csv(args.out / f"{name}_predictions.csv", predictions_frame(data[name], probs[name]))
    write_csv(args.out / "history.csv", pd.DataFrame(state.history))
    best_epoch = state.stopper.best_epoch + 1
    save_checkpoint(
        args.out / "model.ckpt",
        {
            "model": state.best_weights,
            "step": best_epoch,
            "epoch": best_epoch,
            "classifier": to_dict(state.model.config),
            "classes": list(CLASSES),
            "config": {"params": to_dict(p), "arm": args.arm},
        },
    )
    metrics = {
        "arm": args.arm,
        "best_epoch": best_epoch,
        "epochs_run": state.epoch,
        "epoch_size": p.epoch_size,
        "steps_per_epoch": steps_per_epoch,
        "optimizer_steps": steps_per_epoch * state.epoch,
        "val_macro_auroc": _macro_auroc(data["val"].labels.numpy(), probs["val"]),
        "test_macro_auroc": _macro_auroc(data["test"].labels.numpy(), probs["test"]),
        "train_images": len(data["train"]),
        "real_train_images": splits.n_real_train,
        "synthetic_train_images": splits.n_synthetic,
        "val_images": len(data["val"]),
        "test_images": len(data["test"]),
        "seed": p.seed,
        "wall_s": time.perf_counter() - started,
    }
    write_json(args.out / "metrics.json", metrics)
    (args.out / "last.ckpt").unlink(missing_ok=True)
    tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    for name in ("metrics.json", "history.csv"):
        tracker.log_artifact(args.out / name)
    log.info(
        "arm %s: best epoch %d, val macro AUROC %.4f, test macro AUROC %.4f (%d test images), %.0f s",
        args.arm,
        best_epoch,
        metrics["val_macro_auroc"],
        metrics["test_macro_auroc"],
        metrics["test_images"],
        metrics["wall_s"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
