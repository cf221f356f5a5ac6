"""tests/standins.py: the four stand-ins, written for the rehearsal profile, load through RayGen's own
loaders (the paper path) and behave like networks: different images give different features and token
ids, and demo reports tokenise without [UNK]."""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from standins import (
    CHEXNET_FILE,
    SPECIAL_TOKENS,
    UNIXGEN_CHECKPOINT,
    UNIXGEN_CONFIG,
    main,
    smooth_images,
    write_unixgen,
)

from raygen.config import load_section, read_params, scientific_section, section_dict
from raygen.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
PROFILE = "rehearsal"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """The command's run into a fresh root: its printed lines and the inputs folders."""
    root = tmp_path_factory.mktemp("standins")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--params", str(PARAMS), "--profile", PROFILE, "--root", str(root), "--seed", "0"]) == 0
    inputs = scientific_section(read_params(PARAMS), "inputs", PROFILE)
    return {"lines": out.getvalue().splitlines(), **{key: root / value for key, value in inputs.items()}}


def distinct_features(feats: torch.Tensor) -> None:
    """(N, F) features of N distinct images: every dimension varies and no two rows coincide."""
    feats = feats.double()
    spread, scale = feats.std(0), feats.mean(0).abs().mean()  # (F,), the features' typical size
    assert torch.isfinite(feats).all()
    assert (spread > 1e-3 * scale).double().mean() > 0.9, "most feature dimensions are constant over distinct images"
    assert spread.mean() > 0.1 * scale, f"features barely vary: spread {spread.mean():.3g} at size {scale:.3g}"
    gaps = torch.cdist(feats, feats).fill_diagonal_(float("inf"))
    assert gaps.min() > 1e-3 * feats.norm(dim=1).mean(), "two distinct images got the same features"


def test_the_command_prints_every_file_it_writes_with_its_hash(written):
    assert len(written["lines"]) == 10
    for line in written["lines"]:
        path, digest = line.rsplit("  ", 1)
        assert sha256_file(path)[:12] == digest
    names = {Path(line.rsplit("  ", 1)[0]).name for line in written["lines"]}
    assert {UNIXGEN_CONFIG, UNIXGEN_CHECKPOINT, CHEXNET_FILE, "pytorch_model.bin", "vocab.txt"} <= names


def test_unixgen_standin_installs_through_the_vqgan_stage_and_its_ids_vary(written, tmp_path):
    from raygen.stages.vqgan import VqganParams
    from raygen.training.vqgan import install_pretrained

    folder = written["unixgen_vqgan"]
    ckpt = torch.load(folder / UNIXGEN_CHECKPOINT, map_location="cpu", weights_only=False)
    assert {"epoch", "global_step", "optimizer_states", "hyper_parameters", "callbacks"} <= set(ckpt)
    (callback,) = ckpt["callbacks"]
    assert callback.__module__ == "pytorch_lightning.callbacks.model_checkpoint"  # a Lightning class, as 1.0.8 saved
    assert any(k.startswith("loss.discriminator.") for k in ckpt["state_dict"])
    with pytest.raises(pickle.UnpicklingError):
        torch.load(folder / UNIXGEN_CHECKPOINT, weights_only=True)
    params = load_section(PARAMS, "vqgan", VqganParams, PROFILE)
    model, _ = install_pretrained(folder / UNIXGEN_CONFIG, folder / UNIXGEN_CHECKPOINT, tmp_path / "out", params)
    assert (tmp_path / "out" / "model.ckpt").is_file()
    size = params.resolution
    images = smooth_images(8, size, torch.Generator().manual_seed(11), params.in_channels) * 2 - 1
    ids = model.encode_ids(images)  # (8, h*w)
    assert ids.shape == (8, model.config.num_tokens)
    assert len(ids.unique()) >= 8, f"token ids collapse: {ids.unique().tolist()}"
    assert min(len(row.unique()) for row in ids) >= 3 and len({tuple(row.tolist()) for row in ids}) == 8


def test_unixgen_standin_is_deterministic_per_seed(tmp_path):
    vqgan = section_dict(read_params(PARAMS), "vqgan", PROFILE)
    runs = {"a": 0, "b": 0, "c": 1}  # folder: seed
    digests = [[sha256_file(p) for p in write_unixgen(tmp_path / name, vqgan, seed)] for name, seed in runs.items()]
    assert digests[0] == digests[1] and digests[0][1] != digests[2][1]


def demo_reports(seeds: range) -> list[str]:
    from raygen.data.demo import reports, tables

    texts = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        findings = tables.sample_findings(rng, 0.3, {})
        texts.append(reports.make_report(rng, findings, ("AP",), erect=False).text)
    return texts


def test_cxr_bert_standin_loads_as_the_hub_snapshot_and_tokenises_demo_reports_without_unk(written):
    from raygen.models.text_encoder import text_encoder_from_params
    from raygen.stages.embed_text import EmbedTextParams

    folder = written["cxr_bert"]
    assert not (folder / "tokenizer.json").exists() and (folder / "pytorch_model.bin").is_file()
    assert (folder / "vocab.txt").read_text().splitlines()[:5] == SPECIAL_TOKENS
    params = load_section(PARAMS, "embed_text", EmbedTextParams, PROFILE)
    assert params.source == "cxr-bert"
    enc = text_encoder_from_params(params, torch.device("cpu"), cxr_bert_dir=folder)
    assert enc.identity["model_class"] == "CXRBertModel" and enc.dim == 64
    # The weights in the file are the weights in use (not a silent fresh init of renamed keys).
    saved = torch.load(folder / "pytorch_model.bin", weights_only=True)
    for key, value in enc.model.state_dict().items():
        assert torch.equal(value, saved[f"bert.{key}"]), key
    texts = demo_reports(range(1000, 1060))  # seeds the vocabulary was not built from
    ids = enc.tokenizer(texts)["input_ids"]
    assert all(row[0] == 2 and row[-1] == 3 for row in ids)
    assert sum(i == enc.tokenizer.unk_token_id for row in ids for i in row) == 0
    prompts = ["Small left pleural effusion.", "No acute cardiopulmonary process.", "Moderate cardiomegaly."]
    out = enc.encode(prompts)
    assert out.unk_count.tolist() == [0, 0, 0] and out.states.shape == (3, params.max_length, 64)
    assert (out.states[0, 1] - out.states[1, 1]).abs().mean() > 0.1  # different words, different states


def test_chexnet_standin_has_the_2017_layout_and_a_backbone_whose_features_differ(written):
    from raygen.models.classifier import build_classifier

    path = written["chexnet"] / CHEXNET_FILE
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    assert {"epoch", "state_dict", "best_loss", "optimizer"} <= set(ckpt)
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in state
    assert state["module.densenet121.classifier.0.weight"].shape == (14, 1024)
    assert not any(k.endswith("num_batches_tracked") for k in state)  # saved by torch 0.3
    resolution = section_dict(read_params(PARAMS), "train_classifier", PROFILE)["resolution"]
    model = build_classifier(in_channels=3, init="chexnet", weights=path).eval()
    images = smooth_images(16, resolution, torch.Generator().manual_seed(12), 3) * 2 - 1
    with torch.no_grad():
        distinct_features(model.penultimate(images))


def test_xrv_standin_is_a_pickled_module_that_loads_without_torchxrayvision(written):
    from raygen.metrics.xrv import XRV_WEIGHTS, xrv_densenet_extractor

    path = written["torchxrayvision"] / XRV_WEIGHTS["densenet121-res224-chex"]
    assert "torchxrayvision" not in sys.modules
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # a whole pickled nn.Module, as xrv's release files
    extractor = xrv_densenet_extractor(path=path)
    assert "torchxrayvision" not in sys.modules
    distinct_features(extractor(smooth_images(16, 64, torch.Generator().manual_seed(13))))
