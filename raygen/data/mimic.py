"""MIMIC-CXR(-JPG) layout: the release's CSV files with their exact schemas, and file paths.

One code path reads the real release and the demo dataset (docs/mimic-cxr.md sections 2-3)::

    JPG root      DATA/mimic-cxr-jpg/2.0.0/
                    mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz
                    files/p10/p10000032/s50414267/<dicom_id>.jpg
    reports root  DATA/mimic-cxr/2.0.0/
                    files/p10/p10000032/s50414267.txt

Readers check the exact column order (a file with other columns is an error naming the file and
both column lists) and return fixed dtypes: ids as ``int64`` (``dicom_id`` as ``str``), labels as
``float64`` with NaN for blank (1.0 positive, 0.0 negative, -1.0 uncertain, NaN not mentioned),
free-text columns as ``str`` with ``""`` for empty.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from raygen.data.labels import CHEXPERT_LABELS, CLASSES
from raygen.errors import UserError

log = logging.getLogger(__name__)

RELEASE = "mimic-cxr-2.0.0"

METADATA_COLUMNS: tuple[str, ...] = (
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
)
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
LABEL_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", *CHEXPERT_LABELS)
PROMPT_COLUMNS: tuple[str, ...] = ("study_id", "subject_id", "text", "source")

# Text columns are read as strings so that an empty ViewPosition stays "" (not NaN, not a float).
_METADATA_DTYPES: dict[str, str] = {
    "dicom_id": "str",
    "subject_id": "int64",
    "study_id": "int64",
    "PerformedProcedureStepDescription": "str",
    "ViewPosition": "str",
    "Rows": "Int64",
    "Columns": "Int64",
    "StudyDate": "Int64",
    "StudyTime": "float64",
    "ProcedureCodeSequence_CodeMeaning": "str",
    "ViewCodeSequence_CodeMeaning": "str",
    "PatientOrientationCodeSequence_CodeMeaning": "str",
}
_SPLIT_DTYPES: dict[str, str] = {"dicom_id": "str", "study_id": "int64", "subject_id": "int64", "split": "str"}
_LABEL_DTYPES: dict[str, str] = {
    "subject_id": "int64",
    "study_id": "int64",
    **{name: "float64" for name in CHEXPERT_LABELS},
}
_PROMPT_DTYPES: dict[str, str] = {"study_id": "int64", "subject_id": "int64", "text": "str", "source": "str"}

OFFICIAL_SPLITS = ("train", "validate", "test")
LABEL_VALUES = (1.0, 0.0, -1.0)  # plus NaN (blank)


class MimicFormatError(UserError, ValueError):
    """A MIMIC CSV whose columns or values do not match the release schema."""


# ----------------------------------------------------------------------------------------- paths


def group_folder(subject_id: int) -> str:
    """The group folder of a patient: ``p`` + the first two digits of the 8-digit subject id."""
    return f"p{str(int(subject_id))[:2]}"


def image_relpath(subject_id: int, study_id: int, dicom_id: str) -> str:
    """``files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg``, relative to the JPG root (POSIX separators)."""
    sid = str(int(subject_id))
    return f"files/p{sid[:2]}/p{sid}/s{int(study_id)}/{dicom_id}.jpg"


def report_relpath(subject_id: int, study_id: int) -> str:
    """``files/pXX/pSSSSSSSS/sTTTTTTTT.txt``, relative to the reports root."""
    sid = str(int(subject_id))
    return f"files/p{sid[:2]}/p{sid}/s{int(study_id)}.txt"


def image_relpaths(frame: pd.DataFrame) -> pd.Series:
    """Vectorised :func:`image_relpath` over a frame with subject_id, study_id, dicom_id (str Series)."""
    sid = frame["subject_id"].astype("int64").astype(str)
    study = frame["study_id"].astype("int64").astype(str)
    return "files/p" + sid.str[:2] + "/p" + sid + "/s" + study + "/" + frame["dicom_id"].astype(str) + ".jpg"


def group_folders(subject_ids: pd.Series) -> pd.Series:
    """Vectorised :func:`group_folder` (str Series like ``"p10"``)."""
    return "p" + subject_ids.astype("int64").astype(str).str[:2]


def csv_path(jpg_root: str | Path, kind: str) -> Path:
    """The release CSV ``mimic-cxr-2.0.0-<kind>.csv.gz`` under ``jpg_root`` (an unpacked ``.csv`` also works)."""
    root = Path(jpg_root)
    gz = root / f"{RELEASE}-{kind}.csv.gz"
    if gz.is_file():
        return gz
    plain = root / f"{RELEASE}-{kind}.csv"
    if plain.is_file():
        return plain
    raise FileNotFoundError(
        f"{gz} not found (nor {plain.name}); the JPG root must hold the MIMIC-CXR-JPG release CSVs "
        f"(PhysioNet mimic-cxr-jpg/2.0.0, or the demo dataset from 'raygen download')"
    )


# --------------------------------------------------------------------------------------- readers


def _read(path: str | Path, columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    path = Path(path)
    header = pd.read_csv(path, nrows=0)
    got = tuple(header.columns)
    if got != columns:
        raise MimicFormatError(
            f"{path}: columns do not match the MIMIC-CXR schema.\n  expected: {', '.join(columns)}\n"
            f"  found:    {', '.join(got)}"
        )
    try:
        # keep_default_na=False + na_values=[""] : only truly empty cells are missing ("NA" is text).
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    except (ValueError, TypeError) as err:
        raise MimicFormatError(f"{path}: values do not match the schema's dtypes: {err}") from err
    for name, dtype in dtypes.items():
        if dtype == "str":
            frame[name] = frame[name].fillna("").astype(str)
    log.info("read %s: %d rows", path.name, len(frame))
    return frame


def read_metadata(path: str | Path) -> pd.DataFrame:
    """``mimic-cxr-2.0.0-metadata.csv.gz``: one row per image, file order kept.

    Returns columns :data:`METADATA_COLUMNS`; ids int64, ``dicom_id`` / text str (``""`` empty),
    Rows/Columns/StudyDate nullable Int64, StudyTime float64 (HHMMSS.fff with leading zeros lost).
    """
    frame = _read(path, METADATA_COLUMNS, _METADATA_DTYPES)
    if frame["dicom_id"].duplicated().any():
        dup = frame.loc[frame["dicom_id"].duplicated(), "dicom_id"].iloc[0]
        raise MimicFormatError(f"{path}: dicom_id {dup} appears more than once")
    return frame


def read_split(path: str | Path) -> pd.DataFrame:
    """``mimic-cxr-2.0.0-split.csv.gz``: dicom_id str, study_id int64, subject_id int64, split str."""
    frame = _read(path, SPLIT_COLUMNS, _SPLIT_DTYPES)
    bad = sorted(set(frame["split"]) - set(OFFICIAL_SPLITS))
    if bad:
        raise MimicFormatError(f"{path}: unknown split value(s) {bad}; expected {OFFICIAL_SPLITS}")
    return frame


def read_labels(path: str | Path) -> pd.DataFrame:
    """``mimic-cxr-2.0.0-{chexpert,negbio}.csv.gz``: one row per study.

    Returns subject_id, study_id (int64) and the 14 :data:`CHEXPERT_LABELS` as float64 in
    {1.0, 0.0, -1.0, NaN}; any other value, or a study listed twice, is a :class:`MimicFormatError`.
    """
    frame = _read(path, LABEL_COLUMNS, _LABEL_DTYPES)
    values = frame[list(CHEXPERT_LABELS)].to_numpy()
    ok = np.isnan(values) | np.isin(values, LABEL_VALUES)
    if not ok.all():
        row, col = map(int, np.argwhere(~ok)[0])
        raise MimicFormatError(
            f"{path}: label {CHEXPERT_LABELS[col]} of study {frame['study_id'].iloc[row]} is "
            f"{values[row, col]!r}; expected 1.0, 0.0, -1.0 or blank"
        )
    if frame["study_id"].duplicated().any():
        dup = frame.loc[frame["study_id"].duplicated(), "study_id"].iloc[0]
        raise MimicFormatError(f"{path}: study_id {dup} has more than one label row")
    return frame


def read_prompts(path: str | Path) -> pd.DataFrame:
    """The sections stage's ``prompts.csv``: study_id, subject_id (int64), text, source (str, ``""`` empty)."""
    return _read(path, PROMPT_COLUMNS, _PROMPT_DTYPES)


def read_release(jpg_root: str | Path, label_source: str = "chexpert") -> dict[str, pd.DataFrame]:
    """Read metadata, split and the ``label_source`` labels (``chexpert`` or ``negbio``) under ``jpg_root``."""
    return {
        "metadata": read_metadata(csv_path(jpg_root, "metadata")),
        "split": read_split(csv_path(jpg_root, "split")),
        "labels": read_labels(csv_path(jpg_root, label_source)),
    }


def read_ground_truth(path: str | Path) -> pd.DataFrame:
    """The demo's ``demo-ground-truth.csv``: true injected labels (demo only; MIMIC has none).

    Needs subject_id, study_id and the 10 class columns (0/1); an optional dicom_id makes the truth
    per image. Other columns (laterality, severity, ...) are kept as read.
    """
    path = Path(path)
    frame = pd.read_csv(
        path,
        dtype={"subject_id": "int64", "study_id": "int64", "dicom_id": "str"},
        keep_default_na=False,
        na_values=[""],
    )
    missing = [c for c in ("subject_id", "study_id", *CLASSES) if c not in frame.columns]
    if missing:
        raise MimicFormatError(f"{path}: ground truth lacks column(s) {', '.join(missing)}")
    bad = [c for c in CLASSES if not frame[c].isin([0, 1]).all()]
    if bad:
        raise MimicFormatError(f"{path}: class column(s) {', '.join(bad)} hold values other than 0/1")
    return frame.astype({c: "int64" for c in CLASSES})
