"""Text encoder: offline loading of the three sources, tokenizer sanity, per-token normalisation.

The BERT folders are built here with tiny configs (hidden 32, 2 layers) and a hand-written
vocabulary, so expected token ids are known. CXR-BERT's loading path runs on a tiny folder that
mimics the hub snapshot: config.json with ``auto_map`` to ``configuration_cxrbert.CXRBertConfig`` /
``modeling_cxrbert.CXRBertModel`` (a ``BertForMaskedLM`` subclass with a CLS projection head, as
in hi-ml-multimodal), vocab.txt + tokenizer_config.json; loaded with ``trust_remote_code=True``. Its
writer is tests/standins.py's, which also writes the rehearsal profile's CXR-BERT stand-in.
The real weights are only exercised by the ``weights`` test (RAYGEN_WEIGHTS_DIR/cxr-bert).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from standins import write_cxr_bert, write_vocab  # the CXR-BERT hub snapshot layout (one writer)

from raygen.models.text_encoder import (
    CXR_BERT_HUB_ID,
    CXR_BERT_REVISION,
    TextEncoder,
    TextEncoderError,
    build_text_encoder,
    cxr_bert_dir,
    normalize_tokens,
    resolve_model_dir,
    verify_tokenizer,
)

# Ids are line numbers: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, as in CXR-BERT's vocabulary.
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "no",
    "acute",
    "cardio",
    "##pulmonary",
    "process",
    ".",
    "left",
    "right",
    "pleural",
    "effusion",
    "small",
    "large",
    "the",
    "heart",
    "size",
    "is",
    "normal",
    ",",
    "moderate",
    "mild",
    "cardiomegaly",
    "pneumothorax",
    "and",
    "with",
    "atelectasis",
]
SENTENCE = "No acute cardiopulmonary process."
SENTENCE_IDS = [2, 5, 6, 7, 8, 9, 10, 3]
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    vocab_size=len(VOCAB),
)


def write_tiny_bert(folder: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random BertModel folder (config.json, model.safetensors, tokenizer files)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    write_vocab(folder, VOCAB)
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)  # adds tokenizer.json
    torch.manual_seed(seed)
    BertModel(BertConfig(**{**TINY, **overrides})).save_pretrained(folder)
    return folder


def write_tiny_cxr_bert(folder: Path, seed: int = 0) -> Path:
    """A tiny folder laid out like the CXR-BERT hub snapshot (custom code, vocab.txt, no tokenizer.json)."""
    size = {k: v for k, v in TINY.items() if k != "vocab_size"}
    return write_cxr_bert(folder, VOCAB, size, seed, projection_size=8)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> TextEncoder:
    return build_text_encoder("local", model_dir=tiny_dir, max_length=16, normalize="standardize")


def test_known_sentence_tokenises_to_expected_ids(tiny):
    assert tiny.tokenizer(SENTENCE)["input_ids"] == SENTENCE_IDS
    assert tiny.tokenizer("")["input_ids"] == [2, 3]  # the null prompt: [CLS] [SEP]


def test_v5_vocab_file_trap_is_detected(tiny_dir, tiny):
    from transformers import BertTokenizerFast

    trapped = BertTokenizerFast(vocab_file=str(tiny_dir / "vocab.txt"))
    ids = trapped(SENTENCE, add_special_tokens=False)["input_ids"]
    if sum(i == trapped.unk_token_id for i in ids) > len(ids) / 2:  # the v5 behaviour
        with pytest.raises(TextEncoderError, match="v5"):
            verify_tokenizer(trapped)
        with pytest.raises(TextEncoderError):
            TextEncoder(tiny.model, trapped, max_length=16)
    else:  # a transformers that builds it properly must pass
        verify_tokenizer(trapped)


def test_vocabulary_without_words_fails_at_load(tmp_path):
    folder = write_tiny_bert(tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    write_vocab(folder, VOCAB[:5])  # only the special tokens: every word would be [UNK]
    with pytest.raises(TextEncoderError, match="no plain words"):
        build_text_encoder("local", model_dir=folder)


def test_folder_loads_offline_and_is_frozen(tiny_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = build_text_encoder("local", model_dir=tiny_dir, max_length=16)
    assert not enc.model.training
    assert not any(p.requires_grad for p in enc.model.parameters())
    out = enc.encode([SENTENCE, "left pleural effusion"])
    assert out.states.shape == (2, 16, 32) and out.states.dtype == torch.float32
    assert out.lengths.tolist() == [8, 5]
    assert enc.identity["source"] == "local" and len(enc.identity["weights_sha256"]) == 64


def test_padding_zeroed_and_tokens_normalised_independently(tiny):
    texts = [SENTENCE, "small left pleural effusion and mild cardiomegaly", "normal"]
    out = tiny.encode(texts)  # (3, 16, 32)
    for row, n in enumerate(out.lengths.tolist()):
        assert torch.all(out.states[row, n:] == 0)
        real = out.states[row, :n]
        torch.testing.assert_close(real.mean(-1), torch.zeros(n), atol=1e-5, rtol=0)
        torch.testing.assert_close(real.std(-1, unbiased=False), torch.ones(n), atol=1e-4, rtol=0)
    # Per-token normalisation: a text's states do not depend on how much padding it got.
    alone = tiny.encode([texts[2]], pad_to_max=False)
    assert alone.states.shape[1] == 3
    torch.testing.assert_close(alone.states[0], out.states[2, :3], atol=1e-4, rtol=1e-4)


def test_normalize_tokens_modes_ignore_padding_values():
    x = torch.randn(2, 5, 8) * 3 + 1
    lengths = torch.tensor([5, 2])
    x_noisy = x.clone()
    x_noisy[1, 2:] = 1e4  # garbage in the padding must not leak into real tokens
    for mode in ("none", "l2", "standardize"):
        a, b = normalize_tokens(x, lengths, mode), normalize_tokens(x_noisy, lengths, mode)
        torch.testing.assert_close(a, b)
        assert torch.all(a[1, 2:] == 0)
    l2 = normalize_tokens(x, lengths, "l2")
    torch.testing.assert_close(l2[0].norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(normalize_tokens(x, lengths, "none")[0], x[0])
    with pytest.raises(ValueError):
        normalize_tokens(x, lengths, "layer")


def test_long_text_is_truncated_and_flagged(tiny):
    long = " ".join(["left pleural effusion"] * 10)  # 30 words + 2 specials > 16
    out = tiny.encode([long, "normal"])
    assert out.truncated.tolist() == [True, False]
    assert out.lengths.tolist() == [16, 3]
    assert tiny.tokenizer(long, truncation=True, max_length=16)["input_ids"][-1] == 3  # still ends in [SEP]


def test_unknown_words_are_counted(tiny):
    out = tiny.encode(["zebra left effusion"])
    assert out.unk_count.tolist() == [1]


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(TextEncoderError, match="model folder not found"):
        build_text_encoder("local", model_dir=tmp_path / "nowhere")
    with pytest.raises(TextEncoderError, match="needs --model-dir"):
        build_text_encoder("local")
    empty = tmp_path / "empty"
    write_vocab(empty, VOCAB)
    with pytest.raises(TextEncoderError, match="config.json.*model.safetensors"):
        build_text_encoder("local", model_dir=empty)
    with pytest.raises(TextEncoderError, match="unknown text encoder source"):
        resolve_model_dir("clip")
    with pytest.raises(TextEncoderError, match="bundled"):
        resolve_model_dir("minilm", model_dir=empty)


def test_cxr_bert_not_cached_names_the_download_command(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(TextEncoderError) as err:
        build_text_encoder("cxr-bert")
    msg = str(err.value)
    assert f"hf download {CXR_BERT_HUB_ID} --revision {CXR_BERT_REVISION}" in msg
    assert "--local-dir" in msg


def test_cxr_bert_remote_code_snapshot_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = write_tiny_cxr_bert(tmp_path / "cxr_snapshot")
    assert not (folder / "tokenizer.json").exists()  # tokenizer built from vocab.txt, like the hub snapshot
    enc = build_text_encoder("cxr-bert", model_dir=folder, max_length=12, normalize="none")
    assert enc.identity["model_class"] == "CXRBertModel"
    assert enc.tokenizer(SENTENCE)["input_ids"] == SENTENCE_IDS
    out = enc.encode([SENTENCE, "left pleural effusion"])
    # Same states as the custom model's own forward (which also runs the MLM head we skip).
    from transformers import AutoModel

    full = AutoModel.from_pretrained(folder, trust_remote_code=True, local_files_only=True).eval()
    ids = torch.tensor([SENTENCE_IDS])
    with torch.no_grad():
        want = full(input_ids=ids, attention_mask=torch.ones_like(ids), return_dict=True).last_hidden_state
    torch.testing.assert_close(out.states[0, :8], want[0], atol=1e-5, rtol=1e-5)
    assert torch.all(out.states[0, 8:] == 0)


@pytest.mark.parametrize(
    "missing, says",
    [
        ("modeling_cxrbert.py", "lacks modeling_cxrbert.py.*copy the whole hub snapshot folder"),
        ("configuration_cxrbert.py", "lacks configuration_cxrbert.py.*copy the whole hub snapshot folder"),
        ("vocab.txt", "lacks tokenizer.json or vocab.txt.*hf download"),
    ],
)
def test_a_cxr_bert_folder_without_its_code_files_is_refused(tmp_path, missing, says):
    """A copied snapshot that lost a code file must not load a module transformers cached from elsewhere."""
    build_text_encoder("cxr-bert", model_dir=write_tiny_cxr_bert(tmp_path / "first"), max_length=12)
    folder = write_tiny_cxr_bert(tmp_path / "second" / "first")  # same folder name: same cached module name
    (folder / missing).unlink()
    with pytest.raises(TextEncoderError, match=re.compile(says, re.S)):
        build_text_encoder("cxr-bert", model_dir=folder, max_length=12)


@pytest.mark.parametrize(
    "tokenizer_map",
    [["tokenization_cxrbert.CXRBertTokenizer", None], [None, "tokenization_cxrbert.CXRBertTokenizerFast"]],
)
def test_auto_map_lists_name_their_code_files_too(tmp_path, tokenizer_map):
    """A tokenizer's auto_map entry is a [slow, fast] list that may hold None: its file is checked like the rest."""
    folder = write_tiny_cxr_bert(tmp_path / "cxr")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"]["AutoTokenizer"] = tokenizer_map
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TextEncoderError, match=re.compile(r"lacks tokenization_cxrbert\.py.*hf download", re.S)):
        resolve_model_dir("cxr-bert", model_dir=folder)
    (folder / "tokenization_cxrbert.py").write_text("")
    assert resolve_model_dir("cxr-bert", model_dir=folder) == folder.resolve()


def test_cxr_bert_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    """The hub-id path with nothing downloaded: a snapshot laid out as in the HF cache is found."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / ("models--" + CXR_BERT_HUB_ID.replace("/", "--"))
    write_tiny_cxr_bert(repo / "snapshots" / CXR_BERT_REVISION)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cxr_bert_dir() == repo / "snapshots" / CXR_BERT_REVISION
    enc = build_text_encoder("cxr-bert", max_length=12)
    assert enc.identity["revision"] == CXR_BERT_REVISION
    assert enc.encode(["normal"]).states.shape == (1, 12, 32)


def test_minilm_source_for_real():
    enc = build_text_encoder("minilm", max_length=24)
    texts = [SENTENCE, "Moderate left pleural effusion with adjacent atelectasis.", "Mild cardiomegaly."]
    a, b = enc.encode(texts), enc.encode(texts)
    assert a.states.shape == (3, 24, 384)
    torch.testing.assert_close(a.states, b.states, atol=0, rtol=0)  # deterministic (eval, no dropout)
    assert enc.tokenizer(SENTENCE)["input_ids"][:3] == [101, 2053, 11325]  # [CLS] no acute (uncased vocab)
    assert int(a.unk_count.sum()) == 0
    for row, n in enumerate(a.lengths.tolist()):
        assert torch.all(a.states[row, n:] == 0) and a.states[row, :n].abs().sum() > 0
    # Different texts give different states (real weights, not a constant).
    assert not torch.allclose(a.states[0, 1], a.states[2, 1])


@pytest.mark.weights
def test_real_cxr_bert_weights():
    """Real CXR-BERT from RAYGEN_WEIGHTS_DIR/cxr-bert (a snapshot folder); skipped without it."""
    root = os.environ.get("RAYGEN_WEIGHTS_DIR")
    folder = Path(root or "") / "cxr-bert"
    if not root or not folder.is_dir():
        pytest.skip("set RAYGEN_WEIGHTS_DIR to a folder holding a cxr-bert/ snapshot")
    enc = build_text_encoder("cxr-bert", model_dir=folder, max_length=256)
    assert enc.tokenizer(SENTENCE)["input_ids"][0] == 2 and enc.dim == 768
    out = enc.encode([SENTENCE])
    assert out.states.shape == (1, 256, 768) and np.isfinite(out.states.numpy()).all()


def test_generate_says_how_many_tokens_of_a_long_prompt_were_cut(tmp_path, caplog):
    from raygen.config import load_section
    from raygen.generation.prompts import encode_prompts
    from raygen.stages.embed_text import EmbedTextParams

    folder = write_tiny_bert(tmp_path / "bert")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"embed_text": {"source": "local", "max_length": 6}}))
    meta = {"max_length": 6, "dim": TINY["hidden_size"], "params": {"source": "local", "normalize": "standardize"}}
    words = "no acute process"  # 3 tokens + [CLS], [SEP]: fits 6
    text_params = load_section(params, "embed_text", EmbedTextParams)
    with caplog.at_level("WARNING", logger="raygen.generation.prompts"):
        states, lengths = encode_prompts(
            [words, " ".join([words] * 3)], text_params, params, folder, meta, torch.device("cpu")
        )
    assert states.shape[:2] == (2, 6) and lengths.max() == 6
    cut = [r.getMessage() for r in caplog.records if "longer than the decoder's text length" in r.getMessage()]
    assert cut == ["prompt 1 is 5 tokens longer than the decoder's text length 6: its end was cut"]
