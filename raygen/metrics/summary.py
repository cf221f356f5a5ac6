"""The evaluation's headline numbers, flat, and the JSON hygiene both metrics files go through."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["finite", "summary"]

# metrics.json fid_equal_n key -> summary.json column fid_equal_n/<name> (raygen.metrics.fidelity)
EQUAL_N_COLUMNS = {
    "real_a_vs_generated_b": "generated",
    "real_a_vs_real_b": "real_floor",
    "real_a_vs_reconstructed_b": "reconstructed",
    "reconstructed_a_vs_generated_b": "generated_vs_reconstructed",
    "reconstructed_a_vs_reconstructed_b": "reconstructed_floor",
}


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of metrics.json, flat (``dvc metrics show`` / ``dvc exp show`` columns)."""
    out: dict[str, Any] = {}
    for arm, r in metrics["classifier"].items():
        out[f"{arm}/macro_auroc"] = r["auroc"]["macro"]
        out[f"{arm}/macro_auroc_low"], out[f"{arm}/macro_auroc_high"] = r["auroc_ci"]["macro"]
        out[f"{arm}/macro_f1"] = r["f1"]["macro"]
    for arm, d in metrics.get("delta_auroc", {}).items():
        out[f"delta_auroc/{arm}"] = d["delta"]
        out[f"delta_auroc/{arm}_low"], out[f"delta_auroc/{arm}_high"] = d["interval"]
    fid = metrics["fidelity"]
    headline = fid["fid"] if isinstance(fid["fid"], dict) else {}
    out["fid"], out["kid"] = headline.get("fid"), headline.get("kid_mean")
    for key, name in EQUAL_N_COLUMNS.items():
        if key in fid["fid_equal_n"]:
            value = fid["fid_equal_n"][key]
            out[f"fid_equal_n/{name}"] = value["fid"] if isinstance(value, dict) else None
    out["ssim"] = fid["ssim_real_vs_generated"]["mean"]
    if "ms_ssim_between_seeds" in fid:
        out["ms_ssim"] = fid["ms_ssim_between_seeds"]["value"]
    for key in ("ms_ssim_real_pairs", "ms_ssim_reconstructed_pairs"):
        if key in fid:
            out[key] = fid[key]["value"]
    if isinstance(fid.get("ms_ssim_same_text"), dict):
        out["ms_ssim_same_text/real_pairs"] = fid["ms_ssim_same_text"]["real_pairs"]["value"]
        out["ms_ssim_same_text/between_seeds"] = fid["ms_ssim_same_text"]["between_seeds"]["value"]
    if "ssim_real_vs_reconstructed" in fid:
        out["ssim_reconstructed"] = fid["ssim_real_vs_reconstructed"]["mean"]
    cond = metrics["conditional_fidelity"]
    out["conditional_fidelity/augmentation"] = cond["augmentation_prompts"]["macro"]
    if "per_report_generated" in cond:
        out["conditional_fidelity/per_report"] = cond["per_report_generated"]["macro"]
        out["conditional_fidelity/per_report_real"] = cond["per_report_real"]["macro"]
    if "per_report_reconstructed" in cond:
        out["conditional_fidelity/per_report_reconstructed"] = cond["per_report_reconstructed"]["macro"]
    out["memorisation/share_below"] = metrics["memorisation"]["share_below"]
    out["extractor"] = metrics["extractor"]
    return finite({k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in out.items()})


def finite(obj: Any) -> Any:
    """NaN / inf -> None (JSON has neither; DVC and MLflow choke on them)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
