"""embed_text stage and its cache: dedupe, padding, null prompt, reader API, the stage's main()."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_text_encoder import SENTENCE, write_tiny_bert

from raygen.data.text_cache import TextCache, canonical_text, read_prompts, unique_prompts, write_text_cache
from raygen.models.text_encoder import TextEncoderError, build_text_encoder
from raygen.stages import embed_text

L = 16
STUDIES = [10, 11, 12, 13, 14, 15, 16]
TEXTS = [
    SENTENCE,
    "Small left pleural effusion.",
    "No  acute cardiopulmonary\nprocess. ",  # same text up to whitespace: shares row 0
    "",  # empty: dropped
    "   ",  # whitespace only: dropped
    " ".join(["moderate right pleural effusion with atelectasis"] * 4),  # 24 words: truncated at L=16
    "Mild cardiomegaly.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return build_text_encoder("local", model_dir=tiny_dir, max_length=L, normalize="standardize")


@pytest.fixture()
def cache(tmp_path, encoder) -> TextCache:
    encoder.texts_encoded = 0
    stats = write_text_cache(tmp_path / "cache", STUDIES, TEXTS, encoder, batch_size=2, meta={"encoder": "tiny"})
    assert (stats.studies, stats.unique_texts, stats.duplicate_texts, stats.empty_texts) == (5, 4, 1, 2)
    assert stats.truncated == 1
    return TextCache(tmp_path / "cache")


def test_unique_prompts_dedupes_and_drops_empty():
    texts, rows, dropped = unique_prompts([1, 2, 3, 4, 1], ["a  b", "a b", "", "c", "a b"])
    assert texts == ["a b", "c"] and rows == {1: 0, 2: 0, 4: 1} and dropped == [3]
    assert canonical_text(float("nan")) == "" and canonical_text(None) == ""
    with pytest.raises(ValueError, match="two different texts"):
        unique_prompts([1, 1], ["a", "b"])


def test_identical_texts_encoded_once_plus_null(cache, encoder):
    assert encoder.texts_encoded == 4 + 1  # 4 unique texts, then the null prompt
    rows = cache.rows_for([10, 12])
    assert rows[0] == rows[1]
    assert len(cache) == 4 and cache.states.shape == (4, L, 32) and cache.states.dtype == np.float16


def test_cache_reads_equal_what_was_encoded(cache, encoder):
    unique = [SENTENCE, "Small left pleural effusion.", TEXTS[5], "Mild cardiomegaly."]
    direct = encoder.encode(unique)  # (4, L, D) fp32, padded to L in one batch
    rows = cache.rows_for([10, 11, 15, 16])
    states, pad_mask, lengths = cache.get(rows)
    assert states.dtype == torch.float16 and pad_mask.dtype == torch.bool
    assert lengths.tolist() == direct.lengths.tolist() == [8, 7, 16, 5]
    torch.testing.assert_close(states.float(), direct.states, atol=5e-3, rtol=2e-3)  # fp16 storage
    # pad_mask: True = padding; padded positions are exactly zero.
    assert torch.equal(pad_mask, torch.arange(L)[None, :] >= lengths[:, None])
    assert torch.all(states[pad_mask] == 0) and torch.all(states[~pad_mask].abs().sum(-1) > 0)


def test_null_prompt_present(cache, encoder):
    assert cache.null_length == 2 and cache.null_states.shape == (L, 32)
    want = encoder.encode([""]).states[0]
    torch.testing.assert_close(torch.from_numpy(cache.null_states).float(), want, atol=5e-3, rtol=2e-3)
    null = cache.get_null(3, dtype=torch.float32)
    assert null.states.shape == (3, L, 32) and null.states.dtype == torch.float32
    assert null.pad_mask[:, :2].logical_not().all() and null.pad_mask[:, 2:].all()
    assert torch.all(null.states[:, 2:] == 0)


def test_index_meta_and_reader_errors(cache):
    index = pd.read_csv(cache.dir / "index.csv")
    assert list(index.columns) == ["study_id", "row"] and index["study_id"].tolist() == [10, 11, 12, 15, 16]
    assert cache.meta["dropped_study_ids"] == [13, 14] and cache.meta["stats"]["truncated"] == 1
    assert cache.meta["token_lengths"]["max"] == 2 + 24 and cache.meta["encoder"] == "tiny"
    assert np.load(cache.dir / "lengths.npy").dtype == np.int32
    with pytest.raises(KeyError, match="13"):
        cache.rows_for([10, 13])
    with pytest.raises(IndexError, match="get_null"):
        cache.get([-1])
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers reopen the memmap
    assert np.array_equal(clone.states[1], cache.states[1])


def test_unk_dominated_corpus_is_an_error(tmp_path, encoder):
    with pytest.raises(ValueError, match="UNK"):
        write_text_cache(tmp_path / "c", [1, 2], ["zebra giraffe okapi", "quokka wombat"], encoder)
    assert not (tmp_path / "c" / "meta.json").exists()


def write_manifests(folder: Path) -> tuple[Path, Path]:
    gen = pd.DataFrame(
        {
            "dicom_id": [f"d{i}" for i in range(5)],
            "subject_id": [1, 2, 3, 4, 5],
            "study_id": STUDIES[:5],
            "split": "train",
            "view": "PA",
            "path": "x.jpg",
            "text": TEXTS[:5],
        }
    )
    fid = pd.DataFrame(
        {
            "dicom_id": ["f1", "f2"],
            "subject_id": [8, 9],
            "study_id": STUDIES[5:],
            "split": "fid",
            "view": "AP",
            "path": "y.jpg",
            "text": TEXTS[5:],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    gen.to_csv(folder / "generator.csv", index=False)
    fid.to_csv(folder / "fid.csv", index=False)
    return folder / "generator.csv", folder / "fid.csv"


def write_params(path: Path, section: dict) -> Path:
    path.write_text(
        json.dumps(
            {"profile": "smoke", "embed_text": section, "profiles": {"smoke": {"embed_text": {"batch_size": 3}}}}
        )
    )
    return path


def test_stage_main_writes_the_cache(tmp_path, tiny_dir):
    gen, fid = write_manifests(tmp_path / "cohort")
    params = write_params(tmp_path / "params.yaml", {"source": "local", "max_length": L, "normalize": "l2"})
    out, log = tmp_path / "embed_text", tmp_path / "logs" / "embed_text.log"
    rc = embed_text.main(
        [
            "--prompts",
            str(gen),
            str(fid),
            "--out",
            str(out),
            "--params",
            str(params),
            "--log",
            str(log),
            "--model-dir",
            str(tiny_dir),
        ]
    )
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"states.npy", "lengths.npy", "index.csv", "null.npy", "meta.json"}
    cache = TextCache(out)
    assert cache.meta["params"]["batch_size"] == 3 and cache.meta["normalize"] == "l2"
    assert cache.meta["encoder"]["source"] == "local" and cache.meta["profile"] == "smoke"
    states, pad_mask, lengths = cache.get(cache.rows_for([10, 16]), dtype=torch.float32)
    norms = states.norm(dim=-1)  # l2: unit vectors at real tokens, zeros at padding
    torch.testing.assert_close(norms[~pad_mask], torch.ones(int((~pad_mask).sum())), atol=2e-3, rtol=0)
    assert torch.all(norms[pad_mask] == 0)
    text = log.read_text()
    assert "5 studies -> 4 unique texts" in text and "truncated" in text


def test_stage_local_source_needs_model_dir(tmp_path):
    gen, _ = write_manifests(tmp_path / "cohort")
    params = write_params(tmp_path / "params.yaml", {"source": "local"})
    with pytest.raises(TextEncoderError, match="--model-dir"):
        embed_text.main(["--prompts", str(gen), "--out", str(tmp_path / "o"), "--params", str(params)])


def test_stage_rejects_unknown_params_and_bad_manifest(tmp_path):
    from raygen.config import ConfigError

    gen, _ = write_manifests(tmp_path / "cohort")
    with pytest.raises(ConfigError, match="embed_text.layers"):
        embed_text.main(
            [
                "--prompts",
                str(gen),
                "--out",
                str(tmp_path / "o"),
                "--params",
                str(write_params(tmp_path / "p.yaml", {"layers": 3})),
            ]
        )
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"study_id": [1], "impression": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="text"):
        read_prompts([bad])
