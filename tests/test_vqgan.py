"""VQ-GAN: taming-exact loading, pixel conventions, reconstruction metrics, the ``vqgan`` stage."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from standins import DDCONFIG, LPIPS_LOSS, write_taming  # UniXGen-shaped taming files (one writer)

import raygen.stages.vqgan as stage
import raygen.training.vqgan as training
from raygen.data.images import (
    load_preprocessed,
    preprocess,
    signed_to_uint8,
    signed_to_unit,
    uint8_to_signed,
    unit_to_signed,
    unit_to_uint8,
)
from raygen.metrics import reconstruction as rm
from raygen.metrics.features import densenet121_extractor, find_densenet121_weights
from raygen.metrics.fid import frechet_distance
from raygen.metrics.image_similarity import ssim
from raygen.models.taming_config import VQGANConfig, taming_yaml
from raygen.models.vqgan import CheckpointMismatchError, build_vqgan, load_taming


@pytest.fixture()
def no_lpips(monkeypatch):
    """Any attempt to build taming's loss or LPIPS fails the test."""
    from taming.modules.losses import lpips, vqperceptual

    def boom(*args, **kwargs):
        raise AssertionError("the taming loss / LPIPS must never be instantiated")

    monkeypatch.setattr(lpips.LPIPS, "__init__", boom)
    monkeypatch.setattr(vqperceptual.VQLPIPSWithDiscriminator, "__init__", boom)


@pytest.mark.parametrize("attn", [[7], [16]], ids=["attn-matches-no-level", "attn-at-16px"])
def test_load_taming_reproduces_taming_bit_exactly(tmp_path, attn, no_lpips, caplog):
    ref, cfg, ckpt = write_taming(tmp_path, {**DDCONFIG, "attn_resolutions": attn})
    with caplog.at_level(logging.WARNING):
        vq = load_taming(cfg, ckpt)
    assert "weights_only=False" in caplog.text and "trusted" in caplog.text
    assert ("encoder.down.0.attn.0.q.weight" in vq.state_dict()) == (attn == [16])
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ids = vq.encode_ids(x)
    with torch.no_grad():
        _, _, (_, _, ref_ids) = ref.quantize(ref.quant_conv(ref.encoder(x)))
        ref_ids = ref_ids.view(3, -1)
        z_q = ref.quantize.get_codebook_entry(ref_ids.reshape(-1), (3, 8, 8, 4))
        ref_pixels = ref.decoder(ref.post_quant_conv(z_q))
    assert ids.shape == (3, 64) and ids.dtype == torch.int64
    assert len(ids.unique()) > 3  # a real test: the ids vary
    assert torch.equal(ids, ref_ids)
    assert torch.equal(vq.decode_ids_raw(ids), ref_pixels)
    decoded = vq.decode_ids(ids)
    assert torch.equal(decoded, ref_pixels.clamp(-1, 1)) and decoded.shape == (3, 3, 16, 16)


def test_load_taming_rejects_missing_and_extra_keys(tmp_path, no_lpips):
    _, cfg, ckpt = write_taming(tmp_path)
    full = torch.load(ckpt, weights_only=False)
    del full["state_dict"]["decoder.conv_out.bias"]
    full["state_dict"]["encoder.invented.weight"] = torch.zeros(1)
    torch.save(full, ckpt)
    with pytest.raises(CheckpointMismatchError) as err:
        load_taming(cfg, ckpt)
    assert "decoder.conv_out.bias" in str(err.value) and "encoder.invented.weight" in str(err.value)


def test_load_taming_rejects_a_config_that_does_not_match(tmp_path, no_lpips):
    _, cfg, ckpt = write_taming(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["model"]["params"]["n_embed"] = 64
    raw["model"]["params"]["ddconfig"]["attn_resolutions"] = [8]  # invents attention layers
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(CheckpointMismatchError) as err:
        load_taming(cfg, ckpt)
    message = str(err.value)
    assert "quantize.embedding.weight" in message and "shape mismatch" in message
    assert "decoder.up.1.attn.0.q.weight" in message


def test_plain_checkpoints_load_with_weights_only(tmp_path, caplog):
    config = VQGANConfig(
        embed_dim=4,
        n_embed=8,
        z_channels=4,
        resolution=16,
        in_channels=1,
        out_ch=1,
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
    )
    vq = build_vqgan(config)
    torch.save({"state_dict": vq.state_dict(), "step": 3}, tmp_path / "model.ckpt")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(taming_yaml(vq.config, LPIPS_LOSS, 1e-4)))
    with caplog.at_level(logging.WARNING):
        loaded = load_taming(tmp_path / "config.yaml", tmp_path / "model.ckpt")
    assert "weights_only=False" not in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(vq.state_dict().values(), loaded.state_dict().values()))


# --------------------------------------------------------------------------------------------
# pixel conventions and preprocessing


def test_pixel_conversions_cover_their_ranges_and_round_trip():
    u8 = torch.arange(256, dtype=torch.uint8)
    signed = uint8_to_signed(u8)
    assert signed.min() == -1 and signed.max() == 1 and signed.dtype == torch.float32
    assert torch.equal(signed_to_uint8(signed), u8)
    unit = signed_to_unit(torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0]))
    assert unit.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert unit_to_signed(torch.tensor([-0.5, 0.0, 0.5, 1.5])).tolist() == [-1.0, -1.0, 0.0, 1.0]
    assert unit_to_uint8(torch.tensor([-0.1, 0.0, 0.5, 1.0, 1.2])).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(TypeError):
        uint8_to_signed(torch.zeros(2))


def test_preprocess_resizes_shortest_side_centre_crops_and_never_flips():
    # 20 x 40 horizontal ramp: after the resize (20 -> 10) the crop keeps input columns 10..29.
    ramp = np.tile((np.arange(40) * 6).astype(np.uint8), (20, 1))
    x = preprocess(Image.fromarray(ramp), resolution=10, channels=3)
    assert x.shape == (3, 10, 10) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    row = signed_to_unit(x[0, 5]) * 255 / 6  # back to input column numbers
    assert torch.all(row[1:] > row[:-1])  # left stays left: no flip
    assert abs(row[0].item() - 10.5) < 1.0 and abs(row[-1].item() - 28.5) < 1.0
    tall = preprocess(np.zeros((40, 20), dtype=np.uint8) + 255, resolution=8, channels=1)
    assert tall.shape == (1, 8, 8) and torch.allclose(tall, torch.ones_like(tall))


@pytest.mark.parametrize(
    "h, w, r", [(400, 330, 128), (330, 400, 64), (128, 128, 128), (37, 52, 32), (64, 200, 128), (300, 301, 299)]
)
def test_resize_and_crop_equal_torchvisions_bit_for_bit(h, w, r):
    import torchvision.transforms.functional as TF  # the reference the stages no longer import (~3 s)

    from raygen.data.images import center_crop, resize_short_side

    x = torch.rand(1, h, w, generator=torch.Generator().manual_seed(h * w))
    ref = TF.center_crop(TF.resize(x, r, interpolation=TF.InterpolationMode.BILINEAR, antialias=True), [r, r])
    assert torch.equal(center_crop(resize_short_side(x, r), r), ref)


@pytest.mark.parametrize("n, c, columns", [(5, 3, 2), (8, 1, 8), (3, 3, 5), (7, 1, 3)])
def test_tile_lays_out_like_torchvisions_make_grid(n, c, columns):
    from torchvision.utils import make_grid

    from raygen.data.images import tile

    x = torch.rand(n, c, 6, 9, generator=torch.Generator().manual_seed(n))
    ref = make_grid(x, nrow=columns, padding=2, pad_value=1.0)  # 1-channel input comes back as 3 equal channels
    assert torch.equal(tile(x, columns), ref[:c])


def test_unreadable_file_raises_on_load(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8not a jpeg")
    with pytest.raises(Exception):  # noqa: B017 (PIL's error type varies by version)
        load_preprocessed(bad, 8, 1)


# --------------------------------------------------------------------------------------------
# reconstruction metrics


def test_psnr_ssim_and_codebook_usage():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g)
    y = (x + 0.1).clamp(0, 1)
    noisy = (x + 0.05 * torch.randn(2, 1, 32, 32, generator=g)).clamp(0, 1)
    mse = (x - y).pow(2).flatten(1).mean(1).double()
    assert torch.allclose(rm.psnr(x, y), 10 * torch.log10(1 / mse))
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert (ssim(noisy, x) < 0.99).all() and (ssim(noisy, x) > 0).all()
    uniform = rm.codebook_usage(torch.arange(16).repeat(3), n_embed=32)
    assert uniform.used == 16 and uniform.used_fraction == 0.5 and abs(uniform.perplexity - 16) < 1e-9
    assert abs(rm.codebook_usage(torch.zeros(10, dtype=torch.long), 32).perplexity - 1) < 1e-9


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=1e-6)


@pytest.mark.slow  # builds a full DenseNet-121
def test_densenet_extractor_is_named_and_loads_legacy_keys(tmp_path):
    import torchvision

    state = torchvision.models.densenet121(weights=None).state_dict()
    # torchvision's released file: old names (norm.1, conv.2), no num_batches_tracked buffers
    legacy = {
        k.replace("norm1", "norm.1").replace("conv2", "conv.2"): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "densenet121-test.pth"
    torch.save(legacy, path)
    extractor = densenet121_extractor(path)
    assert extractor.name.startswith("torchvision-densenet121:densenet121-test.pth:")
    feats = extractor(torch.rand(2, 1, 40, 40))
    assert feats.shape == (2, 1024) and torch.isfinite(feats).all()
    with pytest.raises(FileNotFoundError, match="DenseNet-121"):
        find_densenet121_weights(tmp_path / "absent.pth")


@pytest.mark.slow  # builds VGG-16 twice
def test_lpips_builds_from_local_files_only(tmp_path):
    import torchvision
    from taming.modules.losses import lpips as tl

    from raygen.models.discriminator import build_lpips, lpips_unavailable

    assert "vgg.pth" in lpips_unavailable(tmp_path)
    features = torchvision.models.vgg16(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, tmp_path / "vgg16-397923af.pth")
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(lins, tmp_path / "vgg.pth")
    model = build_lpips(tmp_path)
    assert isinstance(model, tl.LPIPS)
    assert torch.equal(model.net.slice1[0].weight, features["0.weight"])
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert model(x, x).abs().max() < 1e-6 and (model(x, y) > 0).all()


# --------------------------------------------------------------------------------------------
# the stage


def make_cohort(root, n_train=10, n_val=4, corrupt=1, size=(24, 20)):
    """Tiny grey JPGs in the MIMIC layout + generator.csv; the first ``corrupt`` train files are garbage."""
    jpg_root = root / "jpg"
    rows, rng = [], np.random.default_rng(0)
    for i in range(n_train + n_val):
        rel = f"files/p10/p100000{i:02d}/s500000{i:02d}/d{i:03d}.jpg"
        (jpg_root / rel).parent.mkdir(parents=True, exist_ok=True)
        if i < corrupt:
            (jpg_root / rel).write_bytes(b"\xff\xd8\xff garbage")
        else:
            yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
            img = 120 + 60 * np.sin(xx / (2 + i % 3)) + rng.normal(0, 10, size)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(jpg_root / rel, quality=95)
        rows.append(
            {
                "dicom_id": f"d{i:03d}",
                "subject_id": 10000000 + i,
                "study_id": 50000000 + i,
                "split": "train" if i < n_train else "val",
                "view": "PA",
                "path": rel,
                "text": "no acute process",
            }
        )
    manifest = root / "generator.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, jpg_root


TINY = {
    "source": "train",
    "resolution": 32,  # the smallest a classifier (DenseNet-121: 32 px) can share with it
    "ch_mult": [1, 2],
    "z_channels": 4,
    "embed_dim": 4,
    "n_embed": 16,
    "steps": 4,
    "batch_size": 2,
    "disc_start": 2,
    "disc_ndf": 8,
    "disc_layers": 1,
    "eval_images": 4,
    "grid_images": 2,
    "checkpoint_every": 2,
    "log_every": 1,
    "dead_code_every": 2,
    "workers": 0,
    "lr": 1e-3,
}


# params.yaml values that match the checkpoint write_taming() makes (a pretrained model must match them)
AS_WRITTEN = {"source": "pretrained", "in_channels": 3, "n_embed": 32}


def write_params(path, **overrides):
    # The classifier may not be larger than the synthetic images (check-params' cross-stage rule).
    classifier = {"resolution": 32}
    path.write_text(yaml.safe_dump({"profile": "demo", "vqgan": {**TINY, **overrides}, "train_classifier": classifier}))
    return path


def run_stage(tmp_path, out, params, *extra):
    manifest, jpg_root = make_cohort(tmp_path)
    argv = [
        "--manifest",
        str(manifest),
        "--jpg-root",
        str(jpg_root),
        "--out",
        str(out),
        "--params",
        str(params),
        "--log",
        str(tmp_path / "vqgan.log"),
        *extra,
    ]
    assert stage.main(argv) == 0
    return out


def test_stage_trains_saves_taming_format_and_reports(tmp_path, no_lpips):
    out = run_stage(tmp_path, tmp_path / "out", write_params(tmp_path / "params.yaml"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"] == "train" and metrics["train_steps"] == 4
    assert metrics["unreadable_train"] == 1 and metrics["train_images"] == 9 and metrics["eval_images"] == 4
    assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 0
    assert 1 <= metrics["codebook_perplexity"] <= 16 and 0 < metrics["codebook_used_fraction"] <= 1
    assert metrics["fid"] is None and metrics["fid_extractor"].startswith("unavailable:")
    assert metrics["perceptual_loss"].startswith("off:")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["target"] == "taming.models.vqgan.VQModel"
    assert config["model"]["params"]["lossconfig"]["params"]["perceptual_weight"] == 0.0
    ckpt = torch.load(out / "model.ckpt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["config"]["n_embed"] == 16
    assert not any(k.startswith("loss.") for k in ckpt["state_dict"])
    vq = load_taming(out / "config.yaml", out / "model.ckpt")
    assert vq.encode_ids(torch.zeros(1, 1, 16, 16)).shape == (1, 64)
    grid = Image.open(out / "reconstructions.png")
    assert grid.size[0] > 2 * 16
    losses = pd.read_csv(out / "losses.csv")
    assert list(losses["step"]) == [1, 2, 3, 4] and losses["d_loss"].notna().sum() == 2
    assert not (out / training.STATE_FILE).exists()


@pytest.mark.slow  # three stage runs
def test_stage_resumes_after_a_kill_to_the_same_weights(tmp_path, monkeypatch, no_lpips):
    params = write_params(tmp_path / "params.yaml")
    straight = run_stage(tmp_path, tmp_path / "straight", params)
    real_step = training.train_step

    def killed_at_step_3(trainer, *args, **kwargs):
        if trainer.step == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_step(trainer, *args, **kwargs)

    monkeypatch.setattr(training, "train_step", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, tmp_path / "resumed", params)
    assert torch.load(tmp_path / "resumed" / training.STATE_FILE, weights_only=True)["step"] == 2
    monkeypatch.setattr(training, "train_step", real_step)
    run_stage(tmp_path, tmp_path / "resumed", params)
    assert "resuming training" in (tmp_path / "vqgan.log").read_text()
    a = torch.load(straight / "model.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage_installs_a_pretrained_checkpoint(tmp_path, no_lpips):
    ref, cfg, ckpt = write_taming(tmp_path, {**DDCONFIG, "resolution": TINY["resolution"]})
    params = write_params(tmp_path / "params.yaml", **AS_WRITTEN)
    out = run_stage(tmp_path, tmp_path / "out", params, "--pretrained-config", str(cfg), "--pretrained-ckpt", str(ckpt))
    saved = torch.load(out / "model.ckpt", weights_only=True)  # plain: no pickled Lightning objects
    assert set(saved["state_dict"]) == set(ref.state_dict())
    assert (out / "config.yaml").read_text() == cfg.read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"] == "pretrained" and metrics["eval_images"] == 4 and metrics["grid"] == [16, 16]


def test_stage_names_a_missing_pretrained_file_and_where_to_get_it(tmp_path):
    params = write_params(tmp_path / "params.yaml", source="pretrained")
    with pytest.raises(FileNotFoundError, match="UniXGen") as err:
        run_stage(
            tmp_path,
            tmp_path / "out",
            params,
            "--pretrained-config",
            str(tmp_path / "nope.yaml"),
            "--pretrained-ckpt",
            str(tmp_path / "last.ckpt"),
        )
    assert "nope.yaml" in str(err.value)


def test_a_perceptual_weight_without_the_lpips_files_is_an_error_not_a_silent_fallback(tmp_path, no_lpips):
    from raygen.errors import MissingFileError

    manifest, jpg_root = make_cohort(tmp_path)
    params = write_params(tmp_path / "params.yaml", perceptual_weight=1.0)
    argv = [
        "--manifest",
        str(manifest),
        "--jpg-root",
        str(jpg_root),
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(params),
        "--lpips-dir",
        str(tmp_path / "lpips"),
    ]
    with pytest.raises(
        MissingFileError, match=r"perceptual_weight is 1.0 .*README.md\) or set vqgan.perceptual_weight: 0"
    ):
        stage.main(argv)
    assert not (tmp_path / "out" / "model.ckpt").exists()


def test_a_pretrained_model_of_another_size_than_params_say_is_refused(tmp_path, no_lpips):
    from raygen.config import ConfigError

    _, cfg, ckpt = write_taming(tmp_path)
    params = write_params(tmp_path / "params.yaml", **{**AS_WRITTEN, "resolution": TINY["resolution"] * 2})
    with pytest.raises(ConfigError, match=r"disagree with the pretrained model's config \(resolution: params"):
        run_stage(tmp_path, tmp_path / "out", params, "--pretrained-config", str(cfg), "--pretrained-ckpt", str(ckpt))
    assert not (tmp_path / "out" / "model.ckpt").exists()


def pack_tiny_pinned_weights(tmp_path, trained_vqgan):
    """weights/demo as `raygen demo-weights` packs it, from a tiny trained VQ-GAN and a random classifier."""
    from dataclasses import asdict

    from raygen.checkpoint import save_checkpoint
    from raygen.models.classifier import ClassifierConfig, XrayDenseNet
    from raygen.tools.demo_weights import pack

    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results" / "vqgan").symlink_to(trained_vqgan)
    network = XrayDenseNet(ClassifierConfig())
    save_checkpoint(
        work / "results/train_classifier/real/model.ckpt",
        {"model": network.state_dict(), "classifier": asdict(network.config), "config": {"params": {"resolution": 32}}},
    )
    pack(work, tmp_path / "pinned")
    return tmp_path / "pinned"


def test_stage_installs_the_pinned_demo_vqgan_as_packed_and_checks_its_hash(tmp_path, no_lpips):
    from raygen.models import pinned
    from raygen.models.pinned import PinnedHashError

    trained = run_stage(tmp_path, tmp_path / "trained", write_params(tmp_path / "params.yaml"))
    folder = pack_tiny_pinned_weights(tmp_path, trained)
    packed = set(pinned.FILES) - {pinned.DECODER}  # pack() packs the two parts trained before the decoder
    assert sorted((folder / pinned.SUMS).read_text().split()[1::2]) == sorted(packed)
    params = write_params(tmp_path / "demo.yaml", source="demo")
    out = run_stage(tmp_path, tmp_path / "out", params, "--demo-weights", str(folder))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"] == "demo" and metrics["pretrained"]["checkpoint"]["file"].endswith(pinned.VQGAN_CHECKPOINT)
    sha = pinned.sha256_file(folder / pinned.FID_NETWORK)[:12]
    assert metrics["fid_extractor"] == f"raygen-demo-densenet121:{sha}" and metrics["fid"] >= 0
    # The installed model is the trained one in fp16: the same weights up to that rounding.
    a = torch.load(trained / "model.ckpt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k].half().to(b[k].dtype), b[k]) for k in a)

    with (folder / pinned.VQGAN_CHECKPOINT).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(PinnedHashError, match=r"last.ckpt: sha256 .*`raygen demo-weights"):
        run_stage(tmp_path, tmp_path / "refused", params, "--demo-weights", str(folder))
    assert not (tmp_path / "refused" / "model.ckpt").exists()
