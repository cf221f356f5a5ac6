"""Random stand-ins of the paper's four pretrained parts, written in their authors' file formats.

    python tests/standins.py [--params params.yaml] [--profile rehearsal] [--root .] [--seed 0]

writes into the params' ``inputs:`` folders under ``--root`` (the ``rehearsal`` profile runs the paper's
code paths on them; the tests build smaller ones with the same writers):

``unixgen_vqgan``  ``project.yaml`` + ``last.ckpt``: UniXGen's taming VQ-GAN. The yaml is taming's
                   project config (UniXGen's ``2021-12-17T08-58-54-project.yaml``, renamed as the folder's
                   README says) with the architecture of the profile's ``vqgan`` section; the checkpoint is
                   a PyTorch Lightning 1.0 file (taming's pin): ``state_dict`` with the taming module names
                   plus ``loss.*`` tensors, ``callbacks`` keyed by Lightning's ``ModelCheckpoint`` class,
                   ``optimizer_states``, pickled ``hyper_parameters``.
``cxr_bert``       the hub snapshot of ``microsoft/BiomedVLP-CXR-BERT-specialized``: ``config.json`` as the
                   hub's (``auto_map`` to the two code files, ``torch_dtype``, ``transformers_version``),
                   ``configuration_cxrbert.py``, ``modeling_cxrbert.py`` (a ``BertForMaskedLM`` subclass with
                   a projection head), ``vocab.txt``, ``tokenizer_config.json`` (no tokenizer.json) and
                   ``pytorch_model.bin``. Its WordPiece vocabulary covers every word of the demo reports.
``chexnet``        ``model.pth.tar`` of arnoweng/CheXNet: a torch 0.3 file (legacy serialisation, storages
                   tagged ``cuda:0``) holding ``epoch`` / ``state_dict`` / ``best_loss`` / ``optimizer``; the
                   state dict has DataParallel ``module.densenet121.`` keys, the old ``norm.1`` / ``conv.1``
                   names, no ``num_batches_tracked`` (added in torch 0.4.1) and a ``classifier.0.`` 14-way head.
``torchxrayvision``  ``chex-densenet121-...-best.pt`` (``densenet121-res224-chex``): the whole pickled
                   ``nn.Module`` of torchxrayvision's 2019 release, its classes in ``torchxrayvision.models``.

The weights are random but behave like networks: the DenseNets' BatchNorm statistics are calibrated on
smooth random images in their input conventions (CheXNet's at the profile's ``train_classifier.resolution``,
xrv's at 224 px), and the VQ-GAN's codebook is drawn from the statistics
of its encoder's outputs, so different images give different features and different token ids (a
network that maps every image to one vector would hide a broken metric: AUROC 0.5, FID 0). Everything
is deterministic for a given ``--seed`` (calibrated values are rounded to bfloat16 precision so that a
different thread count cannot change a byte).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import inspect
import io
import json
import pickle
import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # raygen, when run as a script

from raygen.config import read_params, resolve_profile, scientific_section, section_dict  # noqa: E402
from raygen.io import sha256_file  # noqa: E402

CHEXNET_FILE = "model.pth.tar"  # arnoweng/CheXNet's file name (workflow/rules/common.smk CHEXNET_FILE)
UNIXGEN_CONFIG = "project.yaml"  # UniXGen's 2021-12-17T08-58-54-project.yaml, renamed (weights/unixgen-vqgan)
UNIXGEN_CHECKPOINT = "last.ckpt"


# --------------------------------------------------------------------------------------------
# Shared: smooth images, BatchNorm calibration, classes pickled under a foreign module name


def smooth_images(n: int, size: int, generator: torch.Generator, channels: int = 1, cells: int = 6) -> torch.Tensor:
    """(n, channels, size, size) float32 in [0, 1]: bicubic-upsampled ``cells`` x ``cells`` noise, each
    image stretched to [0, 1]; grey, replicated over ``channels`` (as UniXGen and CheXNet see X-rays)."""
    low = torch.rand(n, 1, cells, cells, generator=generator)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    x = x - x.amin(dim=(2, 3), keepdim=True)
    x = x / x.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return x.expand(-1, channels, -1, -1).contiguous()


def round_bf16_(tensor: torch.Tensor) -> torch.Tensor:
    """Round floats in place to bfloat16 precision (kept in their dtype): summation order (threads)
    changes the last bits of a calibrated value, not its bfloat16 rounding."""
    with torch.no_grad():
        return tensor.copy_(tensor.to(torch.bfloat16).to(tensor.dtype))


def calibrate_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to the average over ``batches`` (train-mode forward
    passes with ``momentum=None``), then return ``net`` in eval mode. Untouched statistics (mean 0,
    var 1) let a deep random DenseNet map every image to nearly one feature vector. The statistics are
    computed in float64 and rounded to bfloat16 precision, so they do not depend on the thread count."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    net.double().train()  # float64 sums: another thread count cannot move a statistic across a rounding step
    with torch.no_grad():
        for batch in batches:
            net(batch.double())
    net.float()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        round_bf16_(m.running_mean)
        round_bf16_(m.running_var)
    return net.eval()


@contextlib.contextmanager
def importable_as(module_name: str, classes: dict[str, type]) -> Iterator[dict[str, type]]:
    """Subclasses of ``classes`` (name -> base) that pickle as ``module_name.<name>``, for as long as the
    context lasts; the module (and its parents) is registered in ``sys.modules`` only meanwhile, so a
    file can name a package that is not installed (torchxrayvision) or not yet imported (Lightning)."""
    made = {name: type(name, (base,), {"__module__": module_name}) for name, base in classes.items()}
    names = [".".join(module_name.split(".")[: i + 1]) for i in range(module_name.count(".") + 1)]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    for name, cls in made.items():
        setattr(sys.modules[module_name], name, cls)
    try:
        yield made
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# --------------------------------------------------------------------------------------------
# UniXGen's taming VQ-GAN: project.yaml + Lightning last.ckpt

# A tiny taming config for the tests: ch 32 is the least GroupNorm(32) allows; 16 px, f=2 -> 8x8 tokens.
DDCONFIG = dict(
    double_z=False,
    z_channels=8,
    resolution=16,
    in_channels=3,
    out_ch=3,
    ch=32,
    ch_mult=[1, 2],
    num_res_blocks=1,
    attn_resolutions=[7],
    dropout=0.0,
)
LPIPS_LOSS = {
    "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
    "params": {"disc_start": 10, "perceptual_weight": 1.0},
}


class TamingReference(nn.Module):
    """taming's VQModel minus Lightning and loss: the modules VQModel builds, under its names."""

    def __init__(self, dd: dict, n_embed: int, embed_dim: int) -> None:
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        super().__init__()
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the z shape
            self.encoder, self.decoder = Encoder(**dd), Decoder(**dd)
        self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(dd["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, dd["z_channels"], 1)


def taming_ddconfig(vqgan: dict) -> dict:
    """The taming ``ddconfig`` of a params ``vqgan`` section (what the vqgan stage checks against)."""
    return dict(
        double_z=False,
        z_channels=int(vqgan["z_channels"]),
        resolution=int(vqgan["resolution"]),
        in_channels=int(vqgan["in_channels"]),
        out_ch=int(vqgan["in_channels"]),
        ch=int(vqgan["ch"]),
        ch_mult=[int(m) for m in vqgan["ch_mult"]],
        num_res_blocks=int(vqgan["num_res_blocks"]),
        attn_resolutions=[int(r) for r in vqgan["attn_resolutions"]],
        dropout=float(vqgan["dropout"]),
    )


def spread_codebook(ref: TamingReference, dd: dict, generator: torch.Generator) -> None:
    """Draw the codebook from a normal with the per-dimension mean / std of the encoder's outputs on
    smooth images, so nearest codes (token ids) vary from image to image and across an image."""
    images = smooth_images(8, dd["resolution"], generator, dd["in_channels"]).double() * 2 - 1
    with torch.no_grad():
        z = ref.double().quant_conv(ref.encoder(images))  # (B, E, h, w); float64 as calibrate_batchnorm
        ref.float()
        z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*h*w, E)
        noise = torch.randn(ref.quantize.n_e, z.shape[1], generator=generator).double()
        ref.quantize.embedding.weight.copy_(round_bf16_(z.mean(0) + z.std(0) * noise))


def taming_loss_state(in_channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``loss.*`` tensors under the names a VQLPIPSWithDiscriminator gives them: LPIPS' scaling layer and
    linear heads, the first VGG conv and taming's PatchGAN discriminator (3 layers). The loaders drop
    them unread, so the sizes are cut: ndf 16 instead of 64, 2 of VGG's 26 tensors (the real ones add
    69 MB)."""
    from taming.modules.discriminator.model import NLayerDiscriminator

    with torch.random.fork_rng(devices=[]):
        disc = NLayerDiscriminator(input_nc=in_channels, n_layers=3, ndf=16)  # its shapes, not its init
    state = {f"loss.discriminator.{k}": torch.zeros_like(v) for k, v in disc.state_dict().items()}
    for v in state.values():
        if v.is_floating_point():
            v.normal_(0, 0.02, generator=generator)
    state["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    state["loss.perceptual_loss.scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3, generator=generator)
    state["loss.perceptual_loss.net.slice1.0.bias"] = torch.randn(64, generator=generator)
    for i, width in enumerate((64, 128, 256, 512, 512)):
        state[f"loss.perceptual_loss.lin{i}.model.1.weight"] = torch.rand(1, width, 1, 1, generator=generator)
    return state


def lightning_checkpoint(state: dict[str, torch.Tensor], model: nn.Module, model_checkpoint: type) -> dict:
    """The dict PyTorch Lightning 1.0.8 (taming's pin) saves as last.ckpt around ``state``; its
    ``callbacks`` are keyed by the callback's class (``model_checkpoint``), so the file names a class of
    Lightning's."""
    first = next(model.parameters())
    group = {"lr": 4.5e-6, "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False}
    adam = {  # Adam's state is shown for the first tensor only
        "state": {0: {"step": 100, "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
        "param_groups": [{**group, "params": list(range(len(list(model.parameters()))))}],
    }
    return {
        "epoch": 3,
        "global_step": 100,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {
            model_checkpoint: {
                "monitor": "val/rec_loss",
                "best_model_score": torch.tensor(0.0421),
                "best_model_path": "logs/2021-12-17T08-58-54_custom_vqgan/checkpoints/epoch=000003.ckpt",
                "current_score": torch.tensor(0.0421),
                "dirpath": "logs/2021-12-17T08-58-54_custom_vqgan/checkpoints",
            }
        },
        "optimizer_states": [adam, {"state": {}, "param_groups": [{**group, "params": []}]}],
        "lr_schedulers": [],
        "state_dict": state,
        "hparams_name": "kwargs",
        "hyper_parameters": argparse.Namespace(lr=4.5e-6),  # pickled: refused by weights_only=True
    }


def save_lightning(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """torch.save of :func:`lightning_checkpoint`, Lightning's ModelCheckpoint named but not imported."""
    with importable_as("pytorch_lightning.callbacks.model_checkpoint", {"ModelCheckpoint": object}) as fake:
        torch.save(lightning_checkpoint(state, model, fake["ModelCheckpoint"]), path)


def write_taming(
    folder: Path,
    dd: dict = DDCONFIG,
    n_embed: int = 32,
    embed_dim: int = 4,
    seed: int = 0,
    lossconfig: dict = LPIPS_LOSS,
) -> tuple[TamingReference, Path, Path]:
    """UniXGen's two files in ``folder``: a Lightning-style last.ckpt (with loss.* keys, callbacks and
    pickled hparams) + its taming project.yaml. Returns (the reference model in eval mode, yaml, ckpt)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = TamingReference(dd, n_embed, embed_dim)
    spread_codebook(ref, dd, generator)
    state = {**ref.state_dict(), **taming_loss_state(dd["in_channels"], generator)}
    ckpt = folder / UNIXGEN_CHECKPOINT
    save_lightning(state, ref, ckpt)
    project = {
        "model": {
            "base_learning_rate": 4.5e-6,
            "target": "taming.models.vqgan.VQModel",
            "params": {"embed_dim": embed_dim, "n_embed": n_embed, "ddconfig": dd, "lossconfig": lossconfig},
        },
        "data": {  # taming's main.py data module (never read by RayGen)
            "target": "main.DataModuleFromConfig",
            "params": {
                "batch_size": 4,
                "num_workers": 8,
                "train": {"target": "taming.data.custom.CustomTrain", "params": {"size": dd["resolution"]}},
                "validation": {"target": "taming.data.custom.CustomTest", "params": {"size": dd["resolution"]}},
            },
        },
    }
    cfg = folder / UNIXGEN_CONFIG
    cfg.write_text(yaml.safe_dump(project, sort_keys=False))
    return ref.eval(), cfg, ckpt


def write_unixgen(folder: Path, vqgan: dict, seed: int) -> list[Path]:
    """UniXGen's VQ-GAN at the architecture of the params ``vqgan`` section (the stage checks it)."""
    dd = taming_ddconfig(vqgan)
    lossconfig = {
        "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
        "params": {
            "disc_conditional": False,
            "disc_in_channels": dd["in_channels"],
            "disc_start": 30001,
            "disc_weight": 0.8,
            "codebook_weight": 1.0,
        },
    }
    _, cfg, ckpt = write_taming(folder, dd, int(vqgan["n_embed"]), int(vqgan["embed_dim"]), seed, lossconfig)
    return [cfg, ckpt]


# --------------------------------------------------------------------------------------------
# CXR-BERT: the hub snapshot folder

CXR_CONFIG_PY = """
from transformers import BertConfig


class CXRBertConfig(BertConfig):
    model_type = "cxr-bert"

    def __init__(self, projection_size=128, **kwargs):
        super().__init__(**kwargs)
        self.projection_size = projection_size
"""

CXR_MODEL_PY = """
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from transformers import BertForMaskedLM
from transformers.modeling_outputs import ModelOutput

from .configuration_cxrbert import CXRBertConfig


@dataclass
class CXRBertOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor = None
    logits: Optional[torch.FloatTensor] = None
    cls_projected_embedding: Optional[torch.FloatTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor]] = None


class BertProjectionHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense_to_hidden = nn.Linear(config.hidden_size, config.projection_size)
        self.LayerNorm = nn.LayerNorm(config.projection_size, eps=1e-12)
        self.dense_to_output = nn.Linear(config.projection_size, config.projection_size)

    def forward(self, x):
        return self.dense_to_output(self.LayerNorm(nn.functional.gelu(self.dense_to_hidden(x))))


class CXRBertModel(BertForMaskedLM):
    config_class = CXRBertConfig

    def __init__(self, config):
        super().__init__(config)
        self.cls_projection_head = BertProjectionHead(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None,
                output_cls_projected_embedding=None, return_dict=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, output_hidden_states=True, return_dict=True)
        last = out.hidden_states[-1]
        cls = self.cls_projection_head(last[:, 0]) if output_cls_projected_embedding else None
        return CXRBertOutput(last_hidden_state=last, logits=out.logits, cls_projected_embedding=cls)
"""

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, as CXR-BERT's vocabulary
# The rehearsal's CXR-BERT: BERT-base's layout at a CPU size (the real one: 768-d, 12 layers, 12 heads).
REHEARSAL_BERT = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, max_position_embeddings=512
)
# config.json keys of the hub snapshot that no size changes (BERT's, with CXR-BERT's 0.25 dropouts).
HUB_CONFIG = {
    "architectures": ["CXRBertModel"],
    "attention_probs_dropout_prob": 0.25,
    "auto_map": {"AutoConfig": "configuration_cxrbert.CXRBertConfig", "AutoModel": "modeling_cxrbert.CXRBertModel"},
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.25,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "model_type": "cxr-bert",
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.17.0",
    "type_vocab_size": 2,
    "use_cache": True,
}


def write_vocab(folder: Path, vocab: list[str], model_max_length: int = 64) -> None:
    """vocab.txt (id = line number) and the tokenizer_config.json of a BERT tokenizer (uncased)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": model_max_length})
    )


def _string_constants(obj: object, seen: set[int]) -> Iterator[str]:
    """Every str in a module's values, containers, functions and their code objects (f-string parts too)."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _string_constants(key, seen)
            yield from _string_constants(value, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _string_constants(item, seen)
    elif isinstance(obj, types.CodeType):
        yield from _string_constants(obj.co_consts, seen)
    elif inspect.isfunction(obj):
        yield from _string_constants(obj.__code__, seen)


def demo_report_words() -> list[str]:
    """The words (BERT-normalised: lower case, accents stripped, punctuation split off) of the demo report
    generator's sentences and of 300 rendered demo reports, sorted."""
    import numpy as np
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    from raygen.data.demo import findings, reports, tables

    texts = [
        s
        for module in (reports, findings, tables)
        for name, value in vars(module).items()
        if not name.startswith("__") and getattr(value, "__module__", module.__name__) == module.__name__
        for s in _string_constants(value, set())
    ]
    for seed in range(300):
        rng = np.random.default_rng(seed)
        found = tables.sample_findings(rng, 0.3, {})
        views = ("AP",) if rng.random() < 0.6 else ("PA", "LATERAL")
        texts.append(reports.make_report(rng, found, views, erect=bool(rng.random() < 0.7)).text)
    normalizer, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    return sorted({word for text in texts for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))})


def wordpiece_vocab(words: list[str]) -> list[str]:
    """CXR-BERT's special tokens, ``words``, then every character (and its ``##`` continuation) of the
    words, ASCII letters, digits and punctuation: any text of those characters tokenises without [UNK]."""
    import string

    chars = sorted({c for w in words for c in w} | set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = [*SPECIAL_TOKENS, *words, *chars, *(f"##{c}" for c in chars)]
    return list(dict.fromkeys(vocab))  # first occurrence wins: ids stay line numbers


def write_cxr_bert(
    folder: Path,
    vocab: list[str],
    size: dict,
    seed: int = 0,
    projection_size: int = 128,
    weights: str = "safetensors",
) -> Path:
    """A folder laid out like the CXR-BERT hub snapshot (custom code through ``auto_map``, vocab.txt and
    tokenizer_config.json, no tokenizer.json), random weights of ``size`` (hidden_size, num_hidden_layers,
    num_attention_heads, intermediate_size, max_position_embeddings). ``weights``: ``safetensors``
    (save_pretrained's file) or ``bin`` (the hub's pytorch_model.bin, saved as transformers 4.17 did)."""
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    write_vocab(folder, vocab, int(size["max_position_embeddings"]))
    config = {**HUB_CONFIG, **size, "projection_size": projection_size, "vocab_size": len(vocab)}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "configuration_cxrbert.py").write_text(CXR_CONFIG_PY)
    (folder / "modeling_cxrbert.py").write_text(CXR_MODEL_PY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(
            AutoConfig.from_pretrained(folder, trust_remote_code=True), trust_remote_code=True
        )
    model.save_pretrained(folder)
    # The hub's files as their authors wrote them, not as this transformers re-serialises them.
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "configuration_cxrbert.py").write_text(CXR_CONFIG_PY)
    (folder / "modeling_cxrbert.py").write_text(CXR_MODEL_PY)
    if weights == "bin":
        state = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
        positions = int(size["max_position_embeddings"])
        state["bert.embeddings.position_ids"] = torch.arange(positions).expand((1, -1))  # a saved buffer in 4.17
        state.setdefault("cls.predictions.decoder.bias", state["cls.predictions.bias"])
        torch.save(state, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    elif weights != "safetensors":
        raise ValueError(f"weights must be 'safetensors' or 'bin', not {weights!r}")
    return folder


def write_cxr_bert_standin(folder: Path, seed: int) -> list[Path]:
    """The rehearsal's CXR-BERT snapshot; returns its files."""
    folder = Path(folder)
    for stale in ("model.safetensors", "tokenizer.json", "special_tokens_map.json"):
        (folder / stale).unlink(missing_ok=True)
    write_cxr_bert(folder, wordpiece_vocab(demo_report_words()), REHEARSAL_BERT, seed, weights="bin")
    names = ("config.json", "configuration_cxrbert.py", "modeling_cxrbert.py", "pytorch_model.bin")
    return [folder / name for name in (*names, "tokenizer_config.json", "vocab.txt")]


# --------------------------------------------------------------------------------------------
# CheXNet: arnoweng/CheXNet model.pth.tar


def to_chexnet_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision keys -> CheXNet's: DataParallel prefix, densenet121 wrapper, ``norm.1`` names, Sequential head."""
    out = {}
    for key, value in state.items():
        for old in ("norm", "relu", "conv"):
            for i in ("1", "2"):
                if ".denselayer" in key:
                    key = key.replace(f".{old}{i}.", f".{old}.{i}.")
        key = key.replace("classifier.", "classifier.0.")
        out[f"module.densenet121.{key}"] = value
    return out


def chexnet_network(seed: int, resolution: int) -> nn.Module:
    """torchvision DenseNet-121, 14-way head, BatchNorm calibrated on ImageNet-normalised grey images
    replicated to RGB at ``resolution`` (CheXNet's input convention)."""
    import torchvision

    from raygen.models.classifier import IMAGENET_MEAN, IMAGENET_STD

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.densenet121(weights=None, num_classes=14)
    generator = torch.Generator().manual_seed(seed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    batches = [(smooth_images(8, resolution, generator, 3) - mean) / std for _ in range(2)]
    return calibrate_batchnorm(net, batches)


def save_legacy(obj: object, path: Path, location: str = "cpu") -> Path:
    """Write ``obj`` as ``torch.save(obj, path, _use_new_zipfile_serialization=False)`` does (the format
    of torch < 1.6; torch.serialization._legacy_save), with two differences: storages are keyed 0, 1, ...
    in the order they are pickled, not by memory address (so the bytes are reproducible), and every
    storage is tagged ``location`` (``cuda:0``: saved from a GPU). Module classes are recorded without
    their source code, as torch does when it cannot read it."""
    from torch.serialization import INT_SIZE, LONG_SIZE, MAGIC_NUMBER, PROTOCOL_VERSION, SHORT_SIZE

    storages: dict[int, tuple[str, torch.UntypedStorage, torch.dtype]] = {}  # by _cdata: (key, storage, dtype)
    classes: set[type] = set()

    class LegacyPickler(pickle.Pickler):
        def persistent_id(self, item: object) -> tuple | None:
            if isinstance(item, type) and issubclass(item, nn.Module):
                if item in classes:
                    return None
                classes.add(item)
                return ("module", item, None, None)
            if isinstance(item, torch.storage.TypedStorage):
                untyped = item._untyped_storage
                key, _, _ = storages.setdefault(untyped._cdata, (str(len(storages)), untyped, item.dtype))
                return ("storage", getattr(torch, item._pickle_storage_type()), key, location, item._size(), None)
            return None

    sys_info = {
        "protocol_version": PROTOCOL_VERSION,
        "little_endian": sys.byteorder == "little",
        "type_sizes": {"short": SHORT_SIZE, "int": INT_SIZE, "long": LONG_SIZE},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, sys_info):
            pickle.dump(header, f, protocol=2)
        LegacyPickler(f, protocol=2).dump(obj)
        pickle.dump([key for key, _, _ in storages.values()], f, protocol=2)
        f.flush()
        for _, storage, dtype in storages.values():
            storage._write_file(f, True, True, torch._utils._element_size(dtype))
    return path


def write_chexnet(path: Path, net: nn.Module) -> Path:
    """``net`` as arnoweng/CheXNet's model.pth.tar (torch 0.3: legacy format, storages on cuda:0, no
    ``num_batches_tracked``; an Adam optimizer state, shown for its first tensor only)."""
    layout = to_chexnet_layout(net.state_dict())
    state = collections.OrderedDict((k, v) for k, v in layout.items() if not k.endswith("num_batches_tracked"))
    first = next(iter(state.values()))
    optimizer = {
        "state": {0: {"step": 4000, "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
        "param_groups": [
            {
                "lr": 1e-4,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 1e-5,
                "params": list(range(len(list(net.parameters())))),
            }
        ],
    }
    checkpoint = {"epoch": 7, "state_dict": state, "best_loss": 0.1528, "optimizer": optimizer}
    return save_legacy(checkpoint, path, location="cuda:0")


# --------------------------------------------------------------------------------------------
# torchxrayvision: densenet121-res224-chex, the whole pickled model

# fmt: off
XRV_PATHOLOGIES = [  # xrv.datasets.default_pathologies: the 18 outputs of its DenseNets
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
    "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
]
# fmt: on
XRV_CLASSES = {
    "DenseNet": nn.Module,
    "_DenseBlock": nn.ModuleDict,
    "_DenseLayer": nn.Module,
    "_Transition": nn.Sequential,
}


def xrv_network(seed: int) -> nn.Module:
    """torchvision DenseNet-121 in xrv's layout (1-channel stem, 18 outputs), BatchNorm calibrated on
    smooth grey 224 x 224 images in xrv's [-1024, 1024] convention."""
    import torchvision

    from raygen.metrics.xrv import XRV_RESOLUTION, unit_to_xrv

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.densenet121(weights=None, num_classes=len(XRV_PATHOLOGIES))
        net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.features.conv0.weight)
    generator = torch.Generator().manual_seed(seed)
    batches = [unit_to_xrv(smooth_images(4, XRV_RESOLUTION, generator)) for _ in range(2)]
    return calibrate_batchnorm(net, batches)


def save_xrv_release(net: nn.Module, path: Path) -> Path:
    """A copy of ``net`` (a torchvision DenseNet) pickled whole as torchxrayvision's GitHub release files
    are: its DenseNet classes named ``torchxrayvision.models.*``, the 2019-era (non-zip) format; loading
    it needs torchxrayvision, or a stand-in for that module."""
    net = copy.deepcopy(net)
    with importable_as("torchxrayvision.models", XRV_CLASSES) as fake:
        for module in net.modules():
            name = type(module).__name__
            if type(module).__module__.startswith("torchvision") and name in fake:
                module.__class__ = fake[name]
        net.pathologies = list(XRV_PATHOLOGIES)  # plain attributes of xrv's DenseNet
        net.drop_rate = 0
        return save_legacy(net, path)


# --------------------------------------------------------------------------------------------
# The command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (its inputs: folders)")
    parser.add_argument("--profile", default="rehearsal", help="profile whose vqgan / train_classifier sizes to use")
    parser.add_argument("--root", type=Path, default=Path("."), help="the inputs: folders are relative to this")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    from raygen.metrics.xrv import XRV_WEIGHTS

    args = build_parser().parse_args(argv)
    raw = read_params(args.params)
    profile = resolve_profile(raw, args.profile)
    folders = {key: args.root / value for key, value in scientific_section(raw, "inputs", profile).items()}
    classifier = section_dict(raw, "train_classifier", profile)
    written = write_unixgen(folders["unixgen_vqgan"], section_dict(raw, "vqgan", profile), args.seed)
    written += write_cxr_bert_standin(folders["cxr_bert"], args.seed + 1)
    chexnet = chexnet_network(args.seed + 2, int(classifier.get("resolution", 224)))
    written.append(write_chexnet(folders["chexnet"] / CHEXNET_FILE, chexnet))
    xrv_file = folders["torchxrayvision"] / XRV_WEIGHTS["densenet121-res224-chex"]
    written.append(save_xrv_release(xrv_network(args.seed + 3), xrv_file))
    for path in written:
        print(f"{path}  {sha256_file(path)[:12]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
