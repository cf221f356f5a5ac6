"""The demo dataset's params (the ``download.demo`` section), without torch or pandas: ``raygen check-params``
validates them with the rest of params.yaml."""

from __future__ import annotations

import dataclasses

ALL_GROUPS = tuple(f"p{g}" for g in range(10, 20))  # MIMIC's group folders: a subject id's first two digits


def check_groups(groups: tuple[str, ...]) -> None:
    """Raise ValueError unless ``groups`` names group folders p10..p19 (repeats allowed: shares)."""
    bad = [g for g in groups if g not in ALL_GROUPS]
    if not groups or bad:
        raise ValueError(f"groups must name group folders p10..p19, got {list(groups)!r}")


@dataclasses.dataclass(frozen=True)
class DemoParams:
    """Size and look of the demo dataset (the ``download.demo`` params section)."""

    # Fewer studies left the real-only classifier under its AUROC target; more cost render time on the
    # demo's 2 cores (both measured in docs/benchmarks.md).
    studies: int = 2000
    patients: int = 700  # several studies per patient, as in MIMIC-CXR (ratios: docs/benchmarks.md)
    seed: int = 0  # dataset seed: the plan and every study's rendering derive from it
    # Group folders the patients are drawn from, uniformly over their subject ids; a group listed k times
    # gets k shares. All ten, as in MIMIC, by default; the paper downloads p10 only, so a dataset served
    # to the download stage in its place puts most patients there (e.g. [p10, p10, p10, p11]).
    groups: tuple[str, ...] = ALL_GROUPS
    voxel_mm: float = 2.0  # working CT grid (mm): fine enough for 400-px images, cheap on CPU
    height_range: tuple[int, int] = (368, 400)  # JPG Rows (px), portrait like MIMIC's 3056 x 2544 at ~1/8 scale
    width_range: tuple[int, int] = (304, 344)  # JPG Columns (px), a little narrower than high: not square
    normal_rate: float = 0.27  # studies without any of the 10 findings (MIMIC: ~1/3 "No Finding")
    ap_rate: float = 0.62  # portable AP frontals are MIMIC's most common view; the rest are PA
    lateral_rate: float = 0.30  # studies with a lateral (LATERAL or LL) second image, mostly PA studies
    validate_fraction: float = 0.01  # official-split-like patient fractions (MIMIC: ~1% validate, ~1.4% test)
    test_fraction: float = 0.014
    no_label_rate: float = 0.01  # studies without a chexpert / negbio row (MIMIC has a few)
    depth_groups: int = 12  # slab groups of the cone-beam projector (more = exacter magnification)
    jpeg_quality: int = 95  # MIMIC-CXR-JPG's JPEG quality

    def __post_init__(self) -> None:
        if self.studies < 1 or self.patients < 1:
            raise ValueError("studies and patients must be >= 1")
        if self.height_range[0] > self.height_range[1] or self.width_range[0] > self.width_range[1]:
            raise ValueError("height_range / width_range must be (low, high)")
        if self.width_range[1] >= self.height_range[0]:
            raise ValueError("width_range must stay below height_range: MIMIC-like portrait, never square")
        check_groups(self.groups)
