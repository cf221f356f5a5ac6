"""The generation process without (schedule, step) and with a tiny network (sampler, generate CLI)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from raygen import generate
from raygen.checkpoint import save_checkpoint
from raygen.config import to_dict
from raygen.generation.sampler import SamplerConfig, load_decoder_checkpoint, sample_tokens
from raygen.generation.schedule import mask_ratio, masked_count_after, sample_train_mask
from raygen.generation.step import decode_step, filter_top_share, gumbel_noise
from raygen.models.decoder import DecoderConfig, MaskedTokenDecoder

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
    assert torch.equal(sample_train_mask(5, 16, torch.Generator().manual_seed(3)),
                       sample_train_mask(5, 16, torch.Generator().manual_seed(3)))


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
    uncond = sample_tokens(model, null[None].expand(3, -1, -1), torch.full((3,), 2), SamplerConfig(steps=3),
                           torch.Generator().manual_seed(1)).ids
    assert torch.equal(guided, uncond)
    # A real guidance scale changes the result and needs the null prompt.
    strong = sample_tokens(model, states, lengths, SamplerConfig(steps=3, cfg_scale=3.0),
                           torch.Generator().manual_seed(1), null, 2).ids
    cond = sample_tokens(model, states, lengths, SamplerConfig(steps=3), torch.Generator().manual_seed(1)).ids
    assert not torch.equal(strong, cond)
    with pytest.raises(ValueError):
        sample_tokens(model, states, lengths, SamplerConfig(cfg_scale=2.0), torch.Generator())


def test_cross_attention_kv_computed_once_per_generation():
    model = tiny_model()
    calls = {"kv": 0, "text_proj": 0, "q": 0}
    model.blocks[0].cross_attn.kv.register_forward_hook(lambda *_: calls.__setitem__("kv", calls["kv"] + 1))
    model.text_proj.register_forward_hook(lambda *_: calls.__setitem__("text_proj", calls["text_proj"] + 1))
    model.blocks[0].cross_attn.q.register_forward_hook(lambda *_: calls.__setitem__("q", calls["q"] + 1))
    states, lengths = prompts()
    out = sample_tokens(model, states, lengths, SamplerConfig(steps=4, cfg_scale=2.0),
                        torch.Generator().manual_seed(0), torch.zeros(L, D), 1, keep_history=True)
    assert calls == {"kv": 1, "text_proj": 1, "q": 4}  # text once (cond + null in one batch), queries per step
    assert len(out.history) == 4
    assert [int((h == V).sum(1)[0]) for h in out.history] == [masked_count_after(k, 4, N) for k in range(4)]


def test_sampler_config_validates():
    with pytest.raises(ValueError):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError):
        SamplerConfig(alpha=1.0)


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
    out = generate.masked_canvas(images, masked, (2, 2))
    assert torch.all(out[0, :, :4, 4:] == 0) and torch.all(out[0, :, :4, :4] == 1) and torch.all(out[0, :, 4:] == 1)


def write_tiny_checkpoint(path):
    model = tiny_model()
    null = torch.zeros(L, D, dtype=torch.float16)
    save_checkpoint(path, {"model": model.state_dict(), "step": 0,
                           "config": {"decoder": to_dict(model.config),
                                      "text_meta": {"max_length": L, "dim": D, "null_length": 1}},
                           "null_text": {"states": null, "length": 1}})


def test_generate_command_writes_grid_and_progressive_figure(tmp_path, monkeypatch):
    ckpt = tmp_path / "model.ckpt"
    write_tiny_checkpoint(ckpt)
    loaded = load_decoder_checkpoint(ckpt)
    assert loaded.model.config.grid == GRID and loaded.null_length == 1

    def fake_encode(texts, params_path, profile, model_dir, text_meta, device):
        g = torch.Generator().manual_seed(len(texts[0]))
        return torch.randn(len(texts), text_meta["max_length"], D, generator=g).half(), torch.full((len(texts),), 3)

    monkeypatch.setattr(generate, "encode_prompts", fake_encode)
    monkeypatch.setattr(generate, "load_vqgan", lambda folder, device: FakeVQ())
    out, fig = tmp_path / "grid.png", tmp_path / "fig3.png"
    args = ["--prompt", "Large right pleural effusion.", "--n", "3", "--steps", "2", "--seed", "0",
            "--checkpoint", str(ckpt), "--out", str(out), "--progressive", str(fig), "--cfg", "1.5"]
    assert generate.main(args) == 0
    assert Image.open(out).size[0] > 100 and Image.open(fig).size[0] > 100
    first = np.asarray(Image.open(out)).copy()
    assert generate.main(args) == 0
    assert np.array_equal(first, np.asarray(Image.open(out))), "same seed must give the same image"


def test_generate_images_progressive_frames_grey_out_masked_tokens():
    from raygen.generation.sampler import TrainedDecoder

    trained = TrainedDecoder(tiny_model(), torch.zeros(L, D), 1, {})
    states, lengths = prompts(2)
    images, frames = generate.generate_images(trained, states, lengths, SamplerConfig(steps=2, batch_size=1),
                                              0, FakeVQ(), progressive=True)
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert len(frames) == 2
    # After step 1 of 2, floor(16 * cos(pi/4)) = 11 tokens are masked -> 11 grey 4x4 patches per image.
    grey = (frames[0] == 0).all(dim=1).float().view(2, 4, 4, 4, 4).mean(dim=(2, 4)) == 1  # (B, 4, 4)
    assert grey.sum(dim=(1, 2)).tolist() == [11, 11]
    assert torch.equal(frames[1], images)
