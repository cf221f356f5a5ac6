"""Cohort rules as pure functions on DataFrames: generator pairs, the FID set and classifier sets.

The recipe (docs/mimic-cxr.md section 5) and the hold-out that keeps evaluation honest:

1. **Classifier** (paper recipe): AP/PA images (optionally only some group folders, the paper used
   ``p10``) of studies that have a label row; a study with -1 in ANY of the 14 labels is dropped
   (policy ``drop``; ``zero``/``one`` map -1 to 0/1 instead); blank (not mentioned) reads as 0;
   studies positive for No Finding, Enlarged Cardiomediastinum, Pleural Other or Support Devices are
   dropped and those 4 columns removed; every remaining AP/PA image is kept. Patients are split
   80/10/10 into train/val/test (seeded permutation of the sorted unique subject ids).
2. **Held-out patients** = the classifier's val + test patients. None of them is ever in the
   generator's training or validation pairs.
3. **Prompt pairs**: for every study, the FIRST image (in ``mimic-cxr-2.0.0-metadata.csv`` row order)
   whose ViewPosition is one of the generator views (paper: AP) and whose file exists, joined to the
   study's prompt from the sections stage; a study without a prompt row, with empty prompt text, or
   (optionally) with a prompt from a section not allowed is dropped.
4. **FID set** = the pairs of a seeded ``fid_fraction`` share of the held-out patients (all by
   default), whatever their group folder: held-out frontal images, each with its own report's prompt.
5. **Generator** = the pairs of every patient who is not held out (optionally only some group
   folders), split by patient into train/val.

So generator patients are disjoint from classifier val/test and from FID; classifier-train patients
may be in generator training (as in the paper; the synthetic images augment exactly that training
set). :func:`patient_overlap` checks the disjointness that must hold.

Every filter goes through a :class:`Ledger`, which records images, studies and patients before and
after the rule; a rule that empties a cohort raises :class:`CohortError` naming the rule.

Only :class:`FileChecker` (which images exist) and :func:`add_ground_truth` (the demo's true labels)
touch the file system.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from raygen.data.labels import CHEXPERT_LABELS, CLASSES, DROPPED
from raygen.data.mimic import MimicFormatError, group_folders, image_relpaths, read_ground_truth
from raygen.errors import UserError

log = logging.getLogger(__name__)

IMAGE_COLUMNS: tuple[str, ...] = ("dicom_id", "subject_id", "study_id", "split", "view", "path")
PAIR_COLUMNS: tuple[str, ...] = (*IMAGE_COLUMNS, "text")
CLASSIFIER_COLUMNS: tuple[str, ...] = (*IMAGE_COLUMNS, *CLASSES)
CLASSIFIER_SPLITS: tuple[str, ...] = ("train", "val", "test")
GENERATOR_SPLITS: tuple[str, ...] = ("train", "val")
TRUTH_PREFIX = "true_"
_ID_COLUMNS = ("subject_id", "study_id", "dicom_id")

# Pairs of patient sets that must not share a patient (the hold-out guarantee).
MUST_BE_DISJOINT: tuple[tuple[str, str], ...] = (
    ("classifier_train", "classifier_val"),
    ("classifier_train", "classifier_test"),
    ("classifier_val", "classifier_test"),
    ("generator_train", "generator_val"),
    ("generator_train", "classifier_val"),
    ("generator_train", "classifier_test"),
    ("generator_train", "fid"),
    ("generator_val", "classifier_val"),
    ("generator_val", "classifier_test"),
    ("generator_val", "fid"),
)

# exists(paths relative to the JPG root) -> bool array of the same length.
ExistsFn = Callable[[Sequence[str]], np.ndarray]


class CohortError(UserError, ValueError):
    """A cohort that cannot be built (empty after a rule, too few patients to split)."""


# ----------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class RuleCount:
    """One filter rule applied to one cohort: images, studies and patients before and after it."""

    cohort: str
    rule: str
    images_before: int
    images_kept: int
    studies_before: int
    studies_kept: int
    patients_before: int
    patients_kept: int

    @property
    def images_dropped(self) -> int:
        return self.images_before - self.images_kept

    @property
    def studies_dropped(self) -> int:
        return self.studies_before - self.studies_kept

    @property
    def patients_dropped(self) -> int:
        return self.patients_before - self.patients_kept

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            images_dropped=self.images_dropped,
            studies_dropped=self.studies_dropped,
            patients_dropped=self.patients_dropped,
        )
        return out


@dataclass
class Ledger:
    """Records every rule applied while building the cohorts, in order, plus free-form notes."""

    rules: list[RuleCount] = field(default_factory=list)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def keep(self, frame: pd.DataFrame, mask: Any, cohort: str, rule: str) -> pd.DataFrame:
        """Return the rows of ``frame`` where ``mask`` is True (order kept, index reset); record it.

        Raises :class:`CohortError` naming ``rule`` when it leaves ``cohort`` empty.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(frame),):
            raise ValueError(f"mask of shape {mask.shape} for a frame of {len(frame)} rows")
        out = frame.loc[mask].reset_index(drop=True)
        record = RuleCount(
            cohort=cohort,
            rule=rule,
            images_before=len(frame),
            images_kept=len(out),
            studies_before=frame["study_id"].nunique(),
            studies_kept=out["study_id"].nunique(),
            patients_before=frame["subject_id"].nunique(),
            patients_kept=out["subject_id"].nunique(),
        )
        self.rules.append(record)
        log.debug("%s: %s kept %d of %d images", cohort, rule, len(out), len(frame))
        if out.empty:
            raise CohortError(
                f"the {cohort} cohort is empty after the rule '{rule}': it dropped all "
                f"{record.images_before} images ({record.studies_before} studies, "
                f"{record.patients_before} patients)"
                if len(frame)
                else f"the {cohort} cohort had no images left before the rule '{rule}'"
            )
        return out

    def note(self, cohort: str, key: str, value: Any) -> None:
        """Record a count that is not a filter (e.g. blank label cells read as 0)."""
        self.notes.setdefault(cohort, {})[key] = value

    def for_cohort(self, cohort: str) -> list[RuleCount]:
        return [r for r in self.rules if r.cohort == cohort]


# ------------------------------------------------------------------------------------- splitting


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer sizes summing to ``n`` closest to ``n * fractions`` (largest remainder).

    Every split with a positive fraction gets at least one item; raises :class:`CohortError` if
    ``n`` is smaller than the number of such splits.
    """
    frac = np.asarray(fractions, dtype=float)
    if (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be non-negative with a positive sum, got {list(fractions)}")
    frac = frac / frac.sum()
    wanted = (frac > 0).sum()
    if n < wanted:
        raise CohortError(f"{n} patient(s) cannot fill {wanted} non-empty splits {list(fractions)}")
    exact = n * frac
    sizes = np.floor(exact).astype(int)
    order = np.argsort(-(exact - sizes), kind="stable")  # ties go to the earlier split
    sizes[order[: n - sizes.sum()]] += 1
    for i in np.flatnonzero((frac > 0) & (sizes == 0)):  # take from the largest split
        sizes[np.argmax(sizes)] -= 1
        sizes[i] += 1
    return sizes.tolist()


def split_patients(subject_ids: Iterable[int], fractions: dict[str, float], seed: int, salt: str) -> pd.Series:
    """Assign every unique patient to one split; deterministic for (ids, fractions, seed, salt).

    The sorted unique ids are permuted by ``numpy.random.default_rng([seed, crc32(salt)])`` and cut
    into consecutive blocks of :func:`split_sizes`. ``salt`` makes independent draws (classifier
    split, FID share, generator split) from one seed.

    Returns:
        Series indexed by subject_id (int64, sorted) with the split name (str).
    """
    ids = np.unique(np.fromiter((int(s) for s in subject_ids), dtype=np.int64))
    sizes = split_sizes(len(ids), list(fractions.values()))
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    names = np.repeat(np.array(list(fractions), dtype=object), sizes)
    return pd.Series(names, index=pd.Index(rng.permutation(ids), name="subject_id"), name="split").sort_index()


def official_patient_split(split_frame: pd.DataFrame) -> pd.Series:
    """Per-patient split from ``mimic-cxr-2.0.0-split.csv`` (``validate`` -> ``val``).

    The official split is patient-disjoint; a patient listed in two splits is a :class:`MimicFormatError`.
    """
    per_patient = split_frame.groupby("subject_id")["split"].unique()
    mixed = per_patient[per_patient.map(len) > 1]
    if len(mixed):
        raise MimicFormatError(f"official split puts patient {mixed.index[0]} in {list(mixed.iloc[0])}")
    return per_patient.map(lambda s: "val" if s[0] == "validate" else s[0]).rename("split")


# ---------------------------------------------------------------------------------------- images


def select_images(
    metadata: pd.DataFrame,
    *,
    views: Sequence[str],
    groups: Sequence[str] | None,
    ledger: Ledger,
    cohort: str,
    exists: ExistsFn | None = None,
) -> pd.DataFrame:
    """Images whose ViewPosition is in ``views``, in group folders ``groups`` (None = all), on disk.

    Returns dicom_id, subject_id, study_id, view, path (relative to the JPG root), in metadata order.
    """
    frame = metadata[["dicom_id", "subject_id", "study_id", "ViewPosition"]].rename(columns={"ViewPosition": "view"})
    frame = frame.assign(path=image_relpaths(frame))
    frame = ledger.keep(frame, frame["view"].isin(list(views)), cohort, f"view in {list(views)}")
    if groups is not None:
        frame = ledger.keep(
            frame, group_folders(frame["subject_id"]).isin(list(groups)), cohort, f"group folder in {list(groups)}"
        )
    if exists is not None:
        found = np.asarray(exists(frame["path"].tolist()), dtype=bool)
        ledger.note(cohort, "images_missing_on_disk", int((~found).sum()))
        frame = ledger.keep(frame, found, cohort, "image file exists")
    return frame


def first_image_per_study(images: pd.DataFrame, ledger: Ledger, cohort: str) -> pd.DataFrame:
    """Keep the first row of each study, in the frame's (metadata) order."""
    return ledger.keep(
        images,
        ~images["study_id"].duplicated(keep="first").to_numpy(),
        cohort,
        "first image of its study (metadata row order)",
    )


# ---------------------------------------------------------------------------------------- labels


def attach_labels(images: pd.DataFrame, labels: pd.DataFrame, ledger: Ledger, cohort: str) -> pd.DataFrame:
    """Join the 14 label columns (float, NaN = blank) to images; images of unlabelled studies are dropped."""
    images = ledger.keep(
        images, images["study_id"].isin(labels["study_id"]).to_numpy(), cohort, "study has a label row"
    )
    merged = images.merge(
        labels.rename(columns={"subject_id": "_label_subject"}), on="study_id", how="left", validate="many_to_one"
    )
    bad = merged["_label_subject"] != merged["subject_id"]
    if bad.any():
        row = merged.loc[bad].iloc[0]
        raise MimicFormatError(
            f"study {row['study_id']}: label file says subject {row['_label_subject']}, "
            f"metadata says {row['subject_id']}"
        )
    return merged.drop(columns="_label_subject")


def apply_label_rules(frame: pd.DataFrame, *, uncertain: str, ledger: Ledger, cohort: str) -> pd.DataFrame:
    """The paper's label recipe on a frame holding the 14 :data:`CHEXPERT_LABELS` (float, NaN blank).

    ``uncertain``: ``drop`` drops a study with -1 in ANY of the 14 labels (paper), ``zero`` / ``one``
    read -1 as 0 / 1. Blank reads as 0. Studies positive for any of :data:`DROPPED` are dropped (one
    rule each) and those columns removed. Returns the frame with the 10 :data:`CLASSES` as int64 0/1.
    """
    values = frame[list(CHEXPERT_LABELS)]
    if uncertain == "drop":
        frame = ledger.keep(
            frame, ~(values == -1).any(axis=1).to_numpy(), cohort, "no uncertain (-1) value in any of the 14 labels"
        )
    elif uncertain in ("zero", "one"):
        n_uncertain = int((values == -1).to_numpy().sum())
        ledger.note(cohort, f"uncertain_cells_read_as_{uncertain}", n_uncertain)
        frame = frame.copy()
        frame[list(CHEXPERT_LABELS)] = values.mask(values == -1, 0.0 if uncertain == "zero" else 1.0)
    else:
        raise ValueError(f"uncertain policy {uncertain!r}; choose drop, zero or one")
    # Counted on one image per study, so the note is in studies.
    per_study = frame.drop_duplicates("study_id")[list(CHEXPERT_LABELS)]
    ledger.note(cohort, "blank_label_cells_read_as_0_per_study", int(per_study.isna().to_numpy().sum()))
    frame = frame.fillna({name: 0.0 for name in CHEXPERT_LABELS})
    for name in DROPPED:
        frame = ledger.keep(frame, (frame[name] != 1).to_numpy(), cohort, f"not positive for {name}")
    frame = frame.drop(columns=list(DROPPED))
    return frame.astype({name: "int64" for name in CLASSES})


# ------------------------------------------------------------------------------------- prompts


def attach_prompts(
    images: pd.DataFrame, prompts: pd.DataFrame, *, sources: Sequence[str] | None, ledger: Ledger, cohort: str
) -> pd.DataFrame:
    """Join each image's study prompt (``text``); studies without a usable prompt are dropped.

    Rules, in order: the study has a prompt row; its text is not blank; (if ``sources`` is given)
    the prompt came from one of those report sections (e.g. ``["impression"]`` as in the paper).
    """
    if prompts["study_id"].duplicated().any():
        dup = prompts.loc[prompts["study_id"].duplicated(), "study_id"].iloc[0]
        raise MimicFormatError(f"prompts: study {dup} has more than one prompt row")
    images = ledger.keep(
        images, images["study_id"].isin(prompts["study_id"]).to_numpy(), cohort, "study has a prompt row"
    )
    merged = images.merge(prompts[["study_id", "text", "source"]], on="study_id", how="left", validate="many_to_one")
    merged = ledger.keep(
        merged, (merged["text"].fillna("").str.strip() != "").to_numpy(), cohort, "prompt text is not empty"
    )
    if sources is not None:
        merged = ledger.keep(
            merged, merged["source"].isin(list(sources)).to_numpy(), cohort, f"prompt section in {list(sources)}"
        )
    return merged


# --------------------------------------------------------------------------------------- cohorts


@dataclass(frozen=True)
class Cohorts:
    """The three manifests and the ledger of every rule that built them.

    classifier: :data:`CLASSIFIER_COLUMNS` (split in train/val/test, classes int 0/1).
    generator:  :data:`PAIR_COLUMNS` (split in train/val). fid: :data:`PAIR_COLUMNS` (split = fid).
    """

    classifier: pd.DataFrame
    generator: pd.DataFrame
    fid: pd.DataFrame
    ledger: Ledger


def classifier_cohort(
    metadata: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    views: Sequence[str],
    groups: Sequence[str] | None,
    uncertain: str,
    fractions: Sequence[float],
    seed: int,
    ledger: Ledger,
    official_split: pd.DataFrame | None = None,
    exists: ExistsFn | None = None,
) -> pd.DataFrame:
    """Classifier images with the 10 classes and a patient-level train/val/test split.

    ``official_split`` (the release's split frame) replaces the seeded split by the official one;
    images of patients it does not list are dropped.
    """
    cohort = "classifier"
    images = select_images(metadata, views=views, groups=groups, ledger=ledger, cohort=cohort, exists=exists)
    images = attach_labels(images, labels, ledger, cohort)
    images = apply_label_rules(images, uncertain=uncertain, ledger=ledger, cohort=cohort)
    if official_split is None:
        split = split_patients(images["subject_id"], dict(zip(CLASSIFIER_SPLITS, fractions)), seed, "classifier")
    else:
        split = official_patient_split(official_split)
        images = ledger.keep(
            images, images["subject_id"].isin(split.index).to_numpy(), cohort, "patient in the official split file"
        )
    images["split"] = images["subject_id"].map(split)
    return _ordered(images, CLASSIFIER_COLUMNS, CLASSIFIER_SPLITS)


def prompt_pairs(
    metadata: pd.DataFrame,
    prompts: pd.DataFrame,
    *,
    views: Sequence[str],
    sources: Sequence[str] | None,
    ledger: Ledger,
    exists: ExistsFn | None = None,
) -> pd.DataFrame:
    """One (first existing frontal image, prompt) pair per study over all patients (cohort ``pairs``)."""
    cohort = "pairs"
    images = select_images(metadata, views=views, groups=None, ledger=ledger, cohort=cohort, exists=exists)
    images = first_image_per_study(images, ledger, cohort)
    return attach_prompts(images, prompts, sources=sources, ledger=ledger, cohort=cohort)


def generator_and_fid(
    pairs: pd.DataFrame,
    *,
    held_out: Iterable[int],
    groups: Sequence[str] | None,
    fid_fraction: float,
    val_fraction: float,
    seed: int,
    ledger: Ledger,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the pairs into the FID set (share of held-out patients) and generator train/val (the rest).

    Returns (generator, fid) frames with :data:`PAIR_COLUMNS`.
    """
    held = pairs["subject_id"].isin(set(int(s) for s in held_out)).to_numpy()
    candidates = pairs.loc[held, "subject_id"]
    if candidates.empty:
        raise CohortError("the fid cohort is empty: no held-out (classifier val/test) patient has a prompt pair")
    share = split_patients(candidates, {"fid": fid_fraction, "other": 1.0 - fid_fraction}, seed, "fid")
    fid_patients = share.index[share == "fid"]
    fid = ledger.keep(
        pairs,
        pairs["subject_id"].isin(fid_patients).to_numpy(),
        "fid",
        f"patient in the FID share ({fid_fraction:g}) of classifier val/test patients",
    )
    fid = fid.assign(split="fid")

    generator = ledger.keep(pairs, ~held, "generator", "patient not in classifier val/test (held out)")
    if groups is not None:
        generator = ledger.keep(
            generator,
            group_folders(generator["subject_id"]).isin(list(groups)).to_numpy(),
            "generator",
            f"group folder in {list(groups)}",
        )
    split = split_patients(
        generator["subject_id"], {"train": 1.0 - val_fraction, "val": val_fraction}, seed, "generator"
    )
    generator["split"] = generator["subject_id"].map(split)
    return _ordered(generator, PAIR_COLUMNS, GENERATOR_SPLITS), _ordered(fid, PAIR_COLUMNS, ("fid",))


def build_cohorts(
    metadata: pd.DataFrame,
    labels: pd.DataFrame,
    prompts: pd.DataFrame,
    *,
    classifier_views: Sequence[str],
    classifier_groups: Sequence[str] | None,
    uncertain: str,
    split_fractions: Sequence[float],
    generator_views: Sequence[str],
    generator_groups: Sequence[str] | None,
    prompt_sources: Sequence[str] | None,
    generator_val_fraction: float,
    fid_fraction: float,
    seed: int,
    official_split: pd.DataFrame | None = None,
    exists: ExistsFn | None = None,
) -> Cohorts:
    """All three cohorts in dependency order: classifier split first, then held-out FID, then generator.

    Raises :class:`CohortError` if a rule empties a cohort, and ``AssertionError`` if the result
    breaks :data:`MUST_BE_DISJOINT` (a bug, never data).
    """
    ledger = Ledger()
    classifier = classifier_cohort(
        metadata,
        labels,
        views=classifier_views,
        groups=classifier_groups,
        uncertain=uncertain,
        fractions=split_fractions,
        seed=seed,
        ledger=ledger,
        official_split=official_split,
        exists=exists,
    )
    held_out = classifier.loc[classifier["split"].isin(["val", "test"]), "subject_id"].unique()
    pairs = prompt_pairs(metadata, prompts, views=generator_views, sources=prompt_sources, ledger=ledger, exists=exists)
    generator, fid = generator_and_fid(
        pairs,
        held_out=held_out,
        groups=generator_groups,
        fid_fraction=fid_fraction,
        val_fraction=generator_val_fraction,
        seed=seed,
        ledger=ledger,
    )
    overlap = patient_overlap(patient_sets(classifier, generator, fid))
    leaks = {k: v for k, v in overlap.items() if v}
    assert not leaks, f"patient overlap between sets that must be disjoint: {leaks}"
    return Cohorts(classifier=classifier, generator=generator, fid=fid, ledger=ledger)


def _ordered(frame: pd.DataFrame, columns: Sequence[str], splits: Sequence[str]) -> pd.DataFrame:
    """Columns in contract order; rows by split order, then subject, study, dicom."""
    rank = frame["split"].map({name: i for i, name in enumerate(splits)})
    out = frame.assign(_rank=rank).sort_values(["_rank", "subject_id", "study_id", "dicom_id"], kind="stable")
    return out[list(columns)].reset_index(drop=True)


# --------------------------------------------------------------------------------- ground truth


def attach_ground_truth(frame: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Add the demo's true labels as ``true_<column>`` columns (joined on dicom_id if the truth has it, else study_id).

    Returns (frame with the extra columns, number of rows without a truth row). Integer columns stay
    integers (nullable Int64 where a row has no truth).
    """
    key = "dicom_id" if "dicom_id" in truth.columns else "study_id"
    if truth[key].duplicated().any():
        raise MimicFormatError(f"ground truth: {key} {truth.loc[truth[key].duplicated(), key].iloc[0]} repeats")
    value_columns = [c for c in truth.columns if c not in _ID_COLUMNS]
    renamed = truth[[key, *value_columns]].rename(columns={c: f"{TRUTH_PREFIX}{c}" for c in value_columns})
    out = frame.merge(renamed, on=key, how="left", validate="many_to_one")
    missing = int((~frame[key].isin(truth[key])).sum())
    for column in renamed.columns[1:]:
        if pd.api.types.is_integer_dtype(truth[column.removeprefix(TRUTH_PREFIX)]):
            out[column] = out[column].astype("Int64")
    return out, missing


# -------------------------------------------------------------------------------------- summaries


def patient_sets(classifier: pd.DataFrame, generator: pd.DataFrame, fid: pd.DataFrame) -> dict[str, set[int]]:
    """Patient ids per named set: classifier_{train,val,test}, generator_{train,val}, fid."""
    sets = {f"classifier_{s}": set(classifier.loc[classifier["split"] == s, "subject_id"]) for s in CLASSIFIER_SPLITS}
    sets.update({f"generator_{s}": set(generator.loc[generator["split"] == s, "subject_id"]) for s in GENERATOR_SPLITS})
    sets["fid"] = set(fid["subject_id"])
    return sets


def patient_overlap(sets: dict[str, set[int]]) -> dict[str, int]:
    """Shared patients for every pair in :data:`MUST_BE_DISJOINT` (all must be 0)."""
    return {f"{a} & {b}": len(sets[a] & sets[b]) for a, b in MUST_BE_DISJOINT}


def split_summary(frame: pd.DataFrame, label_columns: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Per split: images, studies, patients and, per label column, positives and prevalence (by image)."""
    out: dict[str, dict[str, Any]] = {}
    for split, part in frame.groupby("split", sort=False):
        entry: dict[str, Any] = {
            "images": len(part),
            "studies": int(part["study_id"].nunique()),
            "patients": int(part["subject_id"].nunique()),
        }
        if len(label_columns):
            values = part[list(label_columns)].astype(float)
            entry["positives"] = {c: int((values[c] == 1).sum()) for c in label_columns}
            entry["prevalence"] = {c: round(float((values[c] == 1).mean()), 4) for c in label_columns}
        out[str(split)] = entry
    return out


# ------------------------------------------------------------------------------------ files on disk


class FileChecker:
    """``exists(paths)`` for :func:`build_cohorts`: stats files under a root, cached."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._seen: dict[str, bool] = {}

    def __call__(self, paths: Sequence[str]) -> np.ndarray:
        todo = [p for p in dict.fromkeys(paths) if p not in self._seen]
        for rel in tqdm(todo, desc="check images", unit="img", disable=len(todo) < 10_000, mininterval=5):
            self._seen[rel] = os.path.isfile(self.root / rel)
        return np.fromiter((self._seen[p] for p in paths), dtype=bool, count=len(paths))


def add_ground_truth(cohorts: Cohorts, truth_csv: Path) -> tuple[Cohorts, dict[str, int]]:
    """Add ``true_*`` columns to every manifest; returns the new cohorts and rows missing a truth row."""
    truth = read_ground_truth(truth_csv)
    frames, missing = {}, {}
    for name in ("classifier", "generator", "fid"):
        frames[name], missing[name] = attach_ground_truth(getattr(cohorts, name), truth)
        if missing[name]:
            log.warning("%s: %d rows have no ground-truth row in %s", name, missing[name], truth_csv)
    return Cohorts(ledger=cohorts.ledger, **frames), missing
