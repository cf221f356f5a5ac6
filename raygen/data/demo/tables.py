"""The demo's study plan (patients, studies, images, findings) and its MIMIC-CXR-JPG tables.

The plan is drawn sequentially from one generator seeded with the dataset seed, so it never depends
on how many workers render it. Identifiers follow MIMIC (docs/mimic-cxr.md section 2): subject_id 8 digits
starting with 1 (group folder ``p`` + first two digits), study_id 8 digits starting with 5, dicom_id
five dash-separated groups of 8 hex characters. CSV schemas and column order are MIMIC's (section 3).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd

from raygen.data.demo.findings import Finding
from raygen.data.demo.params import ALL_GROUPS, check_groups
from raygen.data.labels import CHEXPERT_LABELS, CLASSES
from raygen.data.mimic import METADATA_COLUMNS, SPLIT_COLUMNS  # the reader's schema: one place

GROUP_IDS = 1_000_000  # subject ids per group folder (8 digits: p10 holds 10,000,000-10,999,999)

LABEL_COLUMNS = ("subject_id", "study_id", *CHEXPERT_LABELS)
VIEW_MEANING = {"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral", "LL": "left lateral"}


def slug(label: str) -> str:
    """'Pleural Effusion' -> 'pleural_effusion' (ground-truth column prefixes)."""
    return label.lower().replace(" ", "_")


GROUND_TRUTH_COLUMNS = (
    "subject_id",
    "study_id",
    *CLASSES,
    "normal",
    *(f"{slug(c)}_{k}" for c in CLASSES for k in ("laterality", "severity")),
)


@dataclasses.dataclass(frozen=True)
class ImagePlan:
    dicom_id: str
    view: str  # AP | PA | LATERAL | LL
    orientation: str  # Erect | Recumbent | "" (PatientOrientationCodeSequence_CodeMeaning)


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """One study: who, when, which images, what is truly in it."""

    index: int
    subject_id: int
    study_id: int
    study_date: str  # YYYYMMDD in the 2100s (MIMIC's shifted dates)
    study_time: float  # HHMMSS.fff with leading zeros lost
    procedure: str
    images: tuple[ImagePlan, ...]
    findings: tuple[Finding, ...]
    erect: bool
    habitus: tuple[float, float, float]  # patient (width, height, thickness) scale
    split: str

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(i.view for i in self.images)


@dataclasses.dataclass(frozen=True)
class PlanRates:
    """Knobs of the plan that :class:`raygen.data.demo.params.DemoParams` exposes."""

    normal_rate: float
    ap_rate: float
    lateral_rate: float
    validate_fraction: float
    test_fraction: float
    groups: tuple[str, ...] = ALL_GROUPS  # see DemoParams.groups


# --------------------------------------------------------------------------------------- findings

# Patterns of co-occurring findings (probability among abnormal studies) and what comes with them.
PATTERNS: dict[str, float] = {
    "cardiac": 0.24,
    "infection": 0.22,
    "opacity": 0.13,
    "pleural": 0.12,
    "trauma": 0.10,
    "pneumothorax": 0.07,
    "lesion": 0.12,
}
BACKGROUND = {
    "Cardiomegaly": 0.03,
    "Atelectasis": 0.06,
    "Pleural Effusion": 0.04,
    "Lung Opacity": 0.03,
    "Lung Lesion": 0.015,
    "Fracture": 0.015,
}


def _side(rng: np.random.Generator, bilateral: float = 0.0, right: float = 0.5) -> str:
    u = rng.random()
    if u < bilateral:
        return "bilateral"
    return "right" if rng.random() < right else "left"


def _severity(rng: np.random.Generator, words: tuple[str, ...], p: tuple[float, ...]) -> str:
    return words[int(rng.choice(len(words), p=p))]


def _effusion(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    return Finding(
        label, side or _side(rng, 0.35, 0.55), _severity(rng, ("small", "moderate", "large"), (0.5, 0.35, 0.15))
    )


def _cardiomegaly(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    return Finding(label, "", _severity(rng, ("mild", "moderate", "severe"), (0.5, 0.35, 0.15)))


def _edema(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    return Finding(label, "bilateral", _severity(rng, ("mild", "moderate", "severe"), (0.45, 0.4, 0.15)), "perihilar")


def _pneumothorax(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    return Finding(
        label, side or _side(rng, 0.0, 0.5), _severity(rng, ("small", "moderate", "large"), (0.45, 0.35, 0.2))
    )


def _airspace(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    """Consolidation or pneumonia: one lobe."""
    s = side or _side(rng, 0.1 if label == "Pneumonia" else 0.05, 0.55)
    lobes = ["lower lobe", "lower lobe", "upper lobe", "middle lobe" if s == "right" else "lingula"]
    return Finding(label, s, "", str(rng.choice(lobes)))


def _lung_opacity(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    s = side or _side(rng, 0.2, 0.5)
    return Finding(label, s, "", str(rng.choice(["base", "mid", "upper", "base"])))


def _lung_lesion(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    mass = rng.random() < 0.3
    size = rng.uniform(40, 65) if mass else rng.uniform(18, 32)
    count = 1 if mass or rng.random() < 0.8 else int(rng.integers(2, 4))
    return Finding(
        label,
        side or _side(rng, 0.0, 0.55),
        "mass" if mass else "nodule",
        str(rng.choice(["upper lobe", "lower lobe", "upper lobe"])),
        round(float(size), 0),
        count,
    )


def _atelectasis(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    s = side or _side(rng, 0.35, 0.45)
    sev = _severity(rng, ("minimal", "mild", "moderate"), (0.35, 0.45, 0.2))
    if sev == "moderate" and s == "bilateral":
        sev = "mild"
    loc = "retrocardiac" if s == "left" and rng.random() < 0.3 else "base"
    return Finding(label, s, sev, loc)


def _fracture(label: str, rng: np.random.Generator, side: str | None) -> Finding:
    count = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    rib = int(rng.integers(4, 9))
    return Finding(
        label,
        side or _side(rng, 0.0, 0.5),
        _severity(rng, ("acute", "healing"), (0.55, 0.45)),
        ORDINAL_RIB[rib],
        0.0,
        count,
    )


# One drawer per label, with MIMIC-like side / severity / location mixes: (label, rng, side) -> Finding.
FINDING_DRAWS: dict[str, Callable[[str, np.random.Generator, str | None], Finding]] = {
    "Pleural Effusion": _effusion,
    "Cardiomegaly": _cardiomegaly,
    "Edema": _edema,
    "Pneumothorax": _pneumothorax,
    "Consolidation": _airspace,
    "Pneumonia": _airspace,
    "Lung Opacity": _lung_opacity,
    "Lung Lesion": _lung_lesion,
    "Atelectasis": _atelectasis,
    "Fracture": _fracture,
}


def _make(label: str, rng: np.random.Generator, side: str | None = None) -> Finding:
    """Draw one finding of ``label`` (``side`` given: on that side)."""
    draw = FINDING_DRAWS.get(label)
    if draw is None:
        raise ValueError(label)
    return draw(label, rng, side)


ORDINAL_RIB = {n: f"{n}{'st' if n == 1 else 'nd' if n == 2 else 'rd' if n == 3 else 'th'}" for n in range(1, 13)}


def sample_findings(rng: np.random.Generator, normal_rate: float, chronic: dict[str, Finding]) -> tuple[Finding, ...]:
    """The true findings of one study; ``chronic`` (per patient, updated in place) keeps
    cardiomegaly and lung lesions across a patient's later studies."""
    if rng.random() < normal_rate:
        return ()
    found: dict[str, Finding] = {}
    for label, f in chronic.items():
        if rng.random() < 0.6:
            found[label] = f
    names = list(PATTERNS)
    pattern = names[int(rng.choice(len(names), p=np.array(list(PATTERNS.values())) / sum(PATTERNS.values())))]

    def add(label: str, p: float = 1.0, side: str | None = None) -> None:
        if label not in found and rng.random() < p:
            found[label] = _make(label, rng, side)

    _add_pattern(pattern, add, found)
    for label, p in BACKGROUND.items():
        add(label, p)
    for label in ("Cardiomegaly", "Lung Lesion"):
        if label in found:
            chronic[label] = found[label]
    return tuple(found[c] for c in CLASSES if c in found)


def _add_pattern(pattern: str, add: Callable[..., None], found: dict[str, Finding]) -> None:
    """Add the findings of one co-occurrence ``pattern`` through ``add(label, p=1.0, side=None)``."""
    if pattern == "cardiac":
        add("Cardiomegaly")
        add("Edema", 0.55)
        add("Pleural Effusion", 0.6)
        if "Pleural Effusion" in found:
            add("Atelectasis", 0.35, found["Pleural Effusion"].laterality)
    elif pattern == "infection":
        add("Pneumonia")
        side = found["Pneumonia"].laterality
        add("Consolidation", 0.5, side)
        add("Lung Opacity", 0.4, side)
        add("Pleural Effusion", 0.25, side)
    elif pattern == "opacity":
        add("Lung Opacity")
        add("Atelectasis", 0.35)
        add("Pleural Effusion", 0.2)
    elif pattern == "pleural":
        add("Pleural Effusion")
        add("Atelectasis", 0.5, found["Pleural Effusion"].laterality)
    elif pattern == "trauma":
        add("Fracture")
        side = found["Fracture"].laterality
        add("Pneumothorax", 0.35, side)
        add("Pleural Effusion", 0.2, side)
        add("Lung Opacity", 0.15, side)
    elif pattern == "pneumothorax":
        add("Pneumothorax")
        add("Atelectasis", 0.15)
    else:
        add("Lung Lesion")
        add("Pleural Effusion", 0.15, found["Lung Lesion"].laterality)


# ------------------------------------------------------------------------------------------- plan


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5))


def _split_patients(rng: np.random.Generator, subjects: list[int], rates: PlanRates) -> dict[int, str]:
    """Patient-disjoint train / validate / test; validate and test get at least one patient each
    when there are three or more patients."""
    order = list(rng.permutation(len(subjects)))
    n = len(subjects)
    n_test = max(1 if n >= 3 else 0, int(round(rates.test_fraction * n)))
    n_val = max(1 if n >= 3 else 0, int(round(rates.validate_fraction * n)))
    out = {}
    for rank, i in enumerate(order):
        out[subjects[i]] = "test" if rank < n_test else ("validate" if rank < n_test + n_val else "train")
    return out


def subject_pool(groups: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """The subject ids of ``groups`` (ascending) and their draw probabilities (None: uniform).

    A group listed k times gets k shares of the patients. For all ten groups, once each, this is
    ``np.arange(10_000_000, 20_000_000)`` with uniform draws: the plans rendered before groups existed.
    """
    check_groups(groups)
    counts = {g: groups.count(g) for g in sorted(set(groups))}
    pool = np.concatenate([np.arange(int(g[1:]) * GROUP_IDS, (int(g[1:]) + 1) * GROUP_IDS) for g in counts])
    if len(set(counts.values())) == 1:
        return pool, None  # no p: numpy's uniform draw, which a p of equal weights would not reproduce
    weights = np.repeat(np.array(list(counts.values()), dtype=np.float64), GROUP_IDS)
    return pool, weights / weights.sum()


def plan_studies(studies: int, patients: int, seed: int, rates: PlanRates) -> list[StudyPlan]:
    """Draw every study of the dataset: ids, dates, views, habitus and true findings."""
    if studies < 1:
        raise ValueError("studies must be >= 1")
    patients = max(1, min(patients, studies))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE30]))
    pool, shares = subject_pool(rates.groups)
    subjects = sorted(int(s) for s in rng.choice(pool, size=patients, replace=False, p=shares))
    # Every patient has one study; the rest go to patients with a skew (some patients come often).
    weights = rng.gamma(0.7, size=patients)
    extra = rng.choice(patients, size=studies - patients, p=weights / weights.sum())
    counts = np.bincount(extra, minlength=patients) + 1
    study_ids = rng.choice(np.arange(50_000_000, 60_000_000), size=studies, replace=False)
    split_of = _split_patients(rng, subjects, rates)
    plans: list[StudyPlan] = []
    for p in range(patients):
        habitus = (float(rng.normal(1, 0.05)), float(rng.normal(1, 0.04)), float(rng.normal(1, 0.08)))
        day = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 80)))
        chronic: dict[str, Finding] = {}
        for _ in range(int(counts[p])):
            day = day + dt.timedelta(days=int(rng.integers(1, 400)))
            study_time = _study_time(rng)
            findings = sample_findings(rng, rates.normal_rate, chronic)
            images, procedure, erect = _draw_images(rng, rates)
            index = len(plans)
            plans.append(
                StudyPlan(
                    index,
                    subjects[p],
                    int(study_ids[index]),
                    day.strftime("%Y%m%d"),
                    study_time,
                    procedure,
                    images,
                    findings,
                    erect,
                    habitus,
                    split_of[subjects[p]],
                )
            )
    assert len(plans) == studies
    return plans


def _study_time(rng: np.random.Generator) -> float:
    """HHMMSS.fff as MIMIC stores it (a float, leading zeros lost)."""
    secs = rng.uniform(0, 86400)
    hh, mm, ss = int(secs // 3600), int(secs % 3600 // 60), secs % 60
    return round(hh * 10000 + mm * 100 + ss, 3)


def _draw_images(rng: np.random.Generator, rates: PlanRates) -> tuple[tuple[ImagePlan, ...], str, bool]:
    """One study's images (a frontal view, maybe a lateral), its procedure name and whether it was erect."""
    portable = rng.random() < rates.ap_rate
    # PA studies usually add a lateral, portable AP studies rarely: ~lateral_rate overall.
    p_lat = min(1.0, rates.lateral_rate / (rates.ap_rate * 0.1 + (1 - rates.ap_rate)))
    lateral = rng.random() < (p_lat * 0.1 if portable else p_lat)
    erect = (not portable) or rng.random() < 0.55
    orientation = "Erect" if erect else "Recumbent"
    if rng.random() < 0.05:
        orientation = ""
    views = ["AP" if portable else "PA"]
    if lateral:
        views.append("LL" if rng.random() < 0.25 else "LATERAL")
    images = tuple(ImagePlan(_dicom_id(rng), v, orientation) for v in views)
    procedure = (
        "CHEST (PORTABLE AP)"
        if portable
        else "CHEST (PA AND LAT)"
        if lateral
        else str(rng.choice(["CHEST (PA AND LAT)", "CHEST (PA)"]))
    )
    return images, procedure, erect


# ----------------------------------------------------------------------------------------- tables


def relative_jpg(plan: StudyPlan, image: ImagePlan) -> str:
    """files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg (relative to the JPG root)."""
    s = str(plan.subject_id)
    return f"files/p{s[:2]}/p{s}/s{plan.study_id}/{image.dicom_id}.jpg"


def relative_report(plan: StudyPlan) -> str:
    """files/pXX/pSSSSSSSS/sTTTTTTTT.txt (relative to the reports root)."""
    s = str(plan.subject_id)
    return f"files/p{s[:2]}/p{s}/s{plan.study_id}.txt"


def metadata_frame(plans: list[StudyPlan], sizes: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """One row per image; ``sizes[dicom_id] = (Rows, Columns)`` of the written JPG."""
    rows = []
    for p in plans:
        for im in p.images:
            h, w = sizes[im.dicom_id]
            rows.append(
                (
                    im.dicom_id,
                    p.subject_id,
                    p.study_id,
                    p.procedure,
                    im.view,
                    h,
                    w,
                    int(p.study_date),
                    p.study_time,
                    p.procedure,
                    VIEW_MEANING[im.view],
                    im.orientation,
                )
            )
    return pd.DataFrame(rows, columns=list(METADATA_COLUMNS))


def split_frame(plans: list[StudyPlan]) -> pd.DataFrame:
    rows = [(im.dicom_id, p.study_id, p.subject_id, p.split) for p in plans for im in p.images]
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


def label_frame(plans: list[StudyPlan], labels: list[dict[str, float]], keep: list[bool]) -> pd.DataFrame:
    """CheXpert / NegBio layout: one row per kept study, 14 labels as 1.0 / 0.0 / -1.0 / blank."""
    rows = []
    for p, lab, k in zip(plans, labels, keep):
        if k:
            rows.append([p.subject_id, p.study_id] + [lab.get(c, np.nan) for c in CHEXPERT_LABELS])
    frame = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    return frame.astype({c: "float64" for c in CHEXPERT_LABELS})


def negbio_labels(rng: np.random.Generator, chexpert: dict[str, float]) -> dict[str, float]:
    """NegBio disagrees with CheXpert now and then: some uncertain mentions read as positive."""
    out = dict(chexpert)
    for k, v in chexpert.items():
        if v == -1.0 and rng.random() < 0.3:
            out[k] = 1.0
    return out


def ground_truth_frame(plans: list[StudyPlan]) -> pd.DataFrame:
    """The true injected labels per study, with laterality and severity columns (blank = n/a)."""
    rows = []
    for p in plans:
        row: dict[str, object] = {"subject_id": p.subject_id, "study_id": p.study_id}
        by = {f.label: f for f in p.findings}
        for c in CLASSES:
            row[c] = int(c in by)
        row["normal"] = int(not by)
        for c in CLASSES:
            f = by.get(c)
            row[f"{slug(c)}_laterality"] = f.laterality if f else ""
            row[f"{slug(c)}_severity"] = f.severity if f else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=list(GROUND_TRUTH_COLUMNS))
