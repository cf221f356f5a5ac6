"""The train_decoder stage: data from the caches, a smoke run, exact resume, two-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from synthetic_caches import write_synthetic_caches

from raygen.checkpoint import load_checkpoint
from raygen.config import ConfigError, load_section
from raygen.data.token_dataset import StepBatchSampler, TokenTextDataset, make_loader
from raygen.generation.sampler import load_decoder_checkpoint
from raygen.models.decoder import MaskedTokenDecoder
from raygen.stages import train_decoder
from raygen.training import decoder as training

REPO = Path(__file__).resolve().parents[1]
GRID, V, L, D = (4, 4), 16, 6, 8


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here uses tiny models (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    return write_synthetic_caches(root, 96, GRID, V, L, D, seed=0, val_share=0.2, n_prompts=4)


def write_params(path: Path, **overrides) -> Path:
    section = {
        "preset": "smoke",
        "steps": 6,
        "batch_size": 8,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "lr": 3e-3,
        "cond_dropout": 0.25,
        "workers": 0,
        "device": "cpu",
        **overrides,
    }
    path.write_text(
        yaml.safe_dump(
            {"profile": "smoke", "train_decoder": {"preset": "demo"}, "profiles": {"smoke": {"train_decoder": section}}}
        )
    )
    return path


def stage_args(caches, out: Path, params: Path) -> list[str]:
    tokens, text, manifest = caches
    return [
        "--tokens",
        str(tokens),
        "--text",
        str(text),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--params",
        str(params),
    ]


# --- data ----------------------------------------------------------------------------------------


def test_dataset_joins_manifest_to_cache_rows(caches, tmp_path):
    tokens_dir, text_dir, manifest = caches
    frame = pd.read_csv(manifest)
    # Drop one text row and shuffle the token index: the join must follow ids, not positions.
    index = pd.read_csv(text_dir / "index.csv")
    missing = int(frame.loc[frame.split == "train", "study_id"].iloc[0])
    data = TokenTextDataset(tokens_dir, text_dir, frame, "train")
    n_train = int((frame.split == "train").sum())
    assert len(data) == n_train and data.grid == GRID and data.codebook_size == V and data.text_dim == D
    alt_text = tmp_path / "text"
    alt_text.mkdir()
    for name in ("states.npy", "lengths.npy", "null.npy", "meta.json"):
        (alt_text / name).symlink_to(text_dir / name)
    index[index.study_id != missing].sample(frac=1, random_state=0).to_csv(alt_text / "index.csv", index=False)
    fewer = TokenTextDataset(tokens_dir, alt_text, frame, "train")
    assert len(fewer) == n_train - 1

    batch = data.gather([5, 1, 2])
    tokens = np.load(tokens_dir / "tokens.npy")
    states = np.load(text_dir / "states.npy")
    row = data.frame.iloc[1]
    assert batch.ids.dtype == torch.int64 and batch.ids.shape == (3, 16)
    assert np.array_equal(batch.ids[1].numpy(), tokens[int(row.token_row)])
    assert np.array_equal(batch.text_states[1].numpy(), states[int(row.text_row)])
    assert batch.text_states.dtype == torch.float16
    assert batch.text_lengths[1] == np.load(text_dir / "lengths.npy")[int(row.text_row)]


def test_batch_sampler_is_a_pure_function_of_step_and_splits_ranks():
    full = list(StepBatchSampler(50, 8, 20, seed=3))
    assert len(full) == 20 and all(len(b) == 8 for b in full)
    # An epoch (6 batches of 50 items) never repeats an item.
    assert len(set(np.concatenate(full[:6]).tolist())) == 48
    resumed = list(StepBatchSampler(50, 8, 20, seed=3, start_step=13))
    assert all(np.array_equal(a, b) for a, b in zip(full[13:], resumed))
    r0 = list(StepBatchSampler(50, 8, 20, seed=3, rank=0, world_size=2))
    r1 = list(StepBatchSampler(50, 8, 20, seed=3, rank=1, world_size=2))
    for a, b, whole in zip(r0, r1, full):
        assert len(a) == len(b) == 4 and set(a) | set(b) == set(whole) and not set(a) & set(b)
    with pytest.raises(ValueError):
        StepBatchSampler(50, 8, 20, seed=0, world_size=3)


def test_starting_the_loader_leaves_the_global_rng_alone(caches, tmp_path):
    """A resumed run starts a fresh loader iterator; if that drew from torch's global RNG, dropout after a
    resume would differ from an uninterrupted run's."""
    tokens_dir, text_dir, manifest = caches
    train = TokenTextDataset(tokens_dir, text_dir, manifest, "train")
    loader = make_loader(train, StepBatchSampler(len(train), 4, 3, seed=0), workers=0, pin_memory=False)
    before = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)


def test_params_are_strict(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train_decoder": {"steps": 10, "learning_rate": 1.0}}))
    with pytest.raises(ConfigError, match="learning_rate"):
        load_section(path, "train_decoder", train_decoder.TrainDecoderParams)
    path.write_text(yaml.safe_dump({"train_decoder": {"preset": "giant"}}))
    with pytest.raises(ValueError, match="giant"):
        load_section(path, "train_decoder", train_decoder.TrainDecoderParams)


# --- the stage -------------------------------------------------------------------------------------


class FakeVQ(torch.nn.Module):
    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        x = ids.float().div(V - 1).mul(2).sub(1).view(-1, 1, *GRID)
        return torch.nn.functional.interpolate(x, scale_factor=4).repeat(1, 3, 1, 1)


def test_stage_smoke_run_writes_outputs(caches, tmp_path, monkeypatch):
    import raygen.generation.render

    seen = []

    def load_vqgan(folder, device, *, token_meta):
        seen.append((folder, token_meta))
        return FakeVQ()

    monkeypatch.setattr(raygen.generation.render, "load_vqgan", load_vqgan)
    params = write_params(tmp_path / "params.yaml", steps=8, sample_every=4)
    out = tmp_path / "out"
    assert train_decoder.main(stage_args(caches, out, params) + ["--vqgan", str(tmp_path / "vq")]) == 0
    tokens_meta = json.loads((caches[0] / "meta.json").read_text())
    assert seen == [(tmp_path / "vq", tokens_meta)], "the sample grids' VQ-GAN is checked against the tokens' own"
    assert {p.name for p in out.iterdir()} == {"model.ckpt", "metrics.json", "samples.png", "samples"}
    assert (out / "samples" / "step_0000004.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "val_masked_accuracy", "samples_per_s", "data_time_share"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["val_masked_accuracy"] <= 1 and metrics["steps"] == 8
    ckpt = load_checkpoint(out / "model.ckpt")  # weights_only
    assert {"model", "optimizer", "scheduler", "step", "config", "version", "rng", "null_text"} <= set(ckpt)
    assert ckpt["step"] == 8 and ckpt["config"]["params"]["preset"] == "smoke"
    assert ckpt["config"]["token_meta"]["grid"] == list(GRID) and ckpt["config"]["text_meta"]["dim"] == D
    trained = load_decoder_checkpoint(out / "model.ckpt")
    assert trained.model.config.codebook_size == V and trained.null_states.shape == (L, D)


def test_training_learns_the_synthetic_mapping(caches, tmp_path):
    params = write_params(tmp_path / "params.yaml", steps=150, batch_size=16, checkpoint_every=0, warmup_steps=10)
    out = tmp_path / "out"
    assert train_decoder.main(stage_args(caches, out, params)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # 4 prompts with fixed patterns and 10% noise: chance is 1/16, a working model gets most tokens.
    assert metrics["val_masked_accuracy"] > 0.5, metrics


class Interrupted(RuntimeError):
    pass


def test_resume_after_interruption_equals_uninterrupted_run(caches, tmp_path, monkeypatch):
    params = write_params(tmp_path / "params.yaml")
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    assert train_decoder.main(stage_args(caches, ref_out, params)) == 0

    def stop(step):
        if step == 5:  # after the checkpoint at step 3: steps 4-5 are lost work
            raise Interrupted

    monkeypatch.setattr(training, "_on_step_end", stop)
    with pytest.raises(Interrupted):
        train_decoder.main(stage_args(caches, out, params))
    assert load_checkpoint(out / "last.ckpt")["step"] == 3 and not (out / "model.ckpt").exists()
    monkeypatch.setattr(training, "_on_step_end", lambda step: None)
    assert train_decoder.main(stage_args(caches, out, params)) == 0
    assert not (out / "last.ckpt").exists()

    ref, got = load_checkpoint(ref_out / "model.ckpt"), load_checkpoint(out / "model.ckpt")
    assert got["step"] == ref["step"] == 6
    for name, tensor in ref["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert ref["scheduler"] == got["scheduler"]
    assert torch.equal(ref["rng"]["generator"][0], got["rng"]["generator"][0])


def test_changed_params_do_not_resume(caches, tmp_path, monkeypatch):
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "out"
    monkeypatch.setattr(
        training, "_on_step_end", lambda step: (_ for _ in ()).throw(Interrupted) if step == 4 else None
    )
    with pytest.raises(Interrupted):
        train_decoder.main(stage_args(caches, out, params))
    monkeypatch.setattr(training, "_on_step_end", lambda step: None)
    write_params(params, lr=1e-2)  # another learning rate: the old checkpoint is not this run's
    assert train_decoder.main(stage_args(caches, out, params)) == 0
    fresh = tmp_path / "fresh"
    assert train_decoder.main(stage_args(caches, fresh, params)) == 0
    a, b = load_checkpoint(out / "model.ckpt")["model"], load_checkpoint(fresh / "model.ckpt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_gloo_run_trains(caches, tmp_path):
    params = write_params(tmp_path / "params.yaml", steps=4, checkpoint_every=2)
    out = tmp_path / "ddp"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "RAYGEN_THREADS": "1",
        "RAYGEN_TRACKING": "off",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "raygen.stages.train_decoder",
        *stage_args(caches, out, params),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4 and np.isfinite(metrics["train_loss"])
    ckpt = load_checkpoint(out / "model.ckpt")
    assert len(ckpt["rng"]["generator"]) == 2  # both ranks' RNG states, for an exact resume
    assert not torch.equal(ckpt["rng"]["generator"][0], ckpt["rng"]["generator"][1])
    # The weights moved away from the shared initialisation.
    torch.manual_seed(0)
    init = MaskedTokenDecoder(load_decoder_checkpoint(out / "model.ckpt").model.config).state_dict()
    assert not torch.equal(init["head.weight"], ckpt["model"]["head.weight"])


def test_init_demo_starts_from_the_pinned_decoder_and_checks_what_it_learned(caches, tmp_path, monkeypatch):
    """``init: demo`` fine-tunes the pinned decoder only when this run's caches are what it learned from:
    its hash, network shape, and the VQ-GAN whose tokens it saw (the text cache is checked the same way)."""
    import raygen.generation.render
    from raygen.checkpoint import save_torch
    from raygen.errors import UsageError
    from raygen.models import pinned
    from raygen.models.pinned import PinnedHashError
    from raygen.training.pinned_decoder import pack_decoder

    pre = tmp_path / "pre"
    assert train_decoder.main(stage_args(caches, pre, write_params(tmp_path / "pre.yaml"))) == 0
    folder, vq, sha = tmp_path / "pinned", tmp_path / "vq", "ab" * 32
    folder.mkdir()
    save_torch(pack_decoder(load_checkpoint(pre / "model.ckpt"), sha), folder / pinned.DECODER)
    (folder / pinned.SUMS).write_text(pinned.write_sums(folder))
    vq.mkdir()
    (vq / "metrics.json").write_text(json.dumps({"pretrained": {"checkpoint": {"sha256": sha}}}))
    monkeypatch.setattr(raygen.generation.render, "load_vqgan", lambda folder, device, *, token_meta: FakeVQ())

    # A learning rate too small to move anything: the result is the pinned weights (fp16 -> fp32).
    params = write_params(tmp_path / "params.yaml", init="demo", steps=1, lr=1e-12, checkpoint_every=0)
    args = stage_args(caches, tmp_path / "out", params) + ["--vqgan", str(vq), "--demo-weights", str(folder)]
    assert train_decoder.main(args) == 0
    packed = torch.load(folder / pinned.DECODER, weights_only=True)["model"]
    got = load_checkpoint(tmp_path / "out/model.ckpt")["model"]
    assert all(torch.allclose(got[k], packed[k].float(), atol=1e-6) for k in packed)
    assert load_checkpoint(tmp_path / "out/model.ckpt")["config"]["params"]["init"] == "demo"

    (vq / "metrics.json").write_text(json.dumps({"pretrained": {"checkpoint": {"sha256": "cd" * 32}}}))
    with pytest.raises(ConfigError, match="learned the tokens of the VQ-GAN with sha256 abababababab"):
        train_decoder.main(args)
    (vq / "metrics.json").write_text(json.dumps({"source": "train"}))  # a VQ-GAN trained in the run
    with pytest.raises(ConfigError, match="a VQ-GAN trained here"):
        train_decoder.main(args)
    with pytest.raises(UsageError, match="needs --demo-weights"):
        train_decoder.main(stage_args(caches, tmp_path / "none", params) + ["--vqgan", str(vq)])
    longer = load_checkpoint(pre / "model.ckpt")
    longer["config"]["text_meta"]["max_length"] += 1  # learned from text states of another length
    other_text = tmp_path / "other_text"
    other_text.mkdir()
    save_torch(pack_decoder(longer, sha), other_text / pinned.DECODER)
    (other_text / pinned.SUMS).write_text(pinned.write_sums(other_text))
    (vq / "metrics.json").write_text(json.dumps({"pretrained": {"checkpoint": {"sha256": sha}}}))
    with pytest.raises(ConfigError, match="learned text states"):
        train_decoder.main(args[:-1] + [str(other_text)])
    other = write_params(tmp_path / "other.yaml", init="demo", preset="demo")
    with pytest.raises(ConfigError, match="is a decoder of shape"):
        train_decoder.main(
            stage_args(caches, tmp_path / "o", other) + ["--vqgan", str(vq), "--demo-weights", str(folder)]
        )
    with (folder / pinned.DECODER).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(PinnedHashError, match="decoder.ckpt"):
        train_decoder.main(args)
