"""Digitally reconstructed radiographs of the (edited) CT: geometry, Beer-Lambert, detector, JPG look.

Projection model. The volume's slabs perpendicular to the beam are summed into ``depth_groups``
thick groups; each group is magnified by the cone beam for its distance to the detector
(``m = SID / (SID - d)``) and sheared by the patient's rotation out of the image plane (yaw for a
frontal view, pitch = lordotic tilt), and resampled onto the detector with separable linear
interpolation matrices (two batched matmuls per image instead of a 3-D ray caster). The line
integral ``P = sum(mu * step)`` then goes through Beer-Lambert ``I = I0 * exp(-P)`` with scatter and
quantum noise, and the log image ``-log(I / I0)`` (bright = attenuating, radiograph polarity) gets a
radiograph's processing: in-plane pose, habitus scale, smooth elastic warp and inspiration depth
(a 2-D warp), unsharp masking, collimator shutters, histogram equalisation, 8 bits.

Display convention (no flips anywhere): frontal views show the patient's right on the image's left
(AP and PA alike); lateral views show the patient facing the image's left.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from raygen.data.demo.anatomy import Anatomy, bounding_box

MU_WATER_PER_MM = 0.02  # linear attenuation of water at a chest radiograph's effective energy (~0.2 / cm)
BONE_GAIN = 0.45  # extra bone attenuation: photoelectric absorption at ~60 keV beats the CT's calibration

AIR_FLOOR = 0.35  # log-attenuation below ~15 mm of water reads as unattenuated beam

FRONTAL = ("AP", "PA")
LATERAL = ("LATERAL", "LL")


@dataclasses.dataclass(frozen=True)
class ViewGeometry:
    """Everything random about one radiograph. Lengths in mm, angles in degrees.

    Attributes:
        view: ViewPosition (AP, PA, LATERAL, LL).
        height, width: JPG size in pixels (Rows, Columns).
        sid_mm: source-to-detector distance (AP portable ~1 m, PA / lateral ~1.8 m).
        yaw_deg, pitch_deg, roll_deg: patient rotation about the vertical axis, lordotic tilt,
            in-plane rotation.
        shift_mm: (horizontal, vertical) offset of the patient on the detector.
        scale: (horizontal, vertical) habitus / magnification scale of the patient.
        depth_scale: patient thickness factor (scales every line integral).
        fov_mm: detector height covered by the image.
        top_margin_mm: distance from the image's top edge down to the lung apices.
        inspiration_mm: diaphragm displacement (+ = shallow inspiration, diaphragm higher).
        elastic_mm: amplitude of the smooth in-plane deformation.
        kvp_scale: effective attenuation scale (higher kVp -> lower contrast).
        scatter: scatter fraction added to the primary beam (flattens contrast).
        photons: photons per pixel in the unattenuated beam (sets the quantum noise).
        sharpen: unsharp-mask amount of the detector processing.
        equalise: blend between histogram equalisation (1) and a linear window (0).
        shutters: (left, right, top, bottom) collimator shutter widths as image fractions.
    """

    view: str
    height: int
    width: int
    sid_mm: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    shift_mm: tuple[float, float]
    scale: tuple[float, float]
    depth_scale: float
    fov_mm: float
    top_margin_mm: float
    inspiration_mm: float
    elastic_mm: float
    kvp_scale: float
    scatter: float
    photons: float
    sharpen: float
    equalise: float
    shutters: tuple[float, float, float, float]


def sample_geometry(
    rng: np.random.Generator,
    view: str,
    height_range: tuple[int, int],
    width_range: tuple[int, int],
    habitus: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> ViewGeometry:
    """Draw one view's geometry; ``habitus`` = the patient's (width, height, thickness) scale."""
    frontal = view in FRONTAL
    portable = view == "AP"
    height = int(rng.integers(height_range[0], height_range[1] + 1)) // 2 * 2
    width = int(rng.integers(width_range[0], width_range[1] + 1)) // 2 * 2
    if not frontal:  # laterals are a little wider than frontals relative to their height
        width = min(width + int(rng.integers(0, 24)) // 2 * 2, height)
    shutter_p = 0.6 if portable else 0.3
    shutters = tuple(float(rng.uniform(0.0, 0.07)) if rng.random() < shutter_p else 0.0 for _ in range(4))
    return ViewGeometry(
        view=view,
        height=height,
        width=width,
        sid_mm=float(rng.uniform(900, 1100) if portable else rng.uniform(1700, 1850)),
        yaw_deg=float(rng.normal(0, 3.0 if portable else 2.0)),
        pitch_deg=float(rng.normal(4 if portable else 0, 4.0)),
        roll_deg=float(rng.normal(0, 2.5 if portable else 1.2)),
        shift_mm=(float(rng.normal(0, 8)), float(rng.normal(0, 8))),
        scale=(habitus[0] * float(rng.normal(1, 0.02)), habitus[1] * float(rng.normal(1, 0.02))),
        depth_scale=habitus[2] * float(rng.normal(1, 0.03)),
        fov_mm=float(rng.uniform(345, 380) if frontal else rng.uniform(340, 375)),
        top_margin_mm=float(rng.uniform(12, 35)),
        inspiration_mm=float(np.clip(rng.normal(-22 if portable else -34, 8), -50, 5)),
        elastic_mm=float(rng.uniform(1.5, 5.0)),
        kvp_scale=float(rng.uniform(0.85, 1.15)),
        scatter=float(rng.uniform(0.03, 0.15) if not portable else rng.uniform(0.08, 0.25)),
        photons=float(10 ** rng.uniform(4.0, 4.8)),
        sharpen=float(rng.uniform(0.3, 1.2)),
        equalise=float(rng.uniform(0.75, 1.0)),
        shutters=shutters,  # type: ignore[arg-type]
    )


def attenuation(hu: np.ndarray) -> torch.Tensor:
    """Linear attenuation per mm from HU: water-scaled, air = 0, bone boosted. (Z, Y, X) float32."""
    t = torch.from_numpy(hu)
    bone = torch.clamp((t - 150.0) / 900.0, 0.0, 1.5).mul_(BONE_GAIN * MU_WATER_PER_MM).add_(MU_WATER_PER_MM)
    return torch.clamp(t / 1000.0 + 1.0, min=0.0).mul_(bone)


def attenuation_update(base_mu: torch.Tensor, base_hu: np.ndarray, hu: np.ndarray) -> torch.Tensor:
    """:func:`attenuation` of ``hu``, recomputed only inside the bounding box where it differs from
    ``base_hu`` (whose attenuation is ``base_mu``). Findings touch a fraction of the volume."""
    changed = hu != base_hu
    if not changed.any():
        return base_mu
    box = bounding_box(changed, margin=0)
    mu = base_mu.clone()
    mu[box] = attenuation(np.ascontiguousarray(hu[box]))
    return mu


def _interp_matrix(pos: torch.Tensor, n: int, clamp: bool) -> torch.Tensor:
    """(..., len, n) linear interpolation weights for positions ``pos`` (..., len) in voxel index units.

    Outside [0, n-1] the weight is zero (air) unless ``clamp`` (edge voxel repeated).
    """
    if clamp:
        pos = pos.clamp(0, n - 1)
    i0 = torch.floor(pos)
    w1 = pos - i0
    i0 = i0.long()
    lead = torch.meshgrid(*(torch.arange(k) for k in pos.shape), indexing="ij")  # every (..., row) index
    mat = torch.zeros(*pos.shape, n + 2)  # two spare columns swallow out-of-range taps
    idx0 = (i0 + 1).clamp(0, n + 1)
    idx1 = (i0 + 2).clamp(0, n + 1)
    mat[(*lead, idx0)] += 1 - w1
    mat[(*lead, idx1)] += w1
    return mat[..., 1 : n + 1].contiguous()


def project(
    mu: torch.Tensor, anatomy: Anatomy, geom: ViewGeometry, depth_groups: int = 12, render_mm: float = 2.0
) -> tuple[torch.Tensor, float]:
    """Cone-beam line integrals on a detector grid centred on the lungs.

    Args:
        mu: (Z, Y, X) attenuation per mm.
    Returns:
        (P, spacing): P is (Hr, Wr) float32 dimensionless line integrals, rows top (head) -> bottom,
        on a detector grid of ``spacing`` mm centred on the lungs' centre.
    """
    vox = anatomy.voxel_mm
    nz, ny, nx = mu.shape
    frontal = geom.view in FRONTAL
    lung_zyx = anatomy.lung_center
    if frontal:
        slabs = mu.permute(1, 0, 2)  # (depth=Y, Z, horizontal=X)
        horiz_center, horiz_sign = lung_zyx[2], 1.0  # patient's left -> image right
        # PA: detector in front of the chest (anterior, high Y); AP: behind it.
        detector_at = ny if geom.view == "PA" else 0
        shear_deg = geom.yaw_deg
    else:
        slabs = mu.permute(2, 0, 1)  # (depth=X, Z, horizontal=Y)
        horiz_center, horiz_sign = lung_zyx[1], -1.0  # anterior -> image left
        detector_at = nx  # LATERAL and LL: the patient's left side against the detector
        shear_deg = -geom.yaw_deg
    nd = slabs.shape[0]
    edges = np.linspace(0, nd, depth_groups + 1).round().astype(int)
    groups = torch.stack([slabs[e0:e1].sum(0) for e0, e1 in zip(edges[:-1], edges[1:])]) * vox  # (G, Z, H) mu*mm
    depth_idx = torch.from_numpy((edges[:-1] + edges[1:] - 1) / 2.0).float()  # group centres, voxel index
    dist_mm = (depth_idx - detector_at).abs() * vox + 40.0  # 40 mm: detector cover and skin gap
    mag = geom.sid_mm / (geom.sid_mm - dist_mm)
    mag = mag / mag.mean()  # image scale is set by fov_mm; only the relative magnification matters
    mid = (nd - 1) / 2.0
    shear = math.tan(math.radians(shear_deg)) * (depth_idx - mid) * vox  # (G,) mm
    tilt = math.tan(math.radians(geom.pitch_deg)) * (depth_idx - mid) * vox

    half_h = geom.fov_mm * 0.62
    half_w = geom.fov_mm * 0.62
    v = torch.arange(-half_h, half_h + 1e-3, render_mm)  # mm below the centre (image rows)
    u = torch.arange(-half_w, half_w + 1e-3, render_mm)  # mm right of the centre (image columns)
    z_pos = lung_zyx[0] - (v[None, :] - tilt[:, None]) / mag[:, None] / vox  # (G, Hr) z index
    h_pos = horiz_center + horiz_sign * (u[None, :] - shear[:, None]) / mag[:, None] / vox
    rz = _interp_matrix(z_pos, nz, clamp=True)  # (G, Hr, Z)
    rh = _interp_matrix(h_pos, groups.shape[2], clamp=False)  # (G, Wr, H)
    proj = torch.bmm(torch.bmm(rz, groups), rh.transpose(1, 2)).sum(0)  # (Hr, Wr)
    return proj, render_mm


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int, amplitude: float) -> torch.Tensor:
    """(2, H, W) smooth random displacement, bicubic from a ``grid`` x ``grid`` lattice."""
    coarse = torch.from_numpy(rng.normal(0, amplitude, size=(1, 2, grid, grid)).astype(np.float32))
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)[0]


def _warp(
    proj: torch.Tensor, spacing: float, geom: ViewGeometry, rng: np.random.Generator, anatomy: Anatomy
) -> torch.Tensor:
    """Resample the detector image to the JPG grid: FOV, pose, habitus, elastic, inspiration."""
    h, w = geom.height, geom.width
    pix = geom.fov_mm / h  # mm per output pixel
    # Frame the chest like a radiographer: the lung apices just below the top edge.
    apex_mm = (anatomy.lung_center[0] - max(anatomy.lung_top_z.values())) * anatomy.voxel_mm
    rows = apex_mm - geom.top_margin_mm + (torch.arange(h, dtype=torch.float32) + 0.5) * pix
    cols = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) * pix
    vv, uu = torch.meshgrid(rows, cols, indexing="ij")  # output mm from the lungs' centre, (H, W)
    th = math.radians(geom.roll_deg)
    u1 = (math.cos(th) * uu - math.sin(th) * vv) / geom.scale[0] - geom.shift_mm[0]
    v1 = (math.sin(th) * uu + math.cos(th) * vv) / geom.scale[1] - geom.shift_mm[1]
    field = _smooth_field(rng, (h, w), 5, geom.elastic_mm)
    u1 = u1 + field[0]
    v1 = v1 + field[1]
    # Inspiration: below the hila the chest is stretched / compressed; the abdomen just moves.
    vox, cz = anatomy.voxel_mm, anatomy.lung_center[0]
    v_hilum = (cz - 0.5 * (anatomy.hilum["right"][0] + anatomy.hilum["left"][0])) * vox - 20.0
    v_dome = (cz - 0.5 * (anatomy.dome_z["right"] + anatomy.dome_z["left"])) * vox + 10.0
    s = torch.clamp((v1 - v_hilum) / (v_dome - v_hilum), 0.0, 1.0)
    s = s * s * (3 - 2 * s)
    v1 = v1 + geom.inspiration_mm * s
    hr, wr = proj.shape
    gx = u1 / (spacing * (wr - 1) / 2)
    gy = v1 / (spacing * (hr - 1) / 2)
    grid = torch.stack([gx, gy], dim=-1)[None]
    return F.grid_sample(proj[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]


def _gauss_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Approximate Gaussian blur of an (H, W) image: area-downsample, blur, bilinear upsample.

    The large kernels of scatter and unsharp masking would dominate the render time as direct convolutions.
    """
    h, w = img.shape
    f = max(1, int(sigma // 3))
    t = img[None, None]
    if f > 1:
        t = F.interpolate(t, size=(max(2, h // f), max(2, w // f)), mode="area")
    s = sigma / f
    r = max(1, int(3 * s))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / s) ** 2)
    k = k / k.sum()
    pad_h, pad_w = min(r, t.shape[2] - 1), min(r, t.shape[3] - 1)
    t = F.pad(t, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
    t = F.conv2d(t, k[r - pad_w : r + pad_w + 1].view(1, 1, 1, -1))
    t = F.conv2d(t, k[r - pad_h : r + pad_h + 1].view(1, 1, -1, 1))
    if f > 1:
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return t[0, 0]


def _equalise(img: np.ndarray, amount: float) -> np.ndarray:
    """Histogram equalisation blended with a 1-99 percentile linear window; returns [0, 1] float32."""
    flat = img.ravel()
    lo, hi = np.percentile(flat, [0.5, 99.5])
    linear = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    hist, edges = np.histogram(flat, bins=1024)
    cdf = np.cumsum(hist).astype(np.float64)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    eq = np.interp(flat, edges[1:], cdf).reshape(img.shape)
    return (amount * eq + (1 - amount) * linear).astype(np.float32)


def radiograph(
    mu: torch.Tensor, anatomy: Anatomy, geom: ViewGeometry, rng: np.random.Generator, depth_groups: int = 12
) -> np.ndarray:
    """Render one radiograph of the attenuation volume ``mu`` (Z, Y, X).

    Returns:
        (height, width) uint8, bright = attenuating (bone, fluid), dark = air.
    """
    proj, spacing = project(mu, anatomy, geom, depth_groups)
    line = _warp(proj, spacing, geom, rng, anatomy) * geom.depth_scale * geom.kvp_scale  # (H, W)
    primary = torch.exp(-line)
    # Scatter: a blurred fraction of the transmitted beam, which lifts the dense regions.
    scatter = geom.scatter * _gauss_blur(primary, sigma=geom.height / 12)
    counts = geom.photons * (primary + scatter)
    noise = torch.from_numpy(rng.standard_normal(counts.shape).astype(np.float32))
    counts = torch.clamp(counts + noise * torch.sqrt(counts), min=0.5)
    log_img = -torch.log(counts / geom.photons)  # (H, W), bright = dense
    # Detector processing: large-kernel unsharp masking (edge and rib enhancement).
    log_img = log_img + geom.sharpen * (log_img - _gauss_blur(log_img, sigma=geom.height / 40))
    # Direct exposure (air around the patient) saturates to a uniform black, as on a real detector.
    img = np.maximum(log_img.numpy(), AIR_FLOOR)
    img = _apply_shutters(img, geom)
    out = _equalise(img, geom.equalise)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _apply_shutters(img: np.ndarray, geom: ViewGeometry) -> np.ndarray:
    """Collimator shutters: unexposed (bright) borders with a soft penumbra."""
    if not any(geom.shutters):
        return img
    h, w = img.shape
    left, right, top, bottom = geom.shutters
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pen = 2.0
    inside = (
        np.clip((xx - left * w) / pen, 0, 1)
        * np.clip(((1 - right) * w - xx) / pen, 0, 1)
        * np.clip((yy - top * h) / pen, 0, 1)
        * np.clip(((1 - bottom) * h - yy) / pen, 0, 1)
    )
    high = np.percentile(img, 99.5)
    bright = high + 0.2 * (high - np.percentile(img, 1))
    return inside * img + (1 - inside) * bright


def encode_jpeg(img: np.ndarray, quality: int = 95) -> bytes:
    """8-bit single-channel JPG bytes (MIMIC-CXR-JPG used quality 95)."""
    if img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 image, got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
