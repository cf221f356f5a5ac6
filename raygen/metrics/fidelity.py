"""Fidelity and diversity of the per-report set (metrics.json ``fidelity``).

- the headline FID and KID between every held-out real image (N) and the first generation of its own
  report (N);
- the equal-N floor on two patient-disjoint halves A and B of the held-out set (same size n):
  FID(real A, generated for B's reports) beside FID(real A, real B), the value a perfect generator
  would reach at that n;
- SSIM between each real image and the image generated from its report, and MS-SSIM between the two
  generations of each report (kernel size and scales stated), beside MS-SSIM between the real images
  of the floor's halves, pair by pair (A_i with B_i: two real images of different patients), the
  diversity of real data; and, like for like, MS-SSIM between real images of different patients whose
  reports have the same text, beside MS-SSIM between the two seeds' generations of those reports;
- the tokenizer's share, when the synthesize folder has reconstructions (the VQ-GAN's decoding of each
  held-out image's own tokens, the best any decoder could do with this tokenizer): on the same halves,
  FID(real A, reconstructed B), and FID(reconstructed A, generated B) beside FID(reconstructed A,
  reconstructed B), the decoder's own gap measured inside what the tokenizer can represent; SSIM of
  each reconstruction to its real image; MS-SSIM between the reconstructed pairs.

A set too small for FID/KID gives ``"not computed: <reason>"`` in place of the numbers, never a crash.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from raygen.metrics.fid import compute_fid_or_reason
from raygen.metrics.image_sets import EvaluationImages
from raygen.metrics.image_similarity import ms_ssim, ssim
from raygen.metrics.resampling import disjoint_halves

log = logging.getLogger(__name__)

__all__ = ["FID_DEFINITIONS", "TOKENIZER_KEYS", "Halves", "equal_n_floor", "fidelity", "mean_std", "patient_halves"]

FID_DEFINITIONS = {
    "fid": "every held-out real image (N) vs the first generation from its own report (N); the headline, "
    "comparable across runs of this repository at the same N, not with the floor below",
    "fid_equal_n": "held-out patients split into disjoint halves A and B of n images each: real A vs images "
    "generated from B's reports, beside real A vs real B (the floor: what a perfect generator "
    "would score at this n)",
    "tokenizer": "on the same halves, with each held-out image's VQ-GAN reconstruction (the decoding of its own "
    "tokens): real A vs reconstructed B is what a decoder that reproduced every token exactly would score, the "
    "tokenizer's limit; reconstructed A vs generated B beside reconstructed A vs reconstructed B is the "
    "decoder's own gap, inside what the tokenizer can represent",
}

# fid_equal_n's entries with reconstructions: the tokenizer's limit, then the decoder's gap and its floor
TOKENIZER_KEYS = ("real_a_vs_reconstructed_b", "reconstructed_a_vs_generated_b", "reconstructed_a_vs_reconstructed_b")


def _split_column(per_report: pd.DataFrame) -> str:
    """The finest id that keeps a patient's images together: subject_id, else study_id, else dicom_id."""
    return next(c for c in ("subject_id", "study_id", "dicom_id") if c in per_report.columns)


@dataclass(frozen=True)
class Halves:
    """Two seeded halves of the held-out rows, of equal size, that share no ``column`` value (patient)."""

    column: str
    groups: np.ndarray  # (N,) the column's values
    a: np.ndarray  # row indices of half A
    b: np.ndarray  # row indices of half B


def patient_halves(per_report: pd.DataFrame, seed: int) -> Halves:
    """The floor's halves: by subject_id (else the finest id that keeps a patient's images together)."""
    column = _split_column(per_report)
    groups = per_report[column].to_numpy()
    return Halves(column, groups, *disjoint_halves(groups, seed))


def same_text_pairs(per_report: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (a[i], b[i]) of different patients whose report texts are identical, each row used once.

    Within each text, rows are taken in order and a row pairs with the next unused row of another
    patient. Real images of such a pair are what two generations of one prompt should differ like.
    """
    patients = per_report[_split_column(per_report)].to_numpy()
    a: list[int] = []
    b: list[int] = []
    for rows in per_report.groupby("text", sort=False).indices.values():
        unused = list(rows)
        while len(unused) > 1:
            first = unused.pop(0)
            other = next((r for r in unused if patients[r] != patients[first]), None)
            if other is not None:
                unused.remove(other)
                a.append(first)
                b.append(other)
    return np.asarray(a, dtype=int), np.asarray(b, dtype=int)


def same_text_diversity(
    per_report: pd.DataFrame, real: torch.Tensor, gen: list[torch.Tensor], kernel: int | None, scales: int | None
) -> dict[str, Any] | str:
    """MS-SSIM between real images of different patients with the same report text, beside MS-SSIM
    between the two seeds' generations of those same rows: diversity within one prompt, like for like."""
    if "text" not in per_report.columns:
        return "not computed: the per-report set has no text column"
    a, b = same_text_pairs(per_report)
    if not len(a):
        return "not computed: no two patients of the held-out set share a report text"
    rows = np.concatenate([a, b])
    return {
        "n_pairs": len(a),
        "texts": int(per_report["text"].iloc[a].nunique()),
        "real_pairs": asdict(ms_ssim(real[a], real[b], kernel, scales)),
        "between_seeds": asdict(ms_ssim(gen[0][rows], gen[1][rows], kernel, scales)),
    }


def equal_n_floor(
    real: np.ndarray,
    generated: np.ndarray,
    halves: Halves,
    extractor: str,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    reconstructed: np.ndarray | None = None,
) -> dict[str, Any]:
    """FID(real A, generated for B) and FID(real A, real B) on patient-disjoint halves of equal size n;
    with ``reconstructed`` features, also the tokenizer's three (``FID_DEFINITIONS["tokenizer"]``).

    real, generated, reconstructed: (N, F) features, row i = per_report row i (real image, its report's
    generation, its reconstruction); ``halves`` from :func:`patient_halves`. ``seed`` draws the KID
    subsets. A half too small to score gives ``"not computed: <reason>"`` in place of each FID result.
    """
    column, groups, a, b = halves.column, halves.groups, halves.a, halves.b
    result: dict[str, Any] = {
        "split_by": column,
        "n_per_half": len(a),
        "groups_a": len(np.unique(groups[a])),
        "groups_b": len(np.unique(groups[b])),
    }
    pairs = [(real, generated, "real_a_vs_generated_b"), (real, real, "real_a_vs_real_b")]
    if reconstructed is not None:
        sides = [(real, reconstructed), (reconstructed, generated), (reconstructed, reconstructed)]
        pairs += [(first, second, key) for (first, second), key in zip(sides, TOKENIZER_KEYS)]
    if len(a) == 0:
        reason = (
            f"not computed: the held-out set has {len(np.unique(groups))} {column} value(s); two disjoint "
            "halves need at least 2"
        )
        return result | {key: reason for *_, key in pairs}
    kid = (kid_subsets, kid_subset_size, seed)
    for first, second, key in pairs:
        value = compute_fid_or_reason(first[a], second[b], extractor, *kid)
        result[key] = value if isinstance(value, str) else asdict(value)
    return result


def fidelity(
    images: EvaluationImages,
    feats: dict[str, np.ndarray],
    extractor: str,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    msssim_kernel: int | None,
    msssim_scales: int | None,
) -> dict[str, Any]:
    """The fidelity section from the ``real``, ``gen0`` (and ``recon``) features and the images themselves;
    MS-SSIM only when there are two generations per report (settings by resolution unless given)."""
    real, gen, recon = images.real, images.generated, images.reconstructed
    halves = patient_halves(images.per_report, seed)
    fid = compute_fid_or_reason(feats["real"], feats["gen0"], extractor, kid_subsets, kid_subset_size, seed)
    result = {
        "fid": fid if isinstance(fid, str) else asdict(fid),
        "n_real": len(feats["real"]),
        "n_generated": len(feats["gen0"]),
        "fid_equal_n": equal_n_floor(
            feats["real"], feats["gen0"], halves, extractor, kid_subsets, kid_subset_size, seed, feats.get("recon")
        ),
        "definitions": FID_DEFINITIONS,
        "ssim_real_vs_generated": mean_std(ssim(real, gen[0])),
        "resolution": images.side,
    }
    if len(gen) > 1:
        result["ms_ssim_between_seeds"] = asdict(ms_ssim(gen[0], gen[1], msssim_kernel, msssim_scales))
    if len(halves.a):  # the real reference: how alike two real images of different patients are
        pairs = ms_ssim(real[halves.a], real[halves.b], msssim_kernel, msssim_scales)
        result["ms_ssim_real_pairs"] = asdict(pairs)
    if len(gen) > 1:
        result["ms_ssim_same_text"] = same_text_diversity(images.per_report, real, gen, msssim_kernel, msssim_scales)
    if recon is not None:
        result["ssim_real_vs_reconstructed"] = mean_std(ssim(real, recon))
        if len(halves.a):
            pairs = ms_ssim(recon[halves.a], recon[halves.b], msssim_kernel, msssim_scales)
            result["ms_ssim_reconstructed_pairs"] = asdict(pairs)
    _log_fidelity(result, extractor)
    return result


def _log_fidelity(result: dict[str, Any], extractor: str) -> None:
    floor = result["fid_equal_n"]
    log.info(
        "FID %s (%d vs %d), KID %s; equal-N (n = %d per half): generated %s vs real floor %s; SSIM %.3f%s%s [%s]",
        _fid_text(result["fid"]),
        result["n_real"],
        result["n_generated"],
        f"{result['fid']['kid_mean']:.4f}" if not isinstance(result["fid"], str) else "-",
        floor["n_per_half"],
        _fid_text(floor["real_a_vs_generated_b"]),
        _fid_text(floor["real_a_vs_real_b"]),
        result["ssim_real_vs_generated"]["mean"],
        f", MS-SSIM {result['ms_ssim_between_seeds']['value']:.3f}" if "ms_ssim_between_seeds" in result else "",
        f" (real pairs {result['ms_ssim_real_pairs']['value']:.3f})" if "ms_ssim_real_pairs" in result else "",
        extractor,
    )
    if "real_a_vs_reconstructed_b" in floor:
        log.info(
            "the tokenizer's share: real A vs reconstructed B %s; reconstructed A vs generated B %s vs its floor %s; "
            "SSIM of reconstructions %.3f",
            _fid_text(floor["real_a_vs_reconstructed_b"]),
            _fid_text(floor["reconstructed_a_vs_generated_b"]),
            _fid_text(floor["reconstructed_a_vs_reconstructed_b"]),
            result["ssim_real_vs_reconstructed"]["mean"],
        )


def _fid_text(value: Any) -> str:
    return f"{value['fid']:.2f}" if isinstance(value, dict) else str(value)


def mean_std(values: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation (0 for a single value) and count of per-image values."""
    return {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else 0.0, "n": len(values)}
