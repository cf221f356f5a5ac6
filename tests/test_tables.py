"""The tables stage: our numbers beside the paper's, each table with its context line."""

from __future__ import annotations

import json

import pandas as pd

from raygen import tables
from raygen.data.labels import CLASSES


def fake_metrics() -> dict:
    def arm(base: float, synthetic: int) -> dict:
        per = {c: base + 0.01 * k for k, c in enumerate(CLASSES) if c != "Fracture"}
        macro = sum(per.values()) / len(per)
        return {
            "auroc": {"metric": "auroc", "per_class": per, "macro": macro, "excluded": ["Fracture"]},
            "auroc_ci": {"per_class": {c: [v - 0.05, v + 0.05] for c, v in per.items()}, "macro": [macro - 0.03, macro + 0.03]},
            "f1": {"per_class": {}, "macro": 0.4, "excluded": []},
            "f1_ci": {"per_class": {}, "macro": [0.35, 0.45]},
            "n_test": 104, "train_images": 874 + synthetic, "synthetic_train_images": synthetic,
            "optimizer_steps": 165 if synthetic < 500 else 1650,
        }

    return {
        "profile": "demo",
        "classifier": {"real": arm(0.8, 0), "real+50": arm(0.7, 432), "real+100": arm(0.6, 868)},
        "fidelity": {"fid": {"fid": 12.345, "n_real": 170, "n_fake": 170}, "fid_real_halves": {"fid": 3.21},
                     "ms_ssim_between_seeds": {"value": 0.61, "kernel_size": 7, "scales": 4}, "resolution": 128},
        "conditional_fidelity": {"augmentation_prompts": {"macro": 0.55},
                                 "per_report_generated": {"macro": 0.66}, "per_report_real": {"macro": 0.9}},
        "memorisation": {"share_below": 0.012, "n_below": 12, "n_synthetic": 1000},
        "extractor": "raygen-classifier-penultimate:abc123", "classifier_resolution": 64,
    }


def test_tables_hold_ours_and_the_papers(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(fake_metrics()))
    assert tables.main(["--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path / "t"),
                        "--profile", "demo"]) == 0
    t1 = pd.read_csv(tmp_path / "t" / "table1.csv")
    assert list(t1["paper avg AUROC"]) == [0.71, 0.68, 0.705]
    m = fake_metrics()["classifier"]["real"]["auroc"]["macro"]
    assert t1.loc[0, "our avg AUROC [95% CI]"] == f"{m:.3f} [{m - 0.03:.3f}, {m + 0.03:.3f}]"
    assert t1.loc[2, "our training images"] == "874 real + 432 synthetic" and t1.loc[0, "classes left out"] == "Fracture"
    assert list(t1["our optimizer steps"]) == ["165", "1,650", "165"]
    t2 = pd.read_csv(tmp_path / "t" / "table2.csv")
    assert list(t2.columns) == ["metric", "RoentGen", "UniXGen", "RayGen (paper)", "RayGen (ours)"]
    assert t2.loc[0, "RayGen (paper)"] == "7.90" and t2.loc[0, "RayGen (ours)"].startswith("12.35")
    assert "0.012 (12 / 1000)" == t2.loc[4, "RayGen (ours)"] and t2.loc[4, "RoentGen"] == "not measured"
    assert "0.660 per-report vs 0.900" in t2.loc[3, "RayGen (ours)"]
    t3 = pd.read_csv(tmp_path / "t" / "table3.csv")
    assert len(t3) == 10 and t3.set_index("class").loc["Fracture", "ours real"] == "no positives"
    assert t3.set_index("class").loc["Edema", "paper real+100"] == 0.8547
    md = (tmp_path / "t" / "tables.md").read_text()
    assert md.count("## Table") == 3 and md.count("raygen-classifier-penultimate:abc123 on 170 real") == 3


def test_markdown_escapes_pipes():
    text = tables.markdown(pd.DataFrame({"a": ["x|y"], "b": [1]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x/y | 1 |"]
