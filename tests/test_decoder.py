"""The masked-token decoder network: shapes, masks, presets, and that it can learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raygen.models.decoder import (
    DECODER_PRESETS,
    DecoderConfig,
    MaskedTokenDecoder,
    build_decoder,
    count_parameters,
    decoder_config,
)

V, GRID, L, D = 32, (4, 4), 6, 8
N = GRID[0] * GRID[1]


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here uses tiny models (see conftest.one_thread)."""


def tiny(width: int = 16, dropout: float = 0.0) -> MaskedTokenDecoder:
    torch.manual_seed(0)
    return MaskedTokenDecoder(
        DecoderConfig(
            grid=GRID, codebook_size=V, text_dim=D, width=width, depth=2, heads=2, ffn=2 * width, dropout=dropout
        )
    ).eval()


def batch(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V + 1, (b, N), generator=g)  # includes the mask id V
    return ids, torch.randn(b, L, D, generator=g), torch.tensor([L, 2, 1, 4, 5][:b])


def test_logit_shapes_and_selected_positions():
    model = tiny()
    ids, states, lengths = batch()
    logits = model(ids, states, lengths)
    assert logits.shape == (3, N, V)  # the mask token is never a prediction
    select = ids == V
    picked = model(ids, states, lengths, select=select)
    assert picked.shape == (int(select.sum()), V)
    torch.testing.assert_close(picked, logits[select])


def test_decode_with_precomputed_context_equals_forward():
    model = tiny()
    ids, states, lengths = batch()
    context = model.encode_text(states, lengths)
    assert len(context.kv) == 2 and context.kv[0][0].shape == (3, 2, L, 8)
    torch.testing.assert_close(model.decode(ids, context), model(ids, states, lengths))


def test_text_padding_is_ignored_and_text_matters():
    model = tiny()
    ids, states, lengths = batch()
    changed = states.clone()
    changed[1, 2:] = 100.0  # row 1 has length 2: only padding changes
    torch.testing.assert_close(model(ids, changed, lengths), model(ids, states, lengths))
    changed[1, 0] = 5.0  # a real token changes the prediction
    assert not torch.allclose(model(ids, changed, lengths)[1], model(ids, states, lengths)[1])


def test_model_is_bidirectional():
    model = tiny()
    ids, states, lengths = batch()
    other = ids.clone()
    other[:, -1] = (ids[:, -1] + 1) % V
    assert not torch.allclose(model(ids, states, lengths)[:, 0], model(other, states, lengths)[:, 0])


def test_presets_hold_only_network_shape_and_paper_matches_section_3_1():
    for preset in DECODER_PRESETS.values():
        assert set(preset) == {"width", "depth", "heads", "ffn", "dropout"}
    cfg = decoder_config("paper", [32, 32], 1024, 768)
    assert (cfg.width, cfg.depth, cfg.heads, cfg.ffn) == (1024, 6, 8, 4096)
    assert cfg.num_tokens == 1024 and cfg.mask_id == 1024 and cfg.grid == (32, 32)
    with torch.device("meta"):  # no memory: just the parameter shapes
        paper = MaskedTokenDecoder(cfg)
    assert paper.tok_emb.weight.shape == (1025, 1024) and paper.head.weight.shape == (1024, 1024)
    assert paper.pos_emb.shape == (1, 1024, 1024)
    assert 100e6 < count_parameters(paper) < 120e6
    with pytest.raises(KeyError):
        decoder_config("huge", [4, 4], 8, 8)
    with pytest.raises(ValueError):
        DecoderConfig(grid=(4, 4), codebook_size=8, text_dim=8, width=10, heads=3)


def test_demo_preset_builds_from_cache_sizes():
    model = build_decoder("demo", (16, 16), 512, 384)
    assert model.config.num_tokens == 256 and model.head.out_features == 512
    assert model.text_proj.in_features == 384


def test_tiny_model_overfits_a_tiny_batch():
    """8 prompts -> 8 token grids: from a fully masked canvas it must recall every token."""
    torch.manual_seed(0)
    model = MaskedTokenDecoder(
        DecoderConfig(grid=GRID, codebook_size=V, text_dim=D, width=32, depth=2, heads=2, ffn=64, dropout=0.0)
    )
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (8, N), generator=g)
    states, lengths = torch.randn(8, L, D, generator=g), torch.full((8,), L)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        mask = torch.rand(8, N, generator=g) < torch.rand(8, 1, generator=g).clamp(min=0.2)
        logits = model(ids.masked_fill(mask, V), states, lengths, select=mask)
        loss = F.cross_entropy(logits, ids[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        full = model(torch.full_like(ids, V), states, lengths)
    assert F.cross_entropy(full.flatten(0, 1), ids.flatten()).item() < 0.3
    assert (full.argmax(-1) == ids).float().mean().item() > 0.95
