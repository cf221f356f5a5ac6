"""The tables stage: our numbers beside the paper's, each table with its context line."""

from __future__ import annotations

import json

import pandas as pd

from raygen.data.labels import CLASSES
from raygen.reporting import tables as report_tables
from raygen.stages import tables


def fake_metrics() -> dict:
    def arm(base: float, synthetic: int) -> dict:
        per = {c: base + 0.01 * k for k, c in enumerate(CLASSES) if c != "Fracture"}
        macro = sum(per.values()) / len(per)
        return {
            "auroc": {"metric": "auroc", "per_class": per, "macro": macro, "excluded": ["Fracture"]},
            "auroc_ci": {
                "per_class": {c: [v - 0.05, v + 0.05] for c, v in per.items()},
                "macro": [macro - 0.03, macro + 0.03],
                "level": 0.95,
                "n_boot": 1000,
                "n_clusters": 37,
            },
            "f1": {"per_class": {}, "macro": 0.4, "excluded": []},
            "f1_ci": {"per_class": {}, "macro": [0.35, 0.45]},
            "n_test": 104,
            "train_images": 874 + synthetic,
            "synthetic_train_images": synthetic,
            "optimizer_steps": 165 if synthetic < 500 else 1650,
            "synthetic_use": "pretrain" if synthetic > 500 else "mixed",
            "train_seeds": [0],
        }

    return {
        "profile": "demo",
        "classifier": {"real": arm(0.8, 0), "real+50": arm(0.7, 432), "real+100": arm(0.6, 868)},
        "delta_auroc": {
            "real+50": {"delta": -0.1, "interval": [-0.14, -0.06]},
            "real+100": {"delta": -0.2, "interval": [-0.25, -0.15]},
        },
        "fidelity": {
            "fid": {"fid": 12.345, "n_real": 170, "n_fake": 170},
            "n_real": 170,
            "n_generated": 170,
            "fid_equal_n": {
                "n_per_half": 80,
                "real_a_vs_generated_b": {"fid": 20.5},
                "real_a_vs_real_b": {"fid": 6.25},
            },
            "ms_ssim_between_seeds": {"value": 0.61, "kernel_size": 7, "scales": 4},
            "ms_ssim_real_pairs": {"value": 0.42, "kernel_size": 7, "scales": 4},
            "resolution": 128,
        },
        "conditional_fidelity": {
            "augmentation_prompts": {"macro": 0.55, "prompts": "impression"},
            "per_report_generated": {"macro": 0.66},
            "per_report_real": {"macro": 0.9},
            "classifier": "raygen-demo-densenet121:0123456789ab",
        },
        "memorisation": {"share_below": 0.012, "n_below": 12, "n_synthetic": 1000},
        "extractor": "raygen-classifier-penultimate:abc123",
        "classifier_resolution": 64,
    }


def test_tables_hold_ours_and_the_papers(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(fake_metrics()))
    assert (
        tables.main(["--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path / "t"), "--profile", "demo"])
        == 0
    )
    t1 = pd.read_csv(tmp_path / "t" / "table1.csv")
    assert list(t1["paper avg AUROC"]) == [0.71, 0.68, 0.705]
    m = fake_metrics()["classifier"]["real"]["auroc"]["macro"]
    assert t1.loc[0, "our avg AUROC [95% CI]"] == f"{m:.3f} [{m - 0.03:.3f}, {m + 0.03:.3f}]"
    assert (
        t1.loc[2, "our training images"] == "874 real + 432 synthetic" and t1.loc[0, "classes left out"] == "Fracture"
    )
    assert t1.loc[1, "our training images"] == "874 real + 868 synthetic (synthetic first, then real)"
    assert list(t1["our optimizer steps"]) == ["165", "1,650", "165"]
    assert list(t1["our AUROC difference vs real only [95% CI]"]) == [
        "reference",
        "-0.200 [-0.250, -0.150]",
        "-0.100 [-0.140, -0.060]",
    ]
    t2 = pd.read_csv(tmp_path / "t" / "table2.csv")
    assert list(t2.columns) == ["metric", "RoentGen", "UniXGen", "RayGen (paper)", "RayGen (ours)"]
    assert t2.loc[0, "RayGen (paper)"] == "7.90"
    assert t2.loc[0, "RayGen (ours)"] == "12.35 (170 real vs 170 generated from their own reports)"
    assert t2.loc[5, "RayGen (ours)"] == "20.50 (floor 6.25), n = 80 per half"
    assert t2.loc[5, "UniXGen"] == "not measured"
    assert len(t2) == 6, "no tokenizer row without reconstructions"
    assert "0.012 (12 / 1000)" == t2.loc[4, "RayGen (ours)"] and t2.loc[4, "RoentGen"] == "not measured"
    assert t2.loc[3, "RayGen (ours)"].startswith("0.550 (training-impression prompts)"), "the kind the manifest had"
    assert "0.660 per-report vs 0.900" in t2.loc[3, "RayGen (ours)"]
    assert t2.loc[1, "RayGen (ours)"].endswith("real pairs of different patients 0.420")
    assert t2.loc[3, "RayGen (ours)"].endswith("judge raygen-demo-densenet121:0123456789ab")
    t3 = pd.read_csv(tmp_path / "t" / "table3.csv")
    assert len(t3) == 10 and t3.set_index("class").loc["Fracture", "ours real"] == "no positives"
    assert t3.set_index("class").loc["Edema", "paper real+100"] == 0.8547
    md = (tmp_path / "t" / "tables.md").read_text()
    assert md.count("## Table") == 3 and md.count("raygen-classifier-penultimate:abc123 on 170 real") == 3
    assert "104 real test images of 37 patients" in md
    note = (tmp_path / "t" / "table1.md").read_text()
    assert "over the 37 test patients: each of 1000 resamples draws patients with replacement" in note
    assert "is paired" in note
    assert "Each arm is 1 training run (seed 0)" in note
    assert "disjoint halves A and B" in (tmp_path / "t" / "table2.md").read_text()


def test_small_sets_and_old_metrics_show_their_reason():
    m = fake_metrics()
    m["fidelity"]["fid_equal_n"]["real_a_vs_real_b"] = "not computed: 1 real vs 1 generated image(s)"
    assert report_tables.table2(m, tables.TablesParams()).loc[5, "RayGen (ours)"].startswith("not computed: 1 real")
    del m["delta_auroc"]
    for r in m["classifier"].values():
        r["train_seeds"] = None
    assert list(report_tables.table1(m, tables.TablesParams())["our AUROC difference vs real only [95% CI]"]) == [
        "reference",
        "n/a",
        "n/a",
    ]
    assert "its seed was not recorded" in report_tables.table1_note(m)


def test_markdown_escapes_pipes():
    text = report_tables.markdown(pd.DataFrame({"a": ["x|y"], "b": [1]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x/y | 1 |"]


def test_a_fid_too_small_to_compute_shows_its_reason(tmp_path):
    metrics = fake_metrics()
    metrics["fidelity"]["fid"] = "not computed: 1 real vs 1 generated image(s); FID and KID need at least 2"
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert (
        tables.main(["--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path / "t"), "--profile", "demo"])
        == 0
    )
    assert "not computed: 1 real vs 1 generated" in (tmp_path / "t" / "table2.md").read_text()


def test_table2_shows_the_tokenizers_limit_beside_the_decoders_gap(tmp_path):
    m = fake_metrics()
    m["fidelity"]["fid_equal_n"] |= {
        "real_a_vs_reconstructed_b": {"fid": 15.5},
        "reconstructed_a_vs_generated_b": {"fid": 11.25},
        "reconstructed_a_vs_reconstructed_b": {"fid": 5.5},
    }
    m["fidelity"]["ssim_real_vs_reconstructed"] = {"mean": 0.81, "std": 0.02, "n": 170}
    m["fidelity"]["ms_ssim_reconstructed_pairs"] = {"value": 0.47, "kernel_size": 7, "scales": 4}
    m["conditional_fidelity"]["per_report_reconstructed"] = {"macro": 0.85}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert (
        tables.main(["--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path / "t"), "--profile", "demo"])
        == 0
    )
    t2 = pd.read_csv(tmp_path / "t" / "table2.csv").set_index("metric")
    row = t2.loc[report_tables.TOKENIZER_ROW]
    assert row["RayGen (ours)"] == "FID 15.50; decoder 11.25 (floor 5.50); SSIM 0.810"
    assert row["RayGen (paper)"] == "not measured"
    ms = t2.loc["MS-SSIM (lower = more diverse)", "RayGen (ours)"]
    assert ms.endswith("real pairs of different patients 0.420, their reconstructions 0.470")
    m["fidelity"]["ms_ssim_same_text"] = {
        "n_pairs": 26,
        "texts": 20,
        "real_pairs": {"value": 0.453},
        "between_seeds": {"value": 0.747},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert tables.main(["--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path / "u")]) == 0
    ms = pd.read_csv(tmp_path / "u" / "table2.csv").set_index("metric").loc["MS-SSIM (lower = more diverse)"]
    assert ms["RayGen (ours)"].endswith(
        "; reports with the same text (26 pairs of patients): real 0.453, two seeds 0.747"
    )
    assert "and 0.850 on their reconstructions" in t2.loc["conditional fidelity (macro AUROC)", "RayGen (ours)"]
    assert "reconstructed A against generated B" in (tmp_path / "t" / "table2.md").read_text()
