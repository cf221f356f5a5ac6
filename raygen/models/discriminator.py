"""The adversarial and perceptual parts of VQ-GAN training (taming's VQLPIPSWithDiscriminator, unbundled).

taming's loss module builds LPIPS in its constructor, and LPIPS downloads VGG-16 and its linear
layers. Here each piece stands alone: the PatchGAN discriminator (taming's NLayerDiscriminator),
the hinge loss, the adaptive generator weight, and LPIPS built only from local weight files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from taming.modules.discriminator.model import NLayerDiscriminator, weights_init

from raygen.models.releases import LPIPS_FILES

log = logging.getLogger(__name__)


def build_discriminator(in_channels: int, ndf: int, n_layers: int) -> NLayerDiscriminator:
    """taming's PatchGAN discriminator with its N(0, 0.02) initialisation; logits (B, 1, h', w')."""
    return NLayerDiscriminator(input_nc=in_channels, ndf=ndf, n_layers=n_layers).apply(weights_init)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss, 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_rec))]) (taming)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float
) -> torch.Tensor:
    """taming's balance: ||grad nll|| / (||grad g|| + 1e-4) at the decoder's last layer, clamped to
    [0, 1e4], times ``disc_weight``; a detached scalar."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


def lpips_unavailable(folder: str | Path | None) -> str | None:
    """Why a perceptual loss cannot be built from ``folder`` (None when it can)."""
    if folder is None:
        return "no --lpips-dir given"
    missing = [f"{name} ({what})" for name, what in LPIPS_FILES.items() if not (Path(folder) / name).is_file()]
    return f"missing in {folder}: {'; '.join(missing)}" if missing else None


def build_lpips(folder: str | Path) -> nn.Module:
    """taming's LPIPS (VGG-16 features + learned linear layers) loaded from local files only.

    Input: two (B, 3, H, W) images in [-1, 1]; output (B, 1, 1, 1) distances. Frozen, eval mode.
    """
    from taming.modules.losses import lpips as tl

    reason = lpips_unavailable(folder)
    if reason:
        raise FileNotFoundError(f"perceptual loss weights {reason}")
    model = tl.LPIPS.__new__(tl.LPIPS)  # bypass __init__: it would download both files
    nn.Module.__init__(model)
    model.scaling_layer = tl.ScalingLayer()
    model.chns = [64, 128, 256, 512, 512]
    model.net = tl.vgg16(pretrained=False, requires_grad=False)
    for i, chn in enumerate(model.chns):
        setattr(model, f"lin{i}", tl.NetLinLayer(chn, use_dropout=True))
    vgg = torch.load(Path(folder) / "vgg16-397923af.pth", map_location="cpu", weights_only=True)
    # taming splits torchvision's vgg16.features into slices that keep the original indices.
    net_state = {}
    for name in model.net.state_dict():
        _, index, kind = name.split(".")
        net_state[name] = vgg[f"features.{index}.{kind}"]
    model.net.load_state_dict(net_state, strict=True)
    lins = torch.load(Path(folder) / "vgg.pth", map_location="cpu", weights_only=True)
    lin_state = {k: v for k, v in lins.items() if k.startswith("lin")}
    missing = model.load_state_dict(lin_state, strict=False).missing_keys
    missing = [k for k in missing if k.startswith("lin")]
    if missing:
        raise ValueError(f"{folder}/vgg.pth lacks LPIPS keys {missing}")
    log.info("perceptual loss: LPIPS (VGG-16) from %s", folder)
    return model.eval().requires_grad_(False)
