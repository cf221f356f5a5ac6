"""MIMIC-CXR-formatted radiology reports for the demo studies, and their CheXpert labels.

Every sentence is built from a template that carries the labels a CheXpert-style labeler would read
from it (1 positive, -1 hedged, 0 negated), so the label row agrees with the text by construction.
As for MIMIC-CXR, the labels come from the impression, else the findings, else the last paragraph.
The text agrees with the injected findings: positives are stated (sometimes hedged) with their side
and severity; only absent findings are negated.

Format (docs/mimic-cxr.md section 4): first line ``FINAL REPORT`` after many spaces; every later line
starts with one space; blank lines hold a single space; upper-case headers with a colon; ``___`` for
de-identified text. Variants at small rates: findings only, neither (header-less or a
``CHEST, PA LATERAL:`` header), ``HISTORY:`` instead of ``INDICATION:``, a ``WET READ:`` on top, a
trailing ``NOTIFICATION:``, an addendum above the report, misspelled headers, non-ASCII characters.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable

import numpy as np

from raygen.data.demo.findings import Finding
from raygen.data.labels import CHEXPERT_LABELS

Tags = dict[str, int]
TITLE = " " * 33 + "FINAL REPORT"
ADDENDUM_TITLE = " " * 33 + "FINAL ADDENDUM"
UNDERSCORES = " " + "_" * 78


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """Rates of the format variants (fractions of reports), MIMIC-like."""

    findings_only: float = 0.125  # ~12.5% of MIMIC reports have findings but no impression
    neither: float = 0.05  # ~5% have neither section
    history_header: float = 0.12  # older reports say HISTORY: instead of INDICATION:
    wet_read: float = 0.04
    notification: float = 0.07
    addendum: float = 0.03
    misspelled: float = 0.02
    non_ascii: float = 0.02
    hedge: float = 0.12  # share of positive findings stated with uncertainty (-> CheXpert -1)
    support_devices: float = 0.03  # a line / tube mentioned (CheXpert Support Devices, dropped by the cohort)
    pleural_other: float = 0.015  # pleural thickening (CheXpert Pleural Other)


@dataclasses.dataclass(frozen=True)
class Report:
    """A report and the CheXpert-style labels of its labelled section.

    Attributes:
        text: the report file's content (UTF-8, ends with a newline).
        labels: {CheXpert label: 1.0 | 0.0 | -1.0}; labels not mentioned are absent (blank).
        section: which section the labels were read from (impression|findings|last_paragraph).
    """

    text: str
    labels: dict[str, float]
    section: str


# ----------------------------------------------------------------------------------------- phrases


def _pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


def _side(f: Finding) -> str:
    return f.laterality


def _where(f: Finding) -> str:
    """'right lower lobe', 'left base', 'lingula', ..."""
    if f.location == "lingula":
        return "lingula"
    if f.location in ("base", "upper", "mid", "lower"):
        zone = {"base": "base", "lower": "lung base", "mid": "mid lung", "upper": "upper lung"}[f.location]
        if f.laterality == "bilateral":
            return {"base": "lung bases", "lung base": "lung bases"}.get(zone, f"{zone} zones bilaterally")
        return f"{f.laterality} {zone}"
    if f.location == "retrocardiac":
        return "retrocardiac left lower lobe"
    if f.laterality == "bilateral":
        return f"{f.location}s bilaterally"
    return f"{f.laterality} {f.location}"


def _capitalized(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}"


def _effusion(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    side, sev = _side(f), f.severity
    noun = "pleural effusions" if f.laterality == "bilateral" else "pleural effusion"
    if hedge:
        s = _pick(
            rng,
            [
                f"Blunting of the {side} costophrenic angle may reflect a {sev} {noun}.",
                f"Possible {sev} {side} {noun}.",
            ],
        )
    elif impression:
        s = f"{sev.capitalize()} {side} {noun}."
    else:
        s = _pick(
            rng,
            [
                f"There is a {sev} {side} {noun}."
                if f.laterality != "bilateral"
                else f"There are {sev} bilateral {noun}.",
                f"{sev.capitalize()} {side} {noun} with a meniscus and blunting of the costophrenic angle.",
                f"A {sev} {side} {noun} is present."
                if f.laterality != "bilateral"
                else f"{sev.capitalize()} bilateral {noun} are present.",
            ],
        )
    return s, {f.label: -1 if hedge else 1}


def _cardiomegaly(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    sev = f.severity
    adv = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}[sev]
    if hedge:
        options = [
            f"The heart is possibly {adv} enlarged, accentuated by technique.",
            f"Borderline to {sev} cardiomegaly cannot be excluded.",
        ]
    elif impression:
        options = [f"{sev.capitalize()} cardiomegaly.", f"{sev.capitalize()} enlargement of the cardiac silhouette."]
    else:
        options = [
            f"The heart is {adv} enlarged.",
            f"There is {sev} cardiomegaly.",
            f"The cardiac silhouette is {adv} enlarged.",
        ]
    return _pick(rng, options), {f.label: -1 if hedge else 1}


EDEMA_WORDS = {
    "mild": [
        "mild pulmonary edema",
        "mild interstitial pulmonary edema",
        "mild pulmonary vascular congestion and edema",
    ],
    "moderate": ["moderate pulmonary edema", "moderate interstitial and perihilar edema"],
    "severe": ["severe pulmonary edema", "severe perihilar alveolar edema"],
}


def _edema(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    if hedge:
        return f"Findings may represent {f.severity} pulmonary edema.", {f.label: -1}
    w = str(_pick(rng, EDEMA_WORDS[f.severity]))
    return (f"{_capitalized(w)}." if impression else f"There is {w}."), {f.label: 1}


def _pneumothorax(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    side, sev = _side(f), f.severity
    if hedge:
        return f"A {sev} {side} apical pneumothorax is not excluded.", {f.label: -1}
    return _pick(
        rng,
        [
            f"{sev.capitalize()} {side} pneumothorax.",
            f"There is a {sev} {side} apical pneumothorax.",
            f"{sev.capitalize()} {side} pneumothorax with a visible pleural line.",
        ],
    ), {f.label: 1}


def _consolidation(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    where = _where(f)
    if hedge:
        return f"Possible consolidation in the {where}.", {f.label: -1}
    return _pick(
        rng,
        [
            f"Consolidation in the {where}.",
            f"Dense {where} consolidation with air bronchograms.",
            f"There is consolidation of the {where}.",
        ],
    ), {f.label: 1}


def _pneumonia(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    where, lab = _where(f), f.label
    if hedge:
        return _pick(
            rng,
            [
                (f"Patchy airspace disease in the {where}, concerning for pneumonia.", {lab: -1, "Lung Opacity": 1}),
                (f"Findings in the {where} could represent pneumonia in the appropriate clinical setting.", {lab: -1}),
            ],
        )  # type: ignore[return-value]
    return _pick(
        rng,
        [
            (f"{_capitalized(where)} pneumonia.", {lab: 1}),
            (f"Findings consistent with pneumonia in the {where}.", {lab: 1}),
        ],
    )  # type: ignore[return-value]


def _lung_opacity(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    where = _where(f)
    if hedge:
        return f"Possible faint opacity in the {where}.", {f.label: -1}
    return _pick(
        rng,
        [
            f"Ill-defined opacity in the {where}.",
            f"Patchy opacities in the {where}.",
            f"Hazy opacity projects over the {where}.",
        ],
    ), {f.label: 1}


def _lung_lesion(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    where, cm = _where(f), f.size_mm / 10
    if hedge:
        return f"A possible {cm:.1f} cm nodule in the {where}; CT is recommended.", {f.label: -1}
    noun = "mass" if f.severity == "mass" else "nodule"
    if f.count > 1:
        return (
            f"Multiple pulmonary nodules in the {f.laterality} lung, the largest {cm:.1f} cm in the {where}.",
            {f.label: 1},
        )
    return _pick(
        rng,
        [
            f"A {cm:.1f} cm {noun} in the {where}.",
            f"{_capitalized(where)} {noun} measuring {cm:.1f} cm.",
            f"There is a {cm:.1f} cm rounded {noun} in the {where}.",
        ],
    ), {f.label: 1}


def _atelectasis(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    lab, sev, side = f.label, f.severity, f.laterality
    if hedge:
        return f"{_capitalized(_where(f))} opacity, likely atelectasis.", {lab: -1, "Lung Opacity": 1}
    if sev == "minimal":
        options = [f"Plate-like atelectasis at the {_where(f)}.", f"Minimal linear atelectasis in the {_where(f)}."]
    elif sev == "moderate" and side != "bilateral":
        return (
            f"{side.capitalize()} lower lobe volume loss with atelectasis and elevation of the {side} hemidiaphragm."
        ), {lab: 1}
    elif side == "bilateral":
        options = [f"{sev.capitalize()} bibasilar atelectasis.", f"{sev.capitalize()} bibasal atelectasis."]
    else:
        options = [
            f"{sev.capitalize()} {side} basilar atelectasis.",
            f"{sev.capitalize()} atelectasis at the {side} base.",
        ]
    return _pick(rng, options), {lab: 1}


def _fracture(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    rib, side, tags = (f"{f.location} rib" if f.location else "rib"), f.laterality, {f.label: -1 if hedge else 1}
    if hedge:
        return f"Possible nondisplaced fracture of the {side} {rib}.", tags
    if f.count > 1:
        kind = "healing" if f.severity == "healing" else "acute"
        return f"Multiple {kind} {side} rib fractures, including the {rib}.", tags
    if f.severity == "healing":
        return f"Healing fracture of the {side} {rib} with callus formation.", tags
    return _pick(
        rng,
        [f"Acute, mildly displaced fracture of the {side} {rib}.", f"Displaced fracture of the {side} {rib}."],
    ), tags


# One sentence writer per label: (finding, rng, hedge, impression) -> (sentence, labels it carries).
POSITIVES: dict[str, Callable[[Finding, np.random.Generator, bool, bool], tuple[str, Tags]]] = {
    "Pleural Effusion": _effusion,
    "Cardiomegaly": _cardiomegaly,
    "Edema": _edema,
    "Pneumothorax": _pneumothorax,
    "Consolidation": _consolidation,
    "Pneumonia": _pneumonia,
    "Lung Opacity": _lung_opacity,
    "Lung Lesion": _lung_lesion,
    "Atelectasis": _atelectasis,
    "Fracture": _fracture,
}


def positive(f: Finding, rng: np.random.Generator, hedge: bool, impression: bool) -> tuple[str, Tags]:
    """One sentence stating finding ``f`` (hedged when ``hedge``) and the labels it carries."""
    writer = POSITIVES.get(f.label)
    if writer is None:
        raise ValueError(f"unknown finding label {f.label!r}")
    return writer(f, rng, hedge, impression)


NEGATIONS: dict[str, list[tuple[str, Tags]]] = {
    "Pleural Effusion": [
        ("No pleural effusion.", {"Pleural Effusion": 0}),
        ("There is no pleural effusion.", {"Pleural Effusion": 0}),
    ],
    "Pneumothorax": [("No pneumothorax.", {"Pneumothorax": 0}), ("There is no pneumothorax.", {"Pneumothorax": 0})],
    "Cardiomegaly": [
        ("The heart size is normal.", {"Cardiomegaly": 0}),
        ("Heart size is within normal limits.", {"Cardiomegaly": 0}),
        ("Normal cardiomediastinal silhouette.", {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0}),
    ],
    "Edema": [
        ("No pulmonary edema.", {"Edema": 0}),
        ("There is no evidence of pulmonary vascular congestion or edema.", {"Edema": 0}),
    ],
    "Consolidation": [
        ("No focal consolidation.", {"Consolidation": 0}),
        ("There is no focal consolidation.", {"Consolidation": 0}),
    ],
    "Pneumonia": [("No evidence of pneumonia.", {"Pneumonia": 0})],
    "Lung Lesion": [("No suspicious pulmonary nodules.", {"Lung Lesion": 0})],
    "Fracture": [("No displaced rib fractures are seen.", {"Fracture": 0})],
    "Lung Opacity": [("No focal airspace opacity.", {"Lung Opacity": 0})],
    "Atelectasis": [("No atelectasis.", {"Atelectasis": 0})],
}
NEGATION_RATE = {
    "Pleural Effusion": 0.7,
    "Pneumothorax": 0.6,
    "Cardiomegaly": 0.6,
    "Edema": 0.35,
    "Consolidation": 0.5,
    "Pneumonia": 0.12,
    "Lung Lesion": 0.08,
    "Fracture": 0.1,
    "Lung Opacity": 0.1,
    "Atelectasis": 0.05,
}
NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "No evidence of acute cardiopulmonary disease.",
    "Normal chest radiograph.",
]
INDICATIONS = {
    "Pneumonia": ["cough and fever", "fever, evaluate for pneumonia", "productive cough"],
    "Consolidation": ["fever and hypoxia", "cough, r/o pneumonia"],
    "Edema": ["shortness of breath", "CHF exacerbation", "dyspnea and leg swelling"],
    "Cardiomegaly": ["shortness of breath", "chest pain"],
    "Pleural Effusion": ["dyspnea", "evaluate effusion", "decreased breath sounds at the base"],
    "Pneumothorax": ["chest pain, evaluate for pneumothorax", "s/p chest tube removal"],
    "Fracture": ["fall, chest wall pain", "trauma, rib pain"],
    "Lung Lesion": ["history of lung cancer", "weight loss, smoker"],
    "Atelectasis": ["post-operative, hypoxia", "low oxygen saturation"],
    "Lung Opacity": ["cough", "hypoxia"],
    None: [
        "chest pain",
        "preoperative evaluation",
        "shortness of breath",
        "cough",
        "evaluate for acute process",
        "fever",
        "line placement",
    ],
}


# ---------------------------------------------------------------------------------------- assembly


def _paragraph(sentences: list[str]) -> list[str]:
    """Wrapped lines (without the leading space) of one paragraph."""
    return textwrap.wrap(" ".join(sentences), width=76, break_on_hyphens=False) or [""]


def _format(blocks: list[tuple[str | None, list[str]]]) -> str:
    """Render (header, lines) blocks: headers on their own line, content below after a blank line
    for FINDINGS / IMPRESSION, inline after two spaces for the short sections (as MIMIC does)."""
    out = [TITLE]
    for header, lines in blocks:
        if header is None:
            out += [" " + ln for ln in lines]
        elif header.rstrip(":") in ("FINDINGS", "IMPRESSION", "IMPRESSON", "FINDINS", "CHEST, PA LATERAL"):
            out += [f" {header} ", " "] + [" " + ln for ln in lines]
        else:
            out += [f" {header}  {lines[0]}"] + [" " + ln for ln in lines[1:]]
        out.append(" ")
    while out and out[-1] == " ":
        out.pop()
    return "\n".join(out) + "\n"


def _aggregate(tags: list[Tags]) -> dict[str, float]:
    """CheXpert's rule: any positive -> 1, else any uncertain -> -1, else any negative -> 0."""
    out: dict[str, float] = {}
    for label in CHEXPERT_LABELS:
        values = [t[label] for t in tags if label in t]
        if not values:
            continue
        out[label] = 1.0 if 1 in values else (-1.0 if -1 in values else 0.0)
    pathology = [k for k in out if k not in ("No Finding", "Support Devices")]
    if not any(out[k] in (1.0, -1.0) for k in pathology):
        out["No Finding"] = 1.0
    return out


SUPPORT_DEVICES = [
    "Right internal jugular central venous catheter terminates in the mid SVC.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Left-sided pacemaker with leads in the right atrium and right ventricle.",
]
CLEAR_LUNGS = ["The lungs are clear.", "Lungs are well expanded and clear.", "The lungs are clear bilaterally."]
NON_ASCII_SENTENCES = [
    "Patient is rotated approximately 10° to the right.",
    "Overlying soft tissues limit evaluation – no gross change.",
    "Sternotomy wires are not seen; skin fold noted at the right base ×1.",
]
COMPARISONS = ["___", "Chest radiograph from ___", "None.", "Prior study from ___."]
NOTIFICATION = (
    "The findings were discussed with Dr. ___ by ___ on the telephone on ___ at ___, "
    "5 minutes after discovery of the findings."
)
ADDENDA = [
    "The study was reviewed with the attending radiologist; no change to the report.",
    "Findings were communicated to the referring team by ___ at ___.",
]


@dataclasses.dataclass
class _Sentences:
    """The sentences of the findings and impression sections, each with the labels it carries."""

    findings: list[str]
    findings_tags: list[Tags]
    impression: list[str]
    impression_tags: list[Tags]


def _positive_sentences(
    rng: np.random.Generator, findings: tuple[Finding, ...], options: ReportOptions
) -> tuple[list[tuple[str, Tags]], list[tuple[str, Tags]]]:
    """(findings sentences, impression sentences) stating each finding; minor ones may skip the impression."""
    pos_find, pos_imp = [], []
    for f in findings:
        hedge = rng.random() < (options.hedge * (2.0 if f.label == "Pneumonia" else 1.0))
        pos_find.append(positive(f, rng, hedge, impression=False))
        if rng.random() < 0.93 or f.label not in ("Atelectasis", "Fracture", "Lung Lesion"):
            pos_imp.append(positive(f, rng, hedge, impression=True))
    return pos_find, pos_imp


def _extra_sentences(rng: np.random.Generator, options: ReportOptions) -> list[tuple[str, Tags]]:
    """Support devices and pleural thickening, at their small rates."""
    extras: list[tuple[str, Tags]] = []
    if rng.random() < options.support_devices:
        extras.append((str(_pick(rng, SUPPORT_DEVICES)), {"Support Devices": 1}))
    if rng.random() < options.pleural_other:
        extras.append(("Mild biapical pleural thickening.", {"Pleural Other": 1}))
    return extras


def _sentences(rng: np.random.Generator, findings: tuple[Finding, ...], options: ReportOptions) -> _Sentences:
    """Positive, extra and negated sentences of the findings section, and the impression's."""
    labels_present = {f.label for f in findings}
    pos_find, pos_imp = _positive_sentences(rng, findings, options)
    neg = [
        (label, _pick(rng, NEGATIONS[label]))
        for label in NEGATIONS
        if label not in labels_present and rng.random() < NEGATION_RATE[label]
    ]
    extras = _extra_sentences(rng, options)
    findings_sents = [s for s, _ in pos_find] + [s for s, _ in extras] + [s for _, (s, _) in neg]
    findings_tags = [t for _, t in pos_find] + [t for _, t in extras] + [t for _, (_, t) in neg]
    if not findings:
        findings_sents.insert(0, str(_pick(rng, CLEAR_LUNGS)))
    if "Lung Lesion" not in labels_present and rng.random() < 0.2:
        findings_sents.append("The mediastinal and hilar contours are unremarkable.")
    imp_sents = [s for s, _ in pos_imp]
    imp_tags = [t for _, t in pos_imp]
    if not imp_sents:
        imp_sents = [str(_pick(rng, NORMAL_IMPRESSIONS))]
    elif rng.random() < 0.3:
        for _label, (s, t) in neg[:1]:
            imp_sents.append(s)
            imp_tags.append(t)
    if options.non_ascii > rng.random():
        findings_sents.append(str(_pick(rng, NON_ASCII_SENTENCES)))
    return _Sentences(findings_sents, findings_tags, imp_sents, imp_tags)


def _exam_and_technique(views: tuple[str, ...], erect: bool) -> tuple[str, str]:
    """The EXAMINATION and TECHNIQUE lines for the study's views."""
    portable = views[0] == "AP"
    exam = "CHEST (PORTABLE AP)" if portable else ("CHEST (PA AND LAT)" if len(views) > 1 else "CHEST (PA)")
    technique = (
        "Portable AP upright chest radiograph."
        if portable and erect
        else "Portable AP supine chest radiograph."
        if portable
        else "Chest PA and lateral"
        if len(views) > 1
        else "Chest PA"
    )
    if len(views) > 1 and portable:
        technique = "Portable AP and lateral chest radiographs."
    return exam, technique


def _headerless_report(rng: np.random.Generator, exam: str, sentences: _Sentences, options: ReportOptions) -> Report:
    """The variant with neither findings nor impression: plain paragraphs, or one ``CHEST, PA LATERAL:`` block."""
    if rng.random() < 0.5:
        # Header-less: text paragraphs; the labeler reads the last paragraph.
        blocks = [
            (None, _paragraph([f"{exam.title()}."] + sentences.findings)),
            (None, _paragraph(sentences.impression)),
        ]
        labels, section = _aggregate(sentences.impression_tags), "last_paragraph"
    else:
        blocks = [("CHEST, PA LATERAL:", _paragraph(sentences.findings + sentences.impression))]
        labels, section = _aggregate(sentences.findings_tags + sentences.impression_tags), "findings"
    return Report(text=_wrap_variants(rng, _format(blocks), options), labels=labels, section=section)


def make_report(
    rng: np.random.Generator,
    findings: tuple[Finding, ...],
    views: tuple[str, ...],
    erect: bool,
    options: ReportOptions = ReportOptions(),
) -> Report:
    """A MIMIC-formatted report for a study with ``findings`` imaged in ``views``."""
    sentences = _sentences(rng, findings, options)
    exam, technique = _exam_and_technique(views, erect)
    key = next((f.label for f in findings), None)
    indication = f"___ year old {_pick(rng, ['man', 'woman'])} with {_pick(rng, INDICATIONS[key])}"
    comparison = str(_pick(rng, COMPARISONS))

    variant = rng.random()
    misspell = rng.random() < options.misspelled
    f_head = "FINDINS:" if misspell and rng.random() < 0.4 else "FINDINGS:"
    i_head = "IMPRESSON:" if misspell and f_head == "FINDINGS:" else "IMPRESSION:"
    if variant < options.neither:
        return _headerless_report(rng, exam, sentences, options)
    head = "HISTORY:" if rng.random() < options.history_header else "INDICATION:"
    blocks: list[tuple[str | None, list[str]]] = [
        ("EXAMINATION:", [exam]),
        (head, [indication]),
        ("TECHNIQUE:", [technique]),
        ("COMPARISON:", [comparison]),
        (f_head, _paragraph(sentences.findings)),
    ]
    if variant < options.neither + options.findings_only:
        labels, section = _aggregate(sentences.findings_tags), "findings"
    else:
        blocks.append((i_head, _paragraph(sentences.impression)))
        labels, section = _aggregate(sentences.impression_tags), "impression"
        if rng.random() < options.notification and findings:
            blocks.append(("NOTIFICATION:", _paragraph([NOTIFICATION])))
    if rng.random() < options.wet_read:
        time_of_day = f"{int(rng.integers(1, 12))}:{int(rng.integers(0, 60)):02d} PM"
        blocks.insert(0, ("WET READ:", [f"___ ___ ___ {time_of_day}"] + _paragraph(sentences.impression[:1])))
    return Report(text=_wrap_variants(rng, _format(blocks), options), labels=labels, section=section)


def _wrap_variants(rng: np.random.Generator, text: str, options: ReportOptions) -> str:
    """Optionally put an addendum above the report, separated by a line of underscores."""
    if rng.random() >= options.addendum:
        return text
    add = _paragraph([str(_pick(rng, ADDENDA))])
    head = [ADDENDUM_TITLE, f" ADDENDUM:  {add[0]}"] + [" " + ln for ln in add[1:]] + [" ", UNDERSCORES]
    return "\n".join(head) + "\n" + text
