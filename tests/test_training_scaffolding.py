"""The trainers' shared scaffolding: the learning-rate schedule, AdamW's decay split, resume matching, RNG."""

from __future__ import annotations

import math

import pytest
import torch

from raygen.checkpoint import save_checkpoint
from raygen.runtime import Dist
from raygen.training.scaffolding import (
    adamw,
    essential_config,
    restore_rng,
    resumable,
    rng_state,
    warmup_cosine,
    warmup_cosine_scheduler,
)


def decoder_formula(step: int, warmup: int, total: int) -> float:
    """train_decoder's schedule as first written: cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def classifier_formula(step: int, warmup: int, total: int) -> float:
    """train_classifier's schedule as first written: cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup, total", [(0, 1), (2, 6), (30, 300), (20, 111), (2000, 150_000), (5, 3)])
def test_warmup_cosine_equals_both_trainers_formulas_bit_for_bit(warmup, total):
    for step in range(0, total + 3, max(1, total // 997)):
        assert warmup_cosine(step, warmup, total, floor=0.1) == decoder_formula(step, warmup, total), step
        assert warmup_cosine(step, warmup, total, floor=0.0) == classifier_formula(step, warmup, total), step


def test_scheduler_follows_the_factor_and_stores_no_callable_state():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = warmup_cosine_scheduler(optimizer, warmup=2, total=6, floor=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.5 * decoder_formula(s, 2, 6) for s in range(7)]
    assert scheduler.state_dict()["lr_lambdas"] == [None]  # checkpoints hold no pickled function state


def test_adamw_decays_matrices_only():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = adamw(model, lr=1e-3, weight_decay=0.05, device=torch.device("cpu"), betas=(0.9, 0.96))
    decayed, plain = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([3, 4])] and decayed["weight_decay"] == 0.05
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    assert decayed["betas"] == (0.9, 0.96) and adamw(model, 1e-3, 0.0, torch.device("cpu")).defaults["betas"] == (
        0.9,
        0.999,
    )


def test_essential_config_ignores_resume_free_keys_only():
    config = {"params": {"lr": 1.0, "workers": 2}, "world_size": 1, "profile": "demo"}
    same = {"params": {"lr": 1.0, "workers": 8}, "world_size": 4, "profile": "demo"}
    assert essential_config(config, ("workers",), unchecked=("world_size",)) == essential_config(
        same, ("workers",), unchecked=("world_size",)
    )
    assert essential_config(config, ("workers",)) != essential_config(same, ("workers",))
    other = {**same, "params": {"lr": 2.0, "workers": 2}}
    assert essential_config(config, ("workers",), ("world_size",)) != essential_config(
        other, ("workers",), ("world_size",)
    )


def test_resumable_loads_only_a_matching_checkpoint(tmp_path, caplog):
    path = tmp_path / "last.ckpt"
    essential = lambda cfg: essential_config(cfg, ("workers",))  # noqa: E731
    assert resumable(path, {"params": {}}, essential, "%s stale") is None
    save_checkpoint(path, {"step": 3, "config": {"params": {"lr": 1.0, "workers": 2}}})
    assert resumable(path, {"params": {"lr": 1.0, "workers": 0}}, essential, "%s stale")["step"] == 3
    assert resumable(path, {"params": {"lr": 2.0, "workers": 2}}, essential, "%s stale") is None
    assert f"{path} stale" in caplog.text


def test_rng_state_round_trips_in_one_process():
    ctx = Dist(0, 1, torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    state = rng_state(generator, ctx)
    expected = (torch.rand(3), torch.rand(3, generator=generator))
    torch.rand(7), torch.rand(7, generator=generator)
    restore_rng(state, generator, ctx)
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(torch.rand(3, generator=generator), expected[1])
    before = generator.get_state()
    restore_rng({key: value * 2 for key, value in state.items()}, generator, ctx)  # two processes wrote it
    assert torch.equal(generator.get_state(), before)  # another world size keeps this run's fresh seeds


def test_the_same_checkpoint_is_the_same_bytes(tmp_path):
    """DVC and the pinned weights' SHA256SUMS hash checkpoints: saving the same state twice must give
    the same file, whatever temporary name the atomic write used."""
    from raygen.checkpoint import save_checkpoint

    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 3}
    save_checkpoint(tmp_path / "a.ckpt", state)
    save_checkpoint(tmp_path / "b" / "other-name.ckpt", state)
    assert (tmp_path / "a.ckpt").read_bytes() == (tmp_path / "b" / "other-name.ckpt").read_bytes()
