"""Tests of the cohort stage: MIMIC readers, label rules, hold-out splits, manifests and main()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raygen.config import ConfigError, from_dict
from raygen.data import cohort as C
from raygen.data import mimic
from raygen.data.labels import CHEXPERT_LABELS, CLASSES, DROPPED
from raygen.stages import cohort as stage

VIEWS = ("AP", "AP", "AP", "PA", "PA", "LATERAL", "LL", "")


# ------------------------------------------------------------------------------------- fixtures


def dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))


def synth_release(
    rng: np.random.Generator, n_patients: int = 40, groups: tuple[int, ...] = (10, 11, 12)
) -> dict[str, pd.DataFrame]:
    """A random MIMIC-shaped release: metadata, split, chexpert labels and prompts (exact schemas)."""
    meta, labels, prompts, split = [], [], [], []
    subjects = rng.choice(np.arange(1_000_000), size=n_patients, replace=False)
    study_ids = iter(rng.choice(np.arange(50_000_000, 60_000_000), size=n_patients * 4, replace=False))
    for i, s in enumerate(subjects):
        sid = int(f"{groups[i % len(groups)]}{int(s):06d}")
        official = rng.choice(["train", "validate", "test"], p=[0.8, 0.1, 0.1])
        for _ in range(rng.integers(1, 4)):
            study = int(next(study_ids))
            for _ in range(rng.integers(1, 4)):
                d = dicom_id(rng)
                meta.append(
                    {
                        "dicom_id": d,
                        "subject_id": sid,
                        "study_id": study,
                        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                        "ViewPosition": str(rng.choice(VIEWS)),
                        "Rows": 3056,
                        "Columns": 2544,
                        "StudyDate": 21800506,
                        "StudyTime": 80556.875,
                        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                        "ViewCodeSequence_CodeMeaning": "postero-anterior",
                        "PatientOrientationCodeSequence_CodeMeaning": "Erect",
                    }
                )
                split.append({"dicom_id": d, "study_id": study, "subject_id": sid, "split": official})
            if rng.random() < 0.9:  # some studies have no label row
                values = rng.choice([1.0, 0.0, -1.0, np.nan], p=[0.06, 0.2, 0.02, 0.72], size=len(CHEXPERT_LABELS))
                labels.append({"subject_id": sid, "study_id": study, **dict(zip(CHEXPERT_LABELS, values))})
            if rng.random() < 0.9:  # some reports are missing
                text = "" if rng.random() < 0.05 else f"impression of study {study}"
                prompts.append({"study_id": study, "subject_id": sid, "text": text, "source": "impression"})
    return {
        "metadata": pd.DataFrame(meta, columns=list(mimic.METADATA_COLUMNS)),
        "split": pd.DataFrame(split, columns=list(mimic.SPLIT_COLUMNS)),
        "labels": pd.DataFrame(labels, columns=list(mimic.LABEL_COLUMNS)),
        "prompts": pd.DataFrame(prompts, columns=list(mimic.PROMPT_COLUMNS)),
    }


def write_release(root: Path, release: dict[str, pd.DataFrame], missing: set[str] = frozenset()) -> Path:
    """Write the CSVs (gzipped, as PhysioNet ships them) and empty JPG files except ``missing`` dicom ids."""
    jpg = root / "mimic-cxr-jpg" / "2.0.0"
    jpg.mkdir(parents=True)
    release["metadata"].to_csv(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    release["split"].to_csv(jpg / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    release["labels"].to_csv(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    release["labels"].to_csv(jpg / "mimic-cxr-2.0.0-negbio.csv.gz", index=False)
    for row in release["metadata"].itertuples():
        if row.dicom_id in missing:
            continue
        path = jpg / mimic.image_relpath(row.subject_id, row.study_id, row.dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (root / "sections").mkdir()
    release["prompts"].to_csv(root / "sections" / "prompts.csv", index=False)
    return jpg


def build(release: dict[str, pd.DataFrame], **overrides) -> C.Cohorts:
    kwargs = dict(
        classifier_views=["AP", "PA"],
        classifier_groups=None,
        uncertain="drop",
        split_fractions=[0.8, 0.1, 0.1],
        generator_views=["AP"],
        generator_groups=None,
        prompt_sources=None,
        generator_val_fraction=0.1,
        fid_fraction=1.0,
        seed=0,
    )
    kwargs.update(overrides)
    return C.build_cohorts(release["metadata"], release["labels"], release["prompts"], **kwargs)


def label_row(study: int, subject: int = 10000001, **values: float) -> dict:
    row = {"subject_id": subject, "study_id": study, **{name: np.nan for name in CHEXPERT_LABELS}}
    row.update({k.replace("_", " "): v for k, v in values.items()})
    return row


def labelled_images(rows: list[dict]) -> pd.DataFrame:
    """One image per label row, already joined (what apply_label_rules receives)."""
    frame = pd.DataFrame(rows, columns=list(mimic.LABEL_COLUMNS))
    return frame.assign(dicom_id=[f"d{i}" for i in range(len(frame))])


# ---------------------------------------------------------------------------------------- mimic


def test_paths_follow_the_release_layout():
    d = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
    assert mimic.image_relpath(10000032, 50414267, d) == f"files/p10/p10000032/s50414267/{d}.jpg"
    assert mimic.report_relpath(10000032, 50414267) == "files/p10/p10000032/s50414267.txt"
    frame = pd.DataFrame({"dicom_id": [d], "subject_id": [10000032], "study_id": [50414267]})
    assert mimic.image_relpaths(frame).tolist() == [mimic.image_relpath(10000032, 50414267, d)]
    assert mimic.group_folders(pd.Series([19999999])).tolist() == ["p19"]


def test_readers_keep_dtypes_and_reject_other_schemas(tmp_path):
    rel = synth_release(np.random.default_rng(0), n_patients=5)
    rel["metadata"].loc[0, "ViewPosition"] = ""
    jpg = write_release(tmp_path, rel)
    meta = mimic.read_metadata(mimic.csv_path(jpg, "metadata"))
    assert tuple(meta.columns) == mimic.METADATA_COLUMNS
    assert meta["subject_id"].dtype == np.int64 and meta["StudyTime"].dtype == np.float64
    assert meta.loc[0, "ViewPosition"] == ""  # empty stays an empty string, not NaN
    labels = mimic.read_labels(mimic.csv_path(jpg, "chexpert"))
    assert labels[list(CHEXPERT_LABELS)].isna().any().any()  # blank is NaN
    swapped = rel["split"][["study_id", "dicom_id", "subject_id", "split"]]
    swapped.to_csv(jpg / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(mimic.MimicFormatError, match="expected: dicom_id, study_id"):
        mimic.read_split(mimic.csv_path(jpg, "split"))
    bad = rel["labels"].copy()
    bad.loc[0, "Edema"] = 2.0
    bad.to_csv(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    with pytest.raises(mimic.MimicFormatError, match="Edema"):
        mimic.read_labels(mimic.csv_path(jpg, "chexpert"))
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-metadata.csv.gz"):
        mimic.csv_path(tmp_path, "metadata")


# ----------------------------------------------------------------------------------- label rules


def test_uncertain_in_any_label_drops_the_study_even_in_dropped_columns():
    frame = labelled_images(
        [
            label_row(50000001, Edema=-1.0),
            label_row(50000002, Support_Devices=-1.0),  # -1 in a column that is removed later
            label_row(50000003, Edema=1.0),
        ]
    )
    ledger = C.Ledger()
    out = C.apply_label_rules(frame, uncertain="drop", ledger=ledger, cohort="classifier")
    assert out["study_id"].tolist() == [50000003]
    assert ledger.rules[0].images_dropped == 2


def test_blank_reads_as_zero_and_classes_are_int_in_order():
    frame = labelled_images([label_row(50000001, Cardiomegaly=1.0), label_row(50000002)])
    ledger = C.Ledger()
    out = C.apply_label_rules(frame, uncertain="drop", ledger=ledger, cohort="classifier")
    assert [c for c in out.columns if c in CHEXPERT_LABELS] == list(CLASSES)
    assert not set(DROPPED) & set(out.columns)
    assert all(out[c].dtype == np.int64 for c in CLASSES)
    assert out[list(CLASSES)].to_numpy().tolist() == [[1 if c == "Cardiomegaly" else 0 for c in CLASSES], [0] * 10]
    assert ledger.notes["classifier"]["blank_label_cells_read_as_0_per_study"] == 14 + 13


@pytest.mark.parametrize("name", DROPPED)
def test_positive_dropped_label_drops_the_study(name):
    frame = labelled_images(
        [
            label_row(50000001, **{name.replace(" ", "_"): 1.0, "Edema": 1.0}),
            label_row(50000002, **{name.replace(" ", "_"): 0.0}),
        ]
    )
    ledger = C.Ledger()
    out = C.apply_label_rules(frame, uncertain="drop", ledger=ledger, cohort="classifier")
    assert out["study_id"].tolist() == [50000002]
    rule = next(r for r in ledger.rules if r.rule == f"not positive for {name}")
    assert rule.images_dropped == 1


def test_uncertain_zero_and_one_policies():
    frame = labelled_images([label_row(50000001, Edema=-1.0), label_row(50000002, Support_Devices=-1.0)])
    zero = C.apply_label_rules(frame, uncertain="zero", ledger=C.Ledger(), cohort="c")
    assert zero["study_id"].tolist() == [50000001, 50000002] and zero["Edema"].tolist() == [0, 0]
    one = C.apply_label_rules(frame, uncertain="one", ledger=C.Ledger(), cohort="c")
    assert one["study_id"].tolist() == [50000001] and one["Edema"].tolist() == [1]  # -1 device -> positive -> dropped


# ------------------------------------------------------------------------------ images and pairs


def meta_frame(rows: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    """(dicom_id, subject_id, study_id, view) rows as a metadata frame."""
    frame = pd.DataFrame(rows, columns=["dicom_id", "subject_id", "study_id", "ViewPosition"])
    for col in mimic.METADATA_COLUMNS:
        if col not in frame:
            frame[col] = ""
    return frame[list(mimic.METADATA_COLUMNS)]


def test_views_and_groups_filter():
    meta = meta_frame(
        [
            ("a", 10000001, 50000001, "AP"),
            ("b", 10000001, 50000001, "PA"),
            ("c", 10000001, 50000001, "LATERAL"),
            ("d", 11000001, 50000002, ""),
            ("e", 11000001, 50000002, "AP"),
        ]
    )
    ledger = C.Ledger()
    out = C.select_images(meta, views=["AP", "PA"], groups=None, ledger=ledger, cohort="x")
    assert out["dicom_id"].tolist() == ["a", "b", "e"]
    assert out["path"].iloc[0] == "files/p10/p10000001/s50000001/a.jpg"
    out = C.select_images(meta, views=["AP", "PA"], groups=["p11"], ledger=ledger, cohort="x")
    assert out["dicom_id"].tolist() == ["e"]


def test_generator_takes_the_first_existing_ap_image_per_study():
    meta = meta_frame(
        [
            ("lat", 10000001, 50000001, "LATERAL"),
            ("ap1", 10000001, 50000001, "AP"),
            ("pa", 10000001, 50000001, "PA"),
            ("ap2", 10000001, 50000001, "AP"),
            ("gone", 10000001, 50000002, "AP"),
            ("ap3", 10000001, 50000002, "AP"),
        ]
    )
    prompts = pd.DataFrame(
        {
            "study_id": [50000001, 50000002],
            "subject_id": [10000001] * 2,
            "text": ["one", "two"],
            "source": ["impression"] * 2,
        }
    )
    pairs = C.prompt_pairs(meta, prompts, views=["AP"], sources=None, ledger=C.Ledger())
    assert pairs["dicom_id"].tolist() == ["ap1", "gone"]
    exists = lambda paths: np.array(["gone" not in p for p in paths])  # noqa: E731
    ledger = C.Ledger()
    pairs = C.prompt_pairs(meta, prompts, views=["AP"], sources=None, ledger=ledger, exists=exists)
    assert pairs["dicom_id"].tolist() == ["ap1", "ap3"]  # a missing first image falls back to the next AP
    assert pairs["text"].tolist() == ["one", "two"]
    assert ledger.notes["pairs"]["images_missing_on_disk"] == 1


def test_missing_prompts_and_sources_are_dropped_and_counted():
    meta = meta_frame([(f"d{i}", 10000001, 50000001 + i, "AP") for i in range(4)])
    prompts = pd.DataFrame(
        {
            "study_id": [50000001, 50000002, 50000003],
            "subject_id": [10000001] * 3,
            "text": ["ok", "  ", "from findings"],
            "source": ["impression", "impression", "findings"],
        }
    )
    ledger = C.Ledger()
    pairs = C.prompt_pairs(meta, prompts, views=["AP"], sources=["impression"], ledger=ledger)
    assert pairs["study_id"].tolist() == [50000001]
    dropped = {r.rule: r.images_dropped for r in ledger.for_cohort("pairs")}
    assert dropped["study has a prompt row"] == 1
    assert dropped["prompt text is not empty"] == 1
    assert dropped["prompt section in ['impression']"] == 1


# ------------------------------------------------------------------------------------- splitting


def test_split_sizes_are_exact_and_fill_every_split():
    assert C.split_sizes(200, [0.8, 0.1, 0.1]) == [160, 20, 20]
    assert C.split_sizes(3, [0.8, 0.1, 0.1]) == [1, 1, 1]
    assert sum(C.split_sizes(37, [0.8, 0.1, 0.1])) == 37
    assert C.split_sizes(5, [1.0, 0.0]) == [5, 0]
    with pytest.raises(C.CohortError, match="cannot fill"):
        C.split_sizes(2, [0.8, 0.1, 0.1])


def test_split_patients_is_deterministic_and_roughly_proportional():
    ids = np.arange(10_000_000, 10_001_000)
    a = C.split_patients(ids, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, salt="classifier")
    b = C.split_patients(ids[::-1], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, salt="classifier")
    c = C.split_patients(ids, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=4, salt="classifier")
    pd.testing.assert_series_equal(a, b)  # input order does not matter
    assert (a != c).any()
    assert a.value_counts().to_dict() == {"train": 800, "val": 100, "test": 100}


@pytest.mark.parametrize("seed", range(6))
def test_hold_out_is_patient_disjoint_on_random_releases(seed):
    rng = np.random.default_rng(seed)
    release = synth_release(rng, n_patients=int(rng.integers(30, 60)))
    fid_fraction = float(rng.choice([0.5, 1.0]))
    cohorts = build(
        release, seed=seed, fid_fraction=fid_fraction, classifier_groups=["p10", "p11"] if seed % 2 else None
    )
    sets = C.patient_sets(cohorts.classifier, cohorts.generator, cohorts.fid)
    for a, b in C.MUST_BE_DISJOINT:
        assert not sets[a] & sets[b], (a, b)
    held = sets["classifier_val"] | sets["classifier_test"]
    generator = sets["generator_train"] | sets["generator_val"]
    assert not generator & held and sets["fid"] <= held
    # every patient of a split lies wholly in that split
    assert cohorts.classifier.groupby("subject_id")["split"].nunique().max() == 1
    assert cohorts.generator.groupby("subject_id")["split"].nunique().max() == 1
    # one image per study in the pair sets, only AP, every one with a prompt
    for frame in (cohorts.generator, cohorts.fid):
        assert not frame["study_id"].duplicated().any()
        assert set(frame["view"]) == {"AP"} and (frame["text"].str.strip() != "").all()
    assert set(cohorts.classifier["view"]) <= {"AP", "PA"}
    # nobody is lost: held-out patients with a pair are FID candidates, everyone else is generator
    pairs = C.prompt_pairs(release["metadata"], release["prompts"], views=["AP"], sources=None, ledger=C.Ledger())
    with_pairs = set(pairs["subject_id"])
    assert generator == with_pairs - held
    if fid_fraction == 1.0:
        assert sets["fid"] == held & with_pairs
    else:
        assert 0 < len(sets["fid"]) < len(held & with_pairs) or len(held & with_pairs) == 1


def test_classifier_recipe_matches_a_direct_computation():
    release = synth_release(np.random.default_rng(11), n_patients=50)
    cohorts = build(release)
    labels = release["labels"].set_index("study_id")
    meta = release["metadata"]
    frontal = meta[meta["ViewPosition"].isin(["AP", "PA"]) & meta["study_id"].isin(labels.index)]
    lab = labels.loc[frontal["study_id"], list(CHEXPERT_LABELS)]
    ok = ~(lab == -1).any(axis=1).to_numpy() & ~(lab[list(DROPPED)] == 1).any(axis=1).to_numpy()
    expected = frontal.loc[ok]
    got = cohorts.classifier.set_index("dicom_id").sort_index()
    assert sorted(expected["dicom_id"]) == got.index.tolist()
    truth = labels.loc[expected.set_index("dicom_id").loc[got.index, "study_id"], list(CLASSES)].fillna(0)
    np.testing.assert_array_equal(got[list(CLASSES)].to_numpy(), truth.to_numpy().astype(int))


def test_build_is_deterministic_and_seed_changes_splits():
    release = synth_release(np.random.default_rng(5), n_patients=60)
    a, b, c = build(release, seed=1), build(release, seed=1), build(release, seed=2)
    for name in ("classifier", "generator", "fid"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.classifier["split"].equals(c.classifier["split"])


def test_official_split_maps_validate_to_val():
    release = synth_release(np.random.default_rng(2), n_patients=40)
    cohorts = build(release, official_split=release["split"])
    official = release["split"].drop_duplicates("subject_id").set_index("subject_id")["split"]
    got = cohorts.classifier.drop_duplicates("subject_id").set_index("subject_id")["split"]
    assert (got == official.loc[got.index].replace({"validate": "val"})).all()


def test_rule_that_empties_a_cohort_is_named():
    release = synth_release(np.random.default_rng(1), n_patients=20)
    with pytest.raises(C.CohortError, match=r"classifier cohort is empty after the rule 'group folder in \['p19'\]'"):
        build(release, classifier_groups=["p19"])
    with pytest.raises(C.CohortError, match="pairs cohort is empty after the rule 'prompt section in"):
        build(release, prompt_sources=["comparison"])


def test_ground_truth_columns_join_per_image_or_per_study():
    frame = pd.DataFrame(
        {"dicom_id": ["a", "b", "c"], "subject_id": [10000001] * 3, "study_id": [50000001, 50000001, 50000002]}
    )
    truth = pd.DataFrame({"subject_id": [10000001], "study_id": [50000001], "Edema": [1], "laterality": ["left"]})
    out, missing = C.attach_ground_truth(frame, truth)
    assert out["true_Edema"].tolist()[:2] == [1, 1] and pd.isna(out["true_Edema"].iloc[2])
    assert out["true_laterality"].tolist()[:2] == ["left", "left"] and missing == 1
    truth_img = truth.assign(dicom_id=["b"])
    out, missing = C.attach_ground_truth(frame, truth_img)
    assert out["true_Edema"].isna().tolist() == [True, False, True] and missing == 2


def test_params_validation():
    with pytest.raises(ConfigError, match="split_fractions"):
        from_dict(stage.CohortParams, {"split_fractions": [0.5, 0.1, 0.1]})
    with pytest.raises(ConfigError, match="fid_fraction"):
        from_dict(stage.CohortParams, {"fid_fraction": 0.0})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(stage.CohortParams, {"groups": ["p10"]})
    assert from_dict(stage.CohortParams, {"classifier_groups": ["p10"]}).classifier_groups == ["p10"]


# -------------------------------------------------------------------------------------- main()


def write_params(path: Path, **cohort) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"profile": "demo", "cohort": cohort}))
    return path


def ground_truth(release: dict[str, pd.DataFrame], rng: np.random.Generator) -> pd.DataFrame:
    studies = release["metadata"].drop_duplicates("study_id")[["subject_id", "study_id"]]
    values = rng.integers(0, 2, size=(len(studies), len(CLASSES)))
    truth = pd.concat([studies.reset_index(drop=True), pd.DataFrame(values, columns=list(CLASSES))], axis=1)
    return truth.assign(effusion_side=rng.choice(["left", "right", ""], size=len(truth)))


def test_main_writes_manifests_and_counts(tmp_path):
    rng = np.random.default_rng(7)
    release = synth_release(rng, n_patients=60)
    meta = release["metadata"]
    missing = set(meta.loc[meta["ViewPosition"] == "AP", "dicom_id"].iloc[:3])
    jpg = write_release(tmp_path, release, missing=missing)
    ground_truth(release, rng).to_csv(tmp_path / "demo-ground-truth.csv", index=False)
    params = write_params(tmp_path / "params.yaml", generator_val_fraction=0.1, seed=3)
    out = tmp_path / "results" / "cohort"
    rc = stage.main(
        [
            "--jpg-root",
            str(jpg),
            "--sections",
            str(tmp_path / "sections" / "prompts.csv"),
            "--out",
            str(out),
            "--ground-truth",
            str(tmp_path / "demo-ground-truth.csv"),
            "--params",
            str(params),
            "--log",
            str(tmp_path / "logs" / "cohort.log"),
        ]
    )
    assert rc == 0
    gen = pd.read_csv(out / "generator.csv")
    fid = pd.read_csv(out / "fid.csv")
    cls = pd.read_csv(out / "classifier.csv")
    assert list(gen.columns[:7]) == list(C.PAIR_COLUMNS) and list(fid.columns[:7]) == list(C.PAIR_COLUMNS)
    assert list(cls.columns[:16]) == list(C.CLASSIFIER_COLUMNS)
    assert set(gen["split"]) == {"train", "val"} and set(fid["split"]) == {"fid"}
    assert set(cls["split"]) == {"train", "val", "test"}
    assert set(np.unique(cls[list(CLASSES)].to_numpy())) <= {0, 1}
    for frame in (gen, fid, cls):
        assert {f"true_{c}" for c in CLASSES} | {"true_effusion_side"} <= set(frame.columns)
        assert (jpg / frame["path"].iloc[0]).is_file()
        assert not frame["dicom_id"].isin(missing).any()

    counts = json.loads((out / "counts.json").read_text())
    assert set(counts["patient_overlap"].values()) == {0}
    assert counts["classifier"]["images"] == len(cls) and counts["fid"]["images"] == len(fid)
    assert sum(s["patients"] for s in counts["generator"]["splits"].values()) == gen["subject_id"].nunique()
    test_split = counts["classifier"]["splits"]["test"]
    assert test_split["images"] == (cls["split"] == "test").sum()
    assert test_split["positives"]["Edema"] == cls.loc[cls["split"] == "test", "Edema"].sum()
    rules = {r["rule"]: r for r in counts["rules"]["classifier"]}
    n_unlabelled = (
        ~meta.loc[meta["ViewPosition"].isin(["AP", "PA"]) & ~meta["dicom_id"].isin(missing), "study_id"].isin(
            release["labels"]["study_id"]
        )
    ).sum()
    assert rules["study has a label row"]["images_dropped"] == n_unlabelled
    assert rules["image file exists"]["images_dropped"] == len(missing)
    pair_rules = {r["rule"]: r for r in counts["rules"]["pairs"]}
    assert pair_rules["image file exists"]["images_dropped"] == len(missing)
    assert pair_rules["study has a prompt row"]["studies_dropped"] > 0
    assert counts["ground_truth_rows_missing"] == {"classifier": 0, "generator": 0, "fid": 0}
    assert counts["params"]["seed"] == 3
    md = (out / "counts.md").read_text()
    assert "| classifier | test |" in md and "must all be 0" in md
    assert "patient overlap" in (tmp_path / "logs" / "cohort.log").read_text()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_main_without_a_ground_truth_file_writes_no_truth_columns(tmp_path):
    release = synth_release(np.random.default_rng(9), n_patients=30)
    jpg = write_release(tmp_path, release)
    out = tmp_path / "out"
    rc = stage.main(
        [
            "--jpg-root",
            str(jpg),
            "--sections",
            str(tmp_path / "sections" / "prompts.csv"),
            "--out",
            str(out),
            "--ground-truth",
            str(tmp_path / "absent.csv"),
            "--params",
            str(write_params(tmp_path / "params.yaml")),
        ]
    )
    assert rc == 0
    assert list(pd.read_csv(out / "generator.csv").columns) == list(C.PAIR_COLUMNS)
    assert list(pd.read_csv(out / "classifier.csv").columns) == list(C.CLASSIFIER_COLUMNS)
    assert "ground_truth_rows_missing" not in json.loads((out / "counts.json").read_text())


def test_main_reports_the_rule_that_empties_a_cohort(tmp_path):
    release = synth_release(np.random.default_rng(8), n_patients=10)
    jpg = write_release(tmp_path, release)
    params = write_params(tmp_path / "params.yaml", generator_views=["PORTABLE"], check_images=False)
    log = tmp_path / "cohort.log"
    rc = stage.main(
        [
            "--jpg-root",
            str(jpg),
            "--sections",
            str(tmp_path / "sections" / "prompts.csv"),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(params),
            "--log",
            str(log),
        ]
    )
    assert rc == 1
    assert "pairs cohort is empty after the rule 'view in ['PORTABLE']'" in log.read_text()
    assert not (tmp_path / "out" / "generator.csv").exists()
