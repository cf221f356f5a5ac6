"""Findings injected into the CT (HU, ``(Z, Y, X)``) with the TotalSegmentator label map.

Each finding edits the volume the way the disease changes tissue, so that its radiographic sign
emerges from the projection instead of being painted on the image:

* Pleural Effusion: dependent fluid filling the pleural space from the costophrenic recesses up to
  a level, with a meniscus climbing the chest wall (upright) or layering posteriorly (supine).
* Cardiomegaly: the heart label scaled up about its base, replacing lung: a smoothly larger silhouette.
* Pneumothorax: apical / lateral rim of the lung replaced by air (vessels removed), a thin visceral
  pleural line at the collapsed lung's edge and a slightly denser collapsed lung.
* Consolidation: a lobe or segment filled to soft-tissue density with soft margins; airways spared
  (air bronchograms).
* Pneumonia: patchy consolidation in a lobe.  Lung Opacity: ill-defined patchy ground glass.
* Edema: bilateral perihilar (bat-wing) haze, worse at the bases when severe.
* Lung Lesion: lobulated soft-edged nodule(s) or a mass.
* Atelectasis: plate-like linear opacities, basal opacity and volume loss with an elevated
  hemidiaphragm.
* Fracture: rib cortical gap and displacement (acute) or a callus (healing).

Severity words are the ones radiologists use; they are what the reports say.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from raygen.data.demo.anatomy import HEART, RIBS_LEFT, RIBS_RIGHT, Anatomy, bounding_box
from raygen.data.labels import CLASSES

HU_FLUID = 15.0
HU_TISSUE = 35.0

SEVERITY: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("minimal", "mild", "moderate"),
    "Cardiomegaly": ("mild", "moderate", "severe"),
    "Edema": ("mild", "moderate", "severe"),
    "Fracture": ("acute", "healing"),
    "Lung Lesion": ("nodule", "mass"),
    "Pleural Effusion": ("small", "moderate", "large"),
    "Pneumothorax": ("small", "moderate", "large"),
}
# Classes that have a side (Cardiomegaly and Edema are central / bilateral by nature).
LATERAL_CLASSES = tuple(c for c in CLASSES if c not in ("Cardiomegaly", "Edema"))


@dataclasses.dataclass(frozen=True)
class Finding:
    """One injected finding.

    Attributes:
        label: one of :data:`raygen.data.labels.CLASSES`.
        laterality: "left", "right", "bilateral" or "" (no side).
        severity: a word from :data:`SEVERITY` or "".
        location: lobe / zone words for the report ("lower lobe", "upper lobe", "middle lobe",
            "lingula", "base", "mid", "upper", "perihilar", "retrocardiac") or a rib ("6th").
        size_mm: lesion diameter (Lung Lesion only), else 0.
        count: number of nodules or fractured ribs (1 unless several).
    """

    label: str
    laterality: str = ""
    severity: str = ""
    location: str = ""
    size_mm: float = 0.0
    count: int = 1

    def sides(self) -> tuple[str, ...]:
        return ("right", "left") if self.laterality == "bilateral" else ((self.laterality,) if self.laterality else ())


# ------------------------------------------------------------------------------------------ helpers


def _mask_box(a: Anatomy, name: tuple, mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """:func:`bounding_box` of one of the anatomy's fixed masks (``name`` says which), computed once per process."""
    return a.derived(("box", *name, margin), bounding_box, mask, margin)


def _columns(mask: np.ndarray) -> np.ndarray:
    """X indices where ``mask`` has a voxel."""
    return np.nonzero(mask.any(axis=(0, 1)))[0]


def _voxels(labels: np.ndarray, label: int) -> np.ndarray:
    """(N, 3) voxel indices of one label, in C order."""
    return np.argwhere(labels == label)


def _blur(vol: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (sigma in voxels) of a float volume."""
    if sigma <= 0:
        return vol.astype(np.float32)
    if sigma >= 1.2 and min(vol.shape) >= 8:
        # Smooth masks only: blur at half resolution (8x fewer voxels) and interpolate back.
        t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
        half = F.avg_pool3d(t, 2, ceil_mode=True)
        half = torch.from_numpy(_blur(half[0, 0].numpy(), sigma / 2))[None, None]
        return F.interpolate(half, size=vol.shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    t = F.conv3d(F.pad(t, (0, 0, 0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1, 1))
    t = F.conv3d(F.pad(t, (0, 0, r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1, 1))
    t = F.conv3d(F.pad(t, (r, r, 0, 0, 0, 0), mode="replicate"), k.view(1, 1, 1, 1, -1))
    return t[0, 0].numpy()


def _soft(mask: np.ndarray, sigma: float, margin: int | None = None) -> np.ndarray:
    """Blurred [0, 1] version of a boolean mask, computed on its bounding box only."""
    out = np.zeros(mask.shape, np.float32)
    box = bounding_box(mask, margin if margin is not None else int(3 * sigma) + 1)
    if mask[box].size:
        out[box] = _blur(mask[box].astype(np.float32), sigma)
    return out


def _noise(rng: np.random.Generator, shape: tuple[int, ...], cell_vox: float) -> np.ndarray:
    """Smooth random field, about unit variance, correlation length ~``cell_vox`` voxels."""
    coarse = [max(2, int(math.ceil(n / cell_vox)) + 1) for n in shape]
    t = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))[None, None]
    t = F.interpolate(t, size=shape, mode="trilinear", align_corners=True)[0, 0]
    return (t / 0.6).numpy()  # trilinear interpolation shrinks the variance to roughly 0.36


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings (float32 in, float32 out)."""
    return (0.5 + 0.5 * np.tanh(0.5 * np.asarray(x, dtype=np.float32))).astype(np.float32)


def _blend(hu: np.ndarray, weight: np.ndarray, target: float | np.ndarray) -> None:
    """In place: ``hu <- hu + weight * (target - hu)``."""
    hu += weight * (target - hu)


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(
        np.arange(n, dtype=np.float32).reshape([-1 if a == i else 1 for a in range(3)]) for i, n in enumerate(shape)
    )  # type: ignore[return-value]


def _zone_weight(anatomy: Anatomy, side: str, zone: str) -> np.ndarray:
    """(Z, 1, 1) weight selecting a lung zone by height: lower / mid / upper."""
    z = np.arange(anatomy.shape[0], dtype=np.float32)
    lo, hi = anatomy.dome_z[side] - 10, anatomy.lung_top_z[side]
    f = (z - lo) / max(hi - lo, 1)  # 0 at the base, 1 at the apex
    centre = {"lower": 0.12, "base": 0.1, "mid": 0.45, "upper": 0.8}.get(zone, 0.4)
    return np.exp(-0.5 * ((f - centre) / 0.2) ** 2).astype(np.float32).reshape(-1, 1, 1)


# ---------------------------------------------------------------------------------------- injectors


def effusion(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Dependent pleural fluid with a meniscus (erect) or posterior layering (supine)."""
    level_mm = {"small": (0, 18), "moderate": (30, 55), "large": (70, 95)}[f.severity]
    for side in f.sides():
        level = a.dome_z[side] + rng.uniform(*level_mm) / a.voxel_mm
        rise = rng.uniform(*{"small": (10, 18), "moderate": (18, 28), "large": (22, 32)}[f.severity])
        climb, climb_len = rng.uniform(6, 12), 8.0
        z_top = level + (rise + climb) / a.voxel_mm + 4
        if not erect:
            z_top = max(z_top, a.hilum[side][0] + 12)
        lung_full = a.side_mask(side)
        box = _mask_box(a, ("lung", side), lung_full, 1)
        box = (slice(box[0].start, min(box[0].stop, int(z_top) + 1)), box[1], box[2])
        lung = lung_full[box]
        z_idx, y_idx, x_idx = (g + b.start for g, b in zip(_grid(lung.shape), box))
        # Meniscus: concave upper border, lowest medially and climbing the lateral chest wall.
        xs = a.derived(("columns", side), _columns, lung_full)
        hx = a.hilum[side][2]
        lateral = np.clip(np.abs(x_idx - hx) / max(abs(xs[0] - hx), abs(xs[-1] - hx), 1), 0, 1)
        meniscus = (rise * lateral**2.5 + climb * np.exp(-a.wall_mm[box] / climb_len)) / a.voxel_mm
        weight = _sigmoid((level + meniscus - z_idx) / 1.2)
        if not erect:
            # Supine: fluid layers along the posterior chest wall; a veil over the hemithorax.
            first_y = np.where(lung.any(axis=1), lung.argmax(axis=1) + box[1].start, 10**4).astype(np.float32)[
                :, None, :
            ]
            depth = {"small": 6, "moderate": 16, "large": 30}[f.severity] / a.voxel_mm
            layer = _sigmoid((first_y + depth - y_idx) / 1.2)
            z_fade = np.clip((a.hilum[side][0] + 10 - z_idx) / 15.0, 0.0, 1.0)
            weight = np.maximum(weight * 0.7, layer * z_fade)
        _blend(hu[box], (weight * lung).astype(np.float32), HU_FLUID)


def cardiomegaly(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Scale the heart about its base: leftward and downward growth, replacing lung and fat."""
    s = {"mild": 1.16, "moderate": 1.28, "severe": 1.42}[f.severity] * rng.uniform(0.97, 1.03)
    heart = a.derived(("heart",), np.isin, a.labels, HEART)
    box = _mask_box(a, ("heart",), heart, int(28 / a.voxel_mm))
    crop = torch.from_numpy(heart[box].astype(np.float32))[None, None]
    nz, ny, nx = crop.shape[2:]
    cz, cy, cx = (c - b.start for c, b in zip(a.heart_center, box))
    # Anchor: the base of the heart (upper right) stays; the apex moves left and down.
    az, ax = cz + 0.35 * nz * 0.5, cx - 0.25 * nx * 0.5
    sz, sy, sx = 1 + 0.6 * (s - 1), 1 + 0.7 * (s - 1), s
    zz = (torch.arange(nz, dtype=torch.float32) - az) / sz + az
    yy = (torch.arange(ny, dtype=torch.float32) - cy) / sy + cy
    xx = (torch.arange(nx, dtype=torch.float32) - ax) / sx + ax
    # Normalised per axis before the broadcast: the same values as on the full grid, a fraction of the work.
    gz, gy, gx = torch.meshgrid(2 * zz / (nz - 1) - 1, 2 * yy / (ny - 1) - 1, 2 * xx / (nx - 1) - 1, indexing="ij")
    grid = torch.stack([gx, gy, gz], dim=-1)[None]
    grown = F.grid_sample(crop, grid, mode="bilinear", align_corners=True)[0, 0].numpy()
    grown = _blur(grown, 1.0)
    sub = hu[box]
    replace = np.clip((grown - 0.3) / 0.4, 0, 1) * (~a.bone[box]) * (sub < 150)
    _blend(sub, replace, HU_TISSUE)


def pneumothorax(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Air between chest wall and a collapsed lung: no vessels, a visceral pleural line."""
    apical = {"small": (14, 24), "moderate": (26, 40), "large": (42, 60)}[f.severity]
    lateral = {"small": (0, 3), "moderate": (10, 20), "large": (28, 45)}[f.severity]
    for side in f.sides():
        lung_full = a.side_mask(side)
        box = _mask_box(a, ("lung", side), lung_full, 1)
        lung = lung_full[box]
        z_idx, _, x_idx = (g + b.start for g, b in zip(_grid(lung.shape), box))
        zh, _, xh = a.hilum[side]
        top = a.lung_top_z[side]
        up = np.clip((z_idx - zh) / max(top - zh, 1), 0, 1)
        xs = np.nonzero(lung.any(axis=(0, 1)))[0]
        half_width = max(abs(xs[0] - xh), abs(xs[-1] - xh), 1)
        lat = np.clip(np.abs(x_idx - xh) / half_width, 0, 1) ** 2
        rim = np.maximum(rng.uniform(*apical) * up, rng.uniform(*lateral) * lat * np.clip(up + 0.6, 0, 1))
        rim = rim + 2.0  # the collapsed edge never touches the wall where there is air
        depth = a.pleura_mm[box]
        air = lung & (depth < rim)
        line = lung & (depth >= rim) & (depth < rim + 1.6 * a.voxel_mm)
        sub = hu[box]
        sub[air] = -1000.0
        sub[line] = np.maximum(sub[line], -100.0)
        collapsed = lung & ~air & ~line
        sub[collapsed] += {"small": 60.0, "moderate": 140.0, "large": 260.0}[f.severity]


def _lobe_for(a: Anatomy, side: str, location: str, margin: int) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """The lobe a report's location word names on ``side``: its mask and its box grown by ``margin``."""
    lobe = {
        "lower lobe": "lower",
        "upper lobe": "upper",
        "middle lobe": "middle",
        "lingula": "lingula",
        "retrocardiac": "lower",
        "base": "lower",
    }.get(location, "lower")
    if side == "left" and lobe == "middle":
        lobe = "lingula"
    if side == "right" and lobe == "lingula":
        lobe = "middle"
    mask = a.lobe_mask(side, lobe)
    return mask, _mask_box(a, ("lobe", side, lobe), mask, margin)


def consolidation(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Lobar / segmental airspace filling with soft margins and spared airways."""
    for side in f.sides():
        lobe, box = _lobe_for(a, side, f.location, 3)
        n = _noise(rng, tuple(s.stop - s.start for s in box), 10.0)
        region = lobe[box] & (n > rng.uniform(-1.2, -0.4))
        w = _blur(region.astype(np.float32), 1.5) * lobe[box]
        sub = hu[box]
        airway = sub < -930  # bronchi stay aerated: air bronchograms
        w = w * np.where(airway, 0.25, 0.97)
        _blend(sub, w.astype(np.float32), HU_TISSUE)


def pneumonia(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Patchy (bronchopneumonic) consolidation within a lobe."""
    for side in f.sides():
        lobe, box = _lobe_for(a, side, f.location, 3)
        shape = tuple(s.stop - s.start for s in box)
        n = _noise(rng, shape, 6.0) + 0.8 * _noise(rng, shape, 14.0)
        w = np.clip((n - rng.uniform(-0.3, 0.3)) / 1.0, 0, 1) * lobe[box]
        w = _blur(w, 1.2) * lobe[box] * rng.uniform(0.85, 1.0)
        _blend(hu[box], w.astype(np.float32), 10.0)


def lung_opacity(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Ill-defined patchy ground-glass opacity in one zone."""
    for side in f.sides():
        lung = a.side_mask(side)
        box = _mask_box(a, ("lung", side), lung, 2)
        shape = tuple(s.stop - s.start for s in box)
        zone = _zone_weight(a, side, f.location)[box[0]]
        n = _noise(rng, shape, 9.0)
        w = np.clip((n + 0.6) / 1.6, 0, 1) * zone * lung[box]
        w = _blur(w, 2.0) * lung[box] * rng.uniform(0.7, 0.9)
        _blend(hu[box], w.astype(np.float32), -100.0)


def edema(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Bilateral perihilar haze (interstitial -> alveolar with severity), basal predominance."""
    amount = {"mild": 0.35, "moderate": 0.55, "severe": 0.8}[f.severity]
    lungs = a.derived(("lungs",), np.greater, a.lung, 0)
    box = _mask_box(a, ("lungs",), lungs, 2)
    shape = tuple(s.stop - s.start for s in box)
    z_idx, y_idx, x_idx = (g.astype(np.float32) for g in _grid(shape))
    w = np.zeros(shape, np.float32)
    sigma = rng.uniform(55, 80) / a.voxel_mm
    for side in ("right", "left"):
        hz, hy, hx = (c - b.start for c, b in zip(a.hilum[side], box))
        d2 = (z_idx - hz) ** 2 + (y_idx - hy) ** 2 + ((x_idx - hx) * 0.8) ** 2
        w = np.maximum(w, np.exp(-d2 / (2 * sigma**2)))
    base = np.clip((a.hilum["right"][0] - box[0].start - z_idx) / 60.0, 0, 1) * 0.5
    n = 0.75 + 0.25 * _noise(rng, shape, 5.0)
    w = np.clip((w + base) * n, 0, 1) * amount * lungs[box]
    _blend(hu[box], w.astype(np.float32), -50.0)


def lung_lesion(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Soft-edged, lobulated nodule(s) or mass inside the lung."""
    side = f.sides()[0]
    # Candidates are searched in the lobe's box: the same voxels, in the same order, as in the whole volume.
    lobe, lobe_box = _lobe_for(a, side, f.location, 0)
    in_lobe, pleura_mm = lobe[lobe_box], a.pleura_mm[lobe_box]
    zs, xs = (np.arange(sl.start, sl.stop) for sl in (lobe_box[0], lobe_box[2]))
    hx = a.hilum[side][2]
    lateral_x = xs < hx - 8 if side == "right" else xs > hx + 8
    for k in range(f.count):
        r_mm = 0.5 * f.size_mm * (1.0 if k == 0 else rng.uniform(0.6, 0.9))
        # Away from the pleura and in the lateral two thirds, where the lesion is not hidden by the heart.
        above_dome = zs > a.dome_z[side] + r_mm / a.voxel_mm + 4  # not hidden below the diaphragm
        inner = in_lobe & (pleura_mm > min(r_mm * 0.8, 20)) & lateral_x[None, None, :] & above_dome[:, None, None]
        cand = np.argwhere(inner if inner.any() else in_lobe) + np.array([sl.start for sl in lobe_box])
        c = cand[rng.integers(len(cand))].astype(np.float32)
        r = r_mm / a.voxel_mm
        m = int(math.ceil(r * 1.5)) + 2
        box = tuple(slice(max(int(ci) - m, 0), min(int(ci) + m + 1, n)) for ci, n in zip(c, a.shape))
        zz, yy, xx = (g + b.start - ci for g, b, ci in zip(_grid(tuple(b.stop - b.start for b in box)), box, c))
        dist = np.sqrt(zz**2 + yy**2 + xx**2) + 1e-3
        # Lobulation: the radius varies smoothly with direction.
        lob = 1 + 0.15 * np.sin(3 * np.arctan2(yy, xx) + rng.uniform(0, 6.3)) * np.cos(2 * np.arccos(zz / dist))
        w = _sigmoid((r * lob - dist) / 0.7)
        # Slightly denser than soft tissue so that a 2 cm nodule survives 64-px downsampling.
        _blend(hu[box], (w * (a.lung[box] > 0)).astype(np.float32), HU_TISSUE + 60)


def atelectasis(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Plate-like linear opacity (all), basal opacity (mild+), volume loss / raised hemidiaphragm (moderate)."""
    for side in f.sides():
        lung_full = a.side_mask(side)
        side_box = _mask_box(a, ("lung", side), lung_full, 1)
        dome = a.dome_z[side]
        # Plate: a thin, gently curved sheet a few cm above the dome, seen edge-on as a line.
        for _ in range(1 + int(rng.random() < 0.4)):
            z0 = dome + rng.uniform(8, 30) / a.voxel_mm
            tilt, bend = rng.normal(0, 0.12), rng.normal(0, 0.012)
            pts = np.argwhere(lung_full[int(z0)])
            if len(pts) == 0:
                continue
            cy, cx = pts[rng.integers(len(pts))]
            half = int(max(abs(tilt) * 40, 4) + 6)
            box = (slice(max(int(z0) - half, 0), int(z0) + half + 1), side_box[1], side_box[2])
            z_idx, y_idx, x_idx = (g + b.start for g, b in zip(_grid(lung_full[box].shape), box))
            plane = np.abs(z_idx - z0 - tilt * (x_idx - cx) - bend * (x_idx - cx) ** 2)
            extent = ((x_idx - cx) ** 2 + ((y_idx - cy) * 0.6) ** 2) / (rng.uniform(18, 35) / a.voxel_mm) ** 2
            w = np.exp(-0.5 * (plane / 0.8) ** 2) * np.exp(-extent) * lung_full[box] * rng.uniform(0.6, 0.9)
            _blend(hu[box], w.astype(np.float32), HU_TISSUE)
        if f.severity in ("mild", "moderate"):
            lower = a.lobe_mask(side, "lower")
            box = _mask_box(a, ("lobe", side, "lower"), lower, 2)
            box = (slice(box[0].start, min(box[0].stop, int(dome + 16 / a.voxel_mm) + 1)), box[1], box[2])
            shape = tuple(s.stop - s.start for s in box)
            zl = np.arange(box[0].start, box[0].stop, dtype=np.float32).reshape(-1, 1, 1)
            basal = np.clip((dome + 15 / a.voxel_mm - zl) / (15 / a.voxel_mm), 0, 1)
            n = np.clip(0.6 + 0.5 * _noise(rng, shape, 8.0), 0, 1)
            w = _blur((basal * n * lower[box]).astype(np.float32), 1.5) * lower[box] * 0.85
            _blend(hu[box], w.astype(np.float32), 0.0)
        if f.severity == "moderate":
            # Volume loss: the hemidiaphragm rises into the base (a higher, smooth dome).
            rise = rng.uniform(14, 26) / a.voxel_mm
            box = (slice(side_box[0].start, min(side_box[0].stop, int(dome + rise) + 4)), side_box[1], side_box[2])
            z_idx, y_idx, x_idx = (g + b.start for g, b in zip(_grid(lung_full[box].shape), box))
            _, hy, hx = a.hilum[side]
            r2 = ((x_idx - hx) ** 2 + (y_idx - hy) ** 2) / (90 / a.voxel_mm) ** 2
            surface = dome + rise * np.exp(-r2) - 4
            w = _sigmoid(surface - z_idx) * lung_full[box]
            _blend(hu[box], w.astype(np.float32), HU_TISSUE + 20)


def fracture(hu: np.ndarray, a: Anatomy, f: Finding, rng: np.random.Generator, erect: bool) -> None:
    """Rib fracture(s): cortical gap and step-off (acute) or fusiform callus (healing)."""
    side = f.sides()[0]
    ribs = RIBS_LEFT if side == "left" else RIBS_RIGHT
    first = int(f.location.rstrip("stndrh")) if f.location[:1].isdigit() else 6
    for k in range(f.count):
        label = ribs[min(max(first - 1 + k, 0), 11)]
        vox = a.derived(("voxels", label), _voxels, a.labels, label)
        if len(vox) < 10:
            continue
        # Pick a point on the lateral arc (farthest from the midline), where fractures show best.
        mid_x = a.shape[2] / 2
        lateral = np.abs(vox[:, 2] - mid_x)
        cand = vox[lateral > np.percentile(lateral, 70)]
        p0 = cand[rng.integers(len(cand))].astype(np.float32)
        near = vox[np.linalg.norm(vox - p0, axis=1) < 10 / a.voxel_mm].astype(np.float32)
        axis = np.linalg.svd(near - near.mean(0), full_matrices=False)[2][0] if len(near) > 3 else np.array([0, 1, 0.0])
        m = int(24 / a.voxel_mm)
        box = tuple(slice(max(int(c) - m, 0), min(int(c) + m + 1, n)) for c, n in zip(p0, a.shape))
        rel = [g + b.start - c for g, b, c in zip(_grid(tuple(b.stop - b.start for b in box)), box, p0)]
        along = rel[0] * axis[0] + rel[1] * axis[1] + rel[2] * axis[2]
        radial = np.sqrt(np.maximum(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2, 0))
        rib = (a.labels[box] == label) | ((hu[box] > 150) & (radial < 6 / a.voxel_mm))
        sub = hu[box]
        if f.severity == "healing":
            callus = np.exp(-0.5 * ((along / (9 / a.voxel_mm)) ** 2 + (radial / (6 / a.voxel_mm)) ** 2))
            _blend(sub, (callus * 0.95).astype(np.float32), 900.0)
            continue
        gap = (np.abs(along) < rng.uniform(1.5, 3.0) / a.voxel_mm) & rib & (radial < 8 / a.voxel_mm)
        far = (along > 0) & (along < 20 / a.voxel_mm) & rib & ~gap
        step = np.round(rng.uniform(4.0, 7.0) / a.voxel_mm * np.array([rng.choice([-1, 1]), 0, 0])).astype(int)
        moved = sub.copy()
        src = np.argwhere(far)
        dst = src + step
        ok = np.all((dst >= 0) & (dst < np.array(sub.shape)), axis=1)
        sub[far] = HU_TISSUE
        sub[gap] = HU_TISSUE
        sub[tuple(dst[ok].T)] = np.maximum(sub[tuple(dst[ok].T)], moved[tuple(src[ok].T)])


INJECTORS = {
    "Cardiomegaly": cardiomegaly,
    "Edema": edema,
    "Lung Opacity": lung_opacity,
    "Pneumonia": pneumonia,
    "Consolidation": consolidation,
    "Atelectasis": atelectasis,
    "Lung Lesion": lung_lesion,
    "Pleural Effusion": effusion,
    "Pneumothorax": pneumothorax,
    "Fracture": fracture,
}
# Order of application: the heart first, parenchyma next, then pleural fluid, air and bone on top.
ORDER = tuple(INJECTORS)


def inject(
    hu: np.ndarray, anatomy: Anatomy, findings: tuple[Finding, ...], rng: np.random.Generator, erect: bool = True
) -> np.ndarray:
    """A copy of ``hu`` (Z, Y, X) float32 with ``findings`` injected; the input is not modified."""
    out = hu.copy()
    for label in ORDER:
        for finding in findings:
            if finding.label == label:
                INJECTORS[label](out, anatomy, finding, rng, erect)
    return out
