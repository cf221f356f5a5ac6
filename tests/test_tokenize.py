"""The ``tokenize`` stage: union of manifests, exact ids, unreadable images, pickle import."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import raygen.stages.tokenize as stage
from raygen.data.datasets import CohortImages, read_manifests
from raygen.data.images import load_preprocessed
from raygen.models.taming_config import VQGANConfig, taming_yaml
from raygen.models.vqgan import build_vqgan, load_taming

CONFIG = VQGANConfig(  # 8x8 tokens
    embed_dim=4,
    n_embed=16,
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


@pytest.fixture()
def vqgan_dir(tmp_path):
    """A random-weight VQ-GAN saved as the vqgan stage saves it."""
    torch.manual_seed(0)
    vq = build_vqgan(CONFIG)
    with torch.no_grad():  # codes drawn from encoder outputs, so that images use many of them
        z = vq.quant_conv(vq.encoder(torch.rand(4, 1, 16, 16) * 2 - 1)).permute(0, 2, 3, 1).reshape(-1, 4)
        vq.quantize.embedding.weight.copy_(z[torch.randperm(len(z))[:16]])
    folder = tmp_path / "vqgan"
    folder.mkdir()
    torch.save({"state_dict": vq.state_dict(), "step": 0}, folder / "model.ckpt")
    lossconfig = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator", "params": {"disc_start": 1}}
    (folder / "config.yaml").write_text(yaml.safe_dump(taming_yaml(CONFIG, lossconfig, 1e-4)))
    return folder


@pytest.fixture()
def cohort(tmp_path):
    """10 unique images over 3 overlapping manifests; d008 is not a JPEG."""
    jpg_root = tmp_path / "jpg"
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(10):
        rel = f"files/p10/p100000{i:02d}/s5000{i:04d}/d{i:03d}.jpg"
        (jpg_root / rel).parent.mkdir(parents=True, exist_ok=True)
        if i == 8:
            (jpg_root / rel).write_bytes(b"\xff\xd8\xff\xe0 truncated")
        else:
            Image.fromarray(rng.integers(0, 256, (30 + i, 24), dtype=np.uint8)).save(jpg_root / rel)
        paths[f"d{i:03d}"] = rel

    def manifest(name, ids, split):
        rows = [
            {"dicom_id": d, "subject_id": 1, "study_id": 2, "split": split, "view": "PA", "path": paths[d]} for d in ids
        ]
        pd.DataFrame(rows).to_csv(tmp_path / name, index=False)
        return tmp_path / name

    manifests = [
        manifest("generator.csv", [f"d{i:03d}" for i in range(6)], "train"),
        manifest("fid.csv", ["d004", "d005", "d006", "d007"], "fid"),
        manifest("classifier.csv", ["d008", "d009", "d000"], "test"),
    ]
    return manifests, jpg_root


def write_params(path, **overrides):
    path.write_text(yaml.safe_dump({"tokenize": {"batch_size": 4, "workers": 1, **overrides}}))
    return path


def run(tmp_path, vqgan_dir, manifests, *extra):
    argv = [
        "--vqgan",
        str(vqgan_dir),
        "--manifests",
        *map(str, manifests),
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(write_params(tmp_path / "params.yaml")),
        "--log",
        str(tmp_path / "tokenize.log"),
        *extra,
    ]
    assert stage.main(argv) == 0
    return tmp_path / "out"


def test_tokenize_encodes_the_union_exactly_and_counts_unreadable(tmp_path, vqgan_dir, cohort):
    manifests, jpg_root = cohort
    out = run(tmp_path, vqgan_dir, manifests, "--jpg-root", str(jpg_root))
    tokens = np.load(out / "tokens.npy", mmap_mode="r")
    index = pd.read_csv(out / "index.csv", dtype={"dicom_id": str})
    meta = json.loads((out / "meta.json").read_text())
    expected_ids = [f"d{i:03d}" for i in (0, 1, 2, 3, 4, 5, 6, 7, 9)]  # manifest order, d008 unreadable
    assert index["dicom_id"].tolist() == expected_ids and index["row"].tolist() == list(range(9))
    assert tokens.dtype == np.int16 and tokens.shape == (9, 64)
    assert meta["n_unreadable"] == 1 and meta["unreadable_ids"] == ["d008"] and meta["n_manifest_images"] == 10
    assert meta["grid"] == [8, 8] and meta["codebook_size"] == 16 and meta["resolution"] == 16
    assert len(meta["vqgan"]["checkpoint_sha256"]) == 64
    vq = load_taming(vqgan_dir / "config.yaml", vqgan_dir / "model.ckpt")
    for row, dicom in enumerate(expected_ids):
        i = int(dicom[1:])
        x = load_preprocessed(jpg_root / f"files/p10/p100000{i:02d}/s5000{i:04d}/{dicom}.jpg", 16, 1)
        assert np.array_equal(tokens[row], vq.encode_ids(x[None])[0].numpy())
    assert len(np.unique(tokens)) > 3
    assert "1 skipped" in (tmp_path / "tokenize.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["index.csv", "meta.json", "tokens.npy"]


def test_tokenize_imports_a_pickle_and_validates_it(tmp_path, vqgan_dir, cohort):
    manifests, _ = cohort
    rng = np.random.default_rng(1)
    table = {f"d{i:03d}": rng.integers(0, 16, 64).tolist() for i in range(10) if i != 3}
    table["files/p10/p10000009/s50000009/d009.jpg"] = table.pop("d009")  # path keys map to their stem
    pkl = tmp_path / "codebook_indices.pickle"
    pkl.write_bytes(pickle.dumps(table))
    out = run(tmp_path, vqgan_dir, manifests, "--import-pickle", str(pkl))
    tokens = np.load(out / "tokens.npy")
    index = pd.read_csv(out / "index.csv", dtype={"dicom_id": str})
    meta = json.loads((out / "meta.json").read_text())
    assert meta["unreadable_ids"] == ["d003"] and meta["source"].startswith("pickle:")
    assert tokens.dtype == np.int16 and tokens.shape == (9, 64)
    assert tokens[index["dicom_id"].tolist().index("d009")].tolist() == table["files/p10/p10000009/s50000009/d009.jpg"]
    assert tokens[0].tolist() == table["d000"]

    table["d000"] = table["d000"][:10]
    pkl.write_bytes(pickle.dumps(table))
    with pytest.raises(ValueError, match="d000 \\(10\\)"):
        run(tmp_path, vqgan_dir, manifests, "--import-pickle", str(pkl))
    table["d000"] = [16] * 64  # id == codebook size: out of range
    pkl.write_bytes(pickle.dumps(table))
    with pytest.raises(ValueError, match="outside \\[0, 16\\).*d000"):
        run(tmp_path, vqgan_dir, manifests, "--import-pickle", str(pkl))


def test_read_manifests_unions_unique_ids_and_dataset_flags_unreadable(cohort):
    manifests, jpg_root = cohort
    frame = read_manifests(manifests)
    assert frame["dicom_id"].tolist() == [f"d{i:03d}" for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)]
    assert read_manifests(manifests, split="fid")["dicom_id"].tolist() == ["d004", "d005", "d006", "d007"]
    dataset = CohortImages(frame, jpg_root, resolution=8, channels=3)
    bad, good = dataset[8], dataset[0]
    assert not bad.ok and torch.equal(bad.pixels, torch.zeros(3, 8, 8))
    assert good.ok and good.pixels.shape == (3, 8, 8) and -1 <= good.pixels.min() and good.pixels.max() <= 1
