"""The generation process without (schedule, step) and with a tiny network (sampler, generate CLI)."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from raygen.checkpoint import save_checkpoint
from raygen.config import to_dict
from raygen.errors import MismatchedInputsError, UsageError
from raygen.generation.render import check_vqgan_made_the_tokens, generate_images, masked_canvas
from raygen.generation.sampler import SamplerConfig, guidance_scale, load_decoder_checkpoint, sample_tokens
from raygen.generation.schedule import (
    mask_ratio,
    masked_count_after,
    paper_masked_input,
    remask_count,
    sample_train_mask,
)
from raygen.generation.step import decode_step, filter_top_share, gumbel_noise, step_temperature
from raygen.generation.synthetic_sets import SetGenerator
from raygen.io import sha256_file
from raygen.models.decoder import DecoderConfig, MaskedTokenDecoder
from raygen.tools import generate

V, GRID, L, D = 16, (4, 4), 6, 8
N = GRID[0] * GRID[1]


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here uses tiny models (see conftest.one_thread)."""


def tiny_model(seed: int = 0) -> MaskedTokenDecoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(grid=GRID, codebook_size=V, text_dim=D, width=16, depth=2, heads=2, ffn=32, dropout=0.0)
    return MaskedTokenDecoder(cfg).eval()


def prompts(batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, L, D, generator=g), torch.tensor([L, 3, 1][:batch] + [2] * max(0, batch - 3))


# --- schedule -----------------------------------------------------------------------------------


def test_mask_ratio_is_cosine_and_monotone():
    r = torch.linspace(0, 1, 101)
    g = mask_ratio(r)
    assert g[0] == pytest.approx(1.0) and g[-1] == pytest.approx(0.0, abs=1e-6)
    assert torch.all(g[1:] <= g[:-1])
    assert mask_ratio(0.5) == pytest.approx(math.cos(math.pi / 4))


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 18])
def test_decode_schedule_is_monotone_and_ends_unmasked(steps):
    counts = [masked_count_after(k, steps, 1024) for k in range(steps)]
    assert counts[-1] == 0
    assert all(0 <= c < 1024 for c in counts)
    assert all(b <= a for a, b in zip(counts, counts[1:]))
    if steps == 3:  # floor(1024 * cos(pi/6)), floor(1024 * cos(pi/3)), 0
        assert counts == [886, 512, 0]
    with pytest.raises(ValueError):
        masked_count_after(steps, steps, 1024)


def test_both_loops_pin_remask_counts_and_temperatures_for_k3_over_1024_tokens():
    # MaskGIT-style: floor(1024 cos(pi/2 (k+1)/3)) left masked after step k; T (1 - k/3).
    assert [remask_count("maskgit", k, 3, 1024) for k in range(3)] == [886, 512, 0]
    assert [step_temperature(1.3, k, 3, True) for k in range(3)] == pytest.approx([1.3, 1.3 * 2 / 3, 1.3 / 3])
    # The authors' loop: step k sees max(int(1024 cos(pi/2 t_k)), 1), t = linspace(0, 1, 3) = 0, 0.5, 1 ...
    assert [paper_masked_input(k, 3, 1024) for k in range(3)] == [1024, 724, 1]
    # ... so after step k that many of the next step stay masked (the last step re-predicts one token) ...
    assert [remask_count("raygen_paper", k, 3, 1024) for k in range(3)] == [724, 1, 0]
    # ... and T (K - 1 - k) / K: the last step is greedy.
    temps = [step_temperature(1.3, k, 3, True, "raygen_paper") for k in range(3)]
    assert temps == pytest.approx([1.3 * 2 / 3, 1.3 / 3, 0.0])
    assert step_temperature(1.3, 2, 3, False, "raygen_paper") == 1.3  # anneal off: constant, as maskgit
    with pytest.raises(ValueError):
        remask_count("muse", 0, 3, 1024)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 18])
def test_paper_schedule_is_monotone_and_ends_unmasked(steps):
    counts = [remask_count("raygen_paper", k, steps, 1024) for k in range(steps)]
    assert counts[-1] == 0 and all(b <= a for a, b in zip(counts, counts[1:]))
    assert paper_masked_input(0, steps, 1024) == 1024  # the first step sees a fully masked canvas
    if steps > 1:
        assert counts[-2] == 1  # max(., 1): the last step always has one token to predict


def test_train_mask_counts_between_one_and_n_with_cosine_mean():
    g = torch.Generator().manual_seed(0)
    mask = sample_train_mask(4000, 64, g)
    counts = mask.sum(dim=1)
    assert mask.dtype == torch.bool and mask.shape == (4000, 64)
    assert counts.min() >= 1 and counts.max() <= 64
    # E[cos(pi r / 2)] = 2 / pi for r ~ U(0, 1); ceil adds < 1/64.
    assert counts.float().mean().item() / 64 == pytest.approx(2 / math.pi, abs=0.03)
    # Tiny grids too: never zero masked tokens.
    assert sample_train_mask(2000, 1, g).all()
    # Same generator state, same mask.
    assert torch.equal(
        sample_train_mask(5, 16, torch.Generator().manual_seed(3)),
        sample_train_mask(5, 16, torch.Generator().manual_seed(3)),
    )


# --- step --------------------------------------------------------------------------------------


def test_filter_keeps_top_share():
    logits = torch.arange(10.0).repeat(2, 1)
    kept = filter_top_share(logits, 0.5)
    assert torch.isfinite(kept).sum(dim=-1).tolist() == [5, 5]
    assert torch.isfinite(kept[0, 5:]).all() and torch.isinf(kept[0, :5]).all()
    assert torch.equal(filter_top_share(logits, 0.0), logits)
    assert torch.isfinite(filter_top_share(logits, 0.99)).sum(dim=-1).tolist() == [1, 1]


def test_gumbel_noise_is_standard_gumbel():
    x = gumbel_noise((200_000,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(x).all()
    assert x.mean().item() == pytest.approx(0.5772, abs=0.02)  # Euler-Mascheroni
    assert x.std().item() == pytest.approx(math.pi / math.sqrt(6), abs=0.02)


@pytest.mark.parametrize("gumbel_scale", [0.0, 4.5])
@pytest.mark.parametrize("steps", [2, 3, 5])
def test_decoding_never_remasks_and_ends_without_masks(steps, gumbel_scale):
    g = torch.Generator().manual_seed(0)
    ids = torch.full((4, N), V)
    prev_fixed = torch.zeros(4, N, dtype=torch.bool)
    for k in range(steps):
        logits = torch.randn(4, N, V, generator=g) * 3
        out = decode_step(logits, ids, k, steps, V, g, temperature=1.3, alpha=0.5, gumbel_scale=gumbel_scale)
        fixed = ~out.masked
        assert torch.all(fixed[prev_fixed]), "a fixed token was re-masked"
        assert torch.equal(out.ids[prev_fixed], ids[prev_fixed]), "a fixed token changed"
        assert torch.equal(out.masked, out.ids == V)
        assert (out.masked.sum(dim=1) == min(masked_count_after(k, steps, N), int((ids == V).sum(1)[0]) - 1)).all()
        # New tokens come from the kept top half of that step's logits.
        new = fixed & ~prev_fixed
        kept = torch.isfinite(filter_top_share(logits, 0.5)).gather(-1, out.ids.clamp(max=V - 1)[..., None])[..., 0]
        assert kept[new].all()
        ids, prev_fixed = out.ids, fixed
    assert not (ids == V).any() and ids.min() >= 0 and ids.max() < V


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_paper_loop_never_remasks_fixed_tokens_and_ends_without_masks(steps):
    g = torch.Generator().manual_seed(0)
    ids = torch.full((4, N), V)
    prev_fixed = torch.zeros(4, N, dtype=torch.bool)
    for k in range(steps):
        logits = torch.randn(4, N, V, generator=g) * 3
        out = decode_step(logits, ids, k, steps, V, g, temperature=1.3, alpha=0.5, schedule="raygen_paper")
        assert torch.all(~out.masked[prev_fixed]) and torch.equal(out.ids[prev_fixed], ids[prev_fixed])
        assert (out.masked.sum(dim=1) == remask_count("raygen_paper", k, steps, N)).all()
        ids, prev_fixed = out.ids, ~out.masked
    assert not (ids == V).any() and ids.min() >= 0 and ids.max() < V


def _start_of_step_reference(logits_fn, batch: int, steps: int, g: torch.Generator) -> torch.Tensor:
    """The authors' loop as they structure it: re-mask the top ``1 - p`` scores at the START of each step.

    Written from the description in raygen.generation.schedule (T = 1.3, alpha = 0.5), not from their code.
    """
    ids, scores = torch.full((batch, N), V), torch.zeros(batch, N)
    for k, t in enumerate(torch.linspace(0, 1, steps)):
        count = max(int((torch.cos(t * math.pi * 0.5) * N).item()), 1)
        ids = ids.scatter(1, scores.topk(count, dim=-1).indices, V)
        logits = logits_fn(ids)
        temp = 1.3 * (steps - 1 - k) / steps
        noisy = filter_top_share(logits, 0.5) / max(temp, 1e-10) + gumbel_noise(logits.shape, g, logits.device)
        pred = noisy.argmax(-1)
        is_mask = ids == V
        ids = torch.where(is_mask, pred, ids)
        p = logits.softmax(-1).gather(-1, pred[..., None])[..., 0]
        scores = (1 - p).masked_fill(~is_mask, -1e5)
    return ids


@pytest.mark.parametrize("steps", [2, 3, 6])
def test_paper_loop_equals_the_start_of_step_formulation(steps):
    """Re-masking at the end of step k with the next step's count is the same loop as the original's."""
    table = torch.randn(V + 1, N, V, generator=torch.Generator().manual_seed(5)) * 2

    def logits_fn(ids: torch.Tensor) -> torch.Tensor:  # depends on the canvas, like a network
        return table[ids, torch.arange(N)] + 0.3 * table[ids.roll(1, dims=1), torch.arange(N)]

    ref = _start_of_step_reference(logits_fn, 4, steps, torch.Generator().manual_seed(1))
    g, ids = torch.Generator().manual_seed(1), torch.full((4, N), V)
    for k in range(steps):
        ids = decode_step(logits_fn(ids), ids, k, steps, V, g, temperature=1.3, alpha=0.5, schedule="raygen_paper").ids
    assert torch.equal(ids, ref)


def test_paper_loop_ranks_by_the_unfiltered_probability_maskgit_by_the_filtered_one():
    # Greedy picks token 0 at both positions. Keeping the top half (alpha = 0.5) of 4 logits:
    # position 0: unfiltered p = 1 / (1 + e^-1.5 + 2 e^-1.6) = 0.61, filtered 1 / (1 + e^-1.5) = 0.82;
    # position 1: p = 1 / (1 + e^-0.8) = 0.69 either way. One of the two stays masked after step 0 of 2.
    logits = torch.tensor([[[3.0, 1.5, 1.4, 1.4], [3.0, 2.2, -20.0, -20.0]]])
    ids = torch.full((1, 2), 4)
    paper = decode_step(logits, ids, 0, 2, 4, torch.Generator(), temperature=0.0, alpha=0.5, schedule="raygen_paper")
    maskgit = decode_step(logits, ids, 0, 2, 4, torch.Generator(), temperature=0.0, alpha=0.5)
    assert paper.masked.tolist() == [[True, False]] and maskgit.masked.tolist() == [[False, True]]
    with pytest.raises(ValueError, match="gumbel"):
        decode_step(logits, ids, 0, 2, 4, torch.Generator(), gumbel_scale=1.0, schedule="raygen_paper")


def test_greedy_step_fixes_the_most_confident():
    logits = torch.full((1, 4, 3), -5.0)
    logits[0, :, 0] = torch.tensor([0.0, 5.0, 1.0, 9.0])  # confidence order: 3, 1, 2, 0
    ids = torch.full((1, 4), 3)
    out = decode_step(logits, ids, 0, 2, 3, torch.Generator(), temperature=0.0)
    # floor(4 * cos(pi/4)) = 2 stay masked: the two least confident (positions 0 and 2).
    assert out.masked.tolist() == [[True, False, True, False]]
    assert out.ids.tolist() == [[3, 0, 3, 0]]


# --- sampler ----------------------------------------------------------------------------------


def test_same_seed_same_tokens_and_other_seed_differs():
    model = tiny_model()
    states, lengths = prompts()
    cfg = SamplerConfig(steps=3, temperature=1.3, gumbel_scale=1.0)
    a = sample_tokens(model, states, lengths, cfg, torch.Generator().manual_seed(7)).ids
    b = sample_tokens(model, states, lengths, cfg, torch.Generator().manual_seed(7)).ids
    c = sample_tokens(model, states, lengths, cfg, torch.Generator().manual_seed(8)).ids
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (3, N) and a.min() >= 0 and a.max() < V


def test_guidance_scale_zero_is_the_unconditional_path():
    model = tiny_model()
    states, lengths = prompts()
    null = torch.randn(L, D)
    cfg0 = SamplerConfig(steps=3, cfg_scale=0.0)
    guided = sample_tokens(model, states, lengths, cfg0, torch.Generator().manual_seed(1), null, 2).ids
    uncond = sample_tokens(
        model,
        null[None].expand(3, -1, -1),
        torch.full((3,), 2),
        SamplerConfig(steps=3),
        torch.Generator().manual_seed(1),
    ).ids
    assert torch.equal(guided, uncond)
    # A real guidance scale changes the result and needs the null prompt.
    strong = sample_tokens(
        model, states, lengths, SamplerConfig(steps=3, cfg_scale=3.0), torch.Generator().manual_seed(1), null, 2
    ).ids
    cond = sample_tokens(model, states, lengths, SamplerConfig(steps=3), torch.Generator().manual_seed(1)).ids
    assert not torch.equal(strong, cond)
    with pytest.raises(ValueError):
        sample_tokens(model, states, lengths, SamplerConfig(cfg_scale=2.0), torch.Generator())


def test_guidance_schedule_scales():
    assert [guidance_scale(3.0, k, 3, "constant") for k in range(3)] == [3.0, 3.0, 3.0]
    assert [guidance_scale(3.0, k, 3, "linear") for k in range(3)] == [1.0, 2.0, 3.0]
    assert [guidance_scale(4.0, k, 4, "linear") for k in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert guidance_scale(3.0, 0, 1, "linear") == 3.0  # one step: the full scale
    with pytest.raises(ValueError, match="cfg_schedule"):
        SamplerConfig(cfg_schedule="cosine")


def test_linear_guidance_starts_unguided_and_ends_guided():
    model = tiny_model()
    states, lengths = prompts()
    null = torch.randn(L, D)

    def run(scale: float, cfg_schedule: str = "constant") -> list[torch.Tensor]:
        config = SamplerConfig(steps=3, cfg_scale=scale, cfg_schedule=cfg_schedule, temperature=1.0)
        g = torch.Generator().manual_seed(3)
        return sample_tokens(model, states, lengths, config, g, null, 2, keep_history=True).history

    rows: list[int] = []
    hook = model.blocks[0].cross_attn.q.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[0]))
    linear = run(3.0, "linear")
    hook.remove()
    assert rows == [3, 6, 6]  # the unguided first step skips the null prompt's pass
    plain, guided = run(1.0), run(3.0)
    assert torch.equal(linear[0], plain[0])  # step 0 at scale 1: the conditional model alone
    assert not torch.equal(linear[0], guided[0])
    assert not torch.equal(linear[-1], plain[-1])  # later steps are guided


def test_cross_attention_kv_computed_once_per_generation():
    model = tiny_model()
    calls = {"kv": 0, "text_proj": 0, "q": 0}
    model.blocks[0].cross_attn.kv.register_forward_hook(lambda *_: calls.__setitem__("kv", calls["kv"] + 1))
    model.text_proj.register_forward_hook(lambda *_: calls.__setitem__("text_proj", calls["text_proj"] + 1))
    model.blocks[0].cross_attn.q.register_forward_hook(lambda *_: calls.__setitem__("q", calls["q"] + 1))
    states, lengths = prompts()
    out = sample_tokens(
        model,
        states,
        lengths,
        SamplerConfig(steps=4, cfg_scale=2.0),
        torch.Generator().manual_seed(0),
        torch.zeros(L, D),
        1,
        keep_history=True,
    )
    assert calls == {"kv": 1, "text_proj": 1, "q": 4}  # text once (cond + null in one batch), queries per step
    assert len(out.history) == 4
    assert [int((h == V).sum(1)[0]) for h in out.history] == [masked_count_after(k, 4, N) for k in range(4)]


def test_paper_loop_end_to_end_with_a_tiny_decoder():
    model = tiny_model()
    states, lengths = prompts()
    cfg = SamplerConfig(steps=3, temperature=1.3, alpha=0.5, schedule="raygen_paper")
    a = sample_tokens(model, states, lengths, cfg, torch.Generator().manual_seed(7), keep_history=True)
    b = sample_tokens(model, states, lengths, cfg, torch.Generator().manual_seed(7)).ids
    assert torch.equal(a.ids, b) and a.ids.shape == (3, N)
    assert not (a.ids == V).any() and a.ids.min() >= 0 and a.ids.max() < V  # no mask token left
    # 4x4 grid, K=3: steps see 16, int(16 cos(pi/4)) = 11 and 1 masked tokens.
    assert [int((h == V).sum(1)[0]) for h in a.history] == [11, 1, 0]
    c = sample_tokens(model, states, lengths, cfg, torch.Generator().manual_seed(8)).ids
    assert not torch.equal(a.ids, c)


def test_sampler_config_validates():
    with pytest.raises(ValueError):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError):
        SamplerConfig(alpha=1.0)
    assert SamplerConfig().schedule == "maskgit"
    with pytest.raises(ValueError, match="schedule"):
        SamplerConfig(schedule="muse")
    with pytest.raises(ValueError, match="gumbel_scale"):
        SamplerConfig(schedule="raygen_paper", gumbel_scale=4.5)


# --- figures and the generate command ------------------------------------------------------------


class FakeVQ(nn.Module):
    """Maps each token id to a flat grey patch: (B, h*w) ids -> (B, 3, 4h, 4w) in [-1, 1]."""

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        x = ids.float().div(V - 1).mul(2).sub(1).view(-1, 1, *GRID)
        return torch.nn.functional.interpolate(x, scale_factor=4).repeat(1, 3, 1, 1)


def test_masked_canvas_greys_masked_patches():
    images = torch.ones(1, 3, 8, 8)
    masked = torch.zeros(1, 4, dtype=torch.bool)
    masked[0, 1] = True  # top-right token of a 2x2 grid
    out = masked_canvas(images, masked, (2, 2))
    assert torch.all(out[0, :, :4, 4:] == 0) and torch.all(out[0, :, :4, :4] == 1) and torch.all(out[0, :, 4:] == 1)


def write_tiny_checkpoint(path, token_meta=None):
    model = tiny_model()
    null = torch.zeros(L, D, dtype=torch.float16)
    config = {"decoder": to_dict(model.config), "text_meta": {"max_length": L, "dim": D, "null_length": 1}}
    if token_meta is not None:
        config["token_meta"] = token_meta
    save_checkpoint(
        path, {"model": model.state_dict(), "step": 0, "config": config, "null_text": {"states": null, "length": 1}}
    )


def test_generate_command_writes_grid_and_progressive_figure(tmp_path, monkeypatch):
    ckpt = tmp_path / "model.ckpt"
    write_tiny_checkpoint(ckpt)
    loaded = load_decoder_checkpoint(ckpt)
    assert loaded.model.config.grid == GRID and loaded.null_length == 1

    def fake_encode(texts, params_path, profile, model_dir, text_meta, device):
        g = torch.Generator().manual_seed(len(texts[0]))
        return torch.randn(len(texts), text_meta["max_length"], D, generator=g).half(), torch.full((len(texts),), 3)

    monkeypatch.setattr(generate, "encode_prompts", fake_encode)
    asked = []

    def load_vqgan(folder, device, *, token_meta):
        asked.append(token_meta)
        return FakeVQ()

    monkeypatch.setattr(generate, "load_vqgan", load_vqgan)
    out, fig = tmp_path / "grid.png", tmp_path / "fig3.png"
    args = [
        "--prompt",
        "Large right pleural effusion.",
        "--n",
        "3",
        "--steps",
        "2",
        "--seed",
        "0",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
        "--progressive",
        str(fig),
        "--cfg",
        "1.5",
    ]
    assert generate.main(args) == 0
    assert asked == [{}], "a checkpoint that kept no token meta is checked (and warned about), not skipped"
    assert Image.open(out).size[0] > 100 and Image.open(fig).size[0] > 100
    first = np.asarray(Image.open(out)).copy()
    assert generate.main(args) == 0
    assert np.array_equal(first, np.asarray(Image.open(out))), "same seed must give the same image"


def test_generate_command_schedule_flag():
    base = ["--prompt", "x", "--out", "grid.png"]

    def config(*flags):
        return generate.sampler_config(generate.build_parser().parse_args(base + list(flags)), SamplerConfig())

    assert config().schedule == "maskgit"
    paper = config("--schedule", "raygen_paper")
    assert paper.schedule == "raygen_paper" and paper.steps == 3
    with pytest.raises(SystemExit):
        generate.build_parser().parse_args(base + ["--schedule", "muse"])
    assert config().cfg_schedule == "constant"
    assert config("--cfg-schedule", "linear").cfg_schedule == "linear"


@pytest.mark.parametrize(("profile", "schedule", "cfg"), [("demo", "maskgit", 3.0), ("paper", "raygen_paper", 1.0)])
def test_generate_samples_as_the_profile_s_synthesize_section_unless_a_flag_says_otherwise(profile, schedule, cfg):
    """After `make demo`, `raygen generate` draws images like the ones the pipeline evaluated."""
    from raygen.config import load_section
    from raygen.stages.synthesize import SynthesizeParams

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    section = load_section(params, "synthesize", SynthesizeParams, profile)
    parser = generate.build_parser()
    base = ["--prompt", "x", "--out", "grid.png", "--profile", profile, "--params", str(params)]
    as_params = generate.profile_sampler_config(parser.parse_args(base))
    assert as_params == section.sampler() and (as_params.schedule, as_params.cfg_scale) == (schedule, cfg)
    steps8 = generate.profile_sampler_config(parser.parse_args([*base, "--steps", "8", "--no-anneal"]))
    assert steps8 == replace(section.sampler(), steps=8, temperature_anneal=False)
    if schedule == "raygen_paper":  # the authors' loop has no confidence noise: a flag cannot add it
        with pytest.raises(UsageError, match="gumbel"):
            generate.profile_sampler_config(parser.parse_args([*base, "--gumbel", "4.5"]))


def test_generate_images_progressive_frames_grey_out_masked_tokens():
    from raygen.generation.sampler import TrainedDecoder

    trained = TrainedDecoder(tiny_model(), torch.zeros(L, D), 1, {})
    states, lengths = prompts(2)
    images, frames = generate_images(
        trained, states, lengths, SamplerConfig(steps=2, batch_size=1), 0, FakeVQ(), progressive=True
    )
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert len(frames) == 2
    # After step 1 of 2, floor(16 * cos(pi/4)) = 11 tokens are masked -> 11 grey 4x4 patches per image.
    grey = (frames[0] == 0).all(dim=1).float().view(2, 4, 4, 4, 4).mean(dim=(2, 4)) == 1  # (B, 4, 4)
    assert grey.sum(dim=(1, 2)).tolist() == [11, 11]
    assert torch.equal(frames[1], images)


def vqgan_files(folder, checkpoint: bytes):
    """A VQ-GAN folder whose files are never parsed: the token check comes before loading."""
    folder.mkdir()
    (folder / "config.yaml").write_text("not parsed\n")
    (folder / "model.ckpt").write_bytes(checkpoint)
    return folder


def tokens_made_by(folder) -> dict:
    """A token cache's meta.json entry naming the VQ-GAN in ``folder`` (as tokenize writes it)."""
    return {
        "vqgan": {"checkpoint": "results/vqgan/model.ckpt", "checkpoint_sha256": sha256_file(folder / "model.ckpt")}
    }


def test_a_decoder_is_decoded_only_with_the_vqgan_that_made_its_tokens(tmp_path, caplog):
    own = vqgan_files(tmp_path / "own", b"the VQ-GAN that made the tokens")
    other = vqgan_files(tmp_path / "other", b"a VQ-GAN trained again")
    check_vqgan_made_the_tokens(own, tokens_made_by(own))
    with pytest.raises(
        MismatchedInputsError, match=r"other/model.ckpt \(sha256 \w{12}\) is not the VQ-GAN whose tokens"
    ):
        check_vqgan_made_the_tokens(other, tokens_made_by(own))
    with caplog.at_level(logging.WARNING):
        check_vqgan_made_the_tokens(other, {})  # token meta that names no VQ-GAN
    assert "does not record which VQ-GAN made its tokens" in caplog.text


def test_generate_refuses_another_vqgan_before_loading_the_text_model(tmp_path, monkeypatch):
    own, other = vqgan_files(tmp_path / "own", b"own"), vqgan_files(tmp_path / "other", b"other")
    ckpt, out = tmp_path / "model.ckpt", tmp_path / "grid.png"
    write_tiny_checkpoint(ckpt, token_meta=tokens_made_by(own))
    monkeypatch.setattr(generate, "encode_prompts", lambda *a: pytest.fail("the text model loaded first"))
    args = ["--prompt", "x", "--checkpoint", str(ckpt), "--vqgan", str(other), "--out", str(out)]
    with pytest.raises(MismatchedInputsError):
        generate.main(args)
    assert not out.exists()


def test_synthesize_refuses_another_vqgan(tmp_path):
    own, other = vqgan_files(tmp_path / "own", b"own"), vqgan_files(tmp_path / "other", b"other")
    ckpt = tmp_path / "model.ckpt"
    write_tiny_checkpoint(ckpt, token_meta=tokens_made_by(own))
    ctx = SimpleNamespace(device=torch.device("cpu"), rank=0, world_size=1)
    with pytest.raises(MismatchedInputsError):
        SetGenerator.load(ckpt, other, SamplerConfig(), "fp32", tmp_path / "out", ctx)
