"""Existing local copies of MIMIC-CXR-JPG and its reports, linked into the data layout instead of downloaded.

:func:`find_jpg_root` and :func:`find_reports_source` accept a copy as users have it (a wget mirror, a
``-nH --cut-dirs`` download, a ``files/`` folder, the reports zip); :func:`link_jpg` and
:func:`link_reports` check it (the group folders ``download.mimic.groups`` asks for, and the release's
``SHA256SUMS.txt`` when the copy holds one) and place symlinks at the RayGen layout positions
(:func:`link_tree`)::

    DATA/mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-*.csv.gz -> the copy
    DATA/mimic-cxr-jpg/2.0.0/files/pXX -> the copy's group folders that download.mimic.groups asks for
    DATA/mimic-cxr/2.0.0/files/pXX -> the same groups of the copy's reports (or a local zip, unpacked there)

(``groups: [all]`` links each ``files/`` folder whole.)
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from raygen.data.physionet import (
    JPG_CSVS,
    JPG_PROJECT,
    REPORTS_PROJECT,
    REPORTS_ZIP,
    SUMS_FILE,
    PhysioNetError,
    group_dirs,
    parse_sha256sums,
    select_jpg_files,
    select_report_txts,
    unpack_if_needed,
)
from raygen.io import sha256_file

if TYPE_CHECKING:
    from raygen.stages.download import MimicParams

log = logging.getLogger(__name__)


def link_jpg(out: Path, params: MimicParams, local: Path) -> dict[str, Any]:
    """Symlink an existing MIMIC-CXR-JPG copy's ``files/`` and CSV tables into the layout."""
    src = find_jpg_root(local, params.jpg_version)
    groups = _check_local_groups(src / "files", params.groups, "--local-jpg")
    verified = _verify_local(src, params, lambda sums: select_jpg_files(sums, params.jpg_version, params.groups))
    root = out / JPG_PROJECT / params.jpg_version
    link_tree(root, {c: src / c for c in JPG_CSVS})
    link_groups(root / "files", src / "files", params.groups)
    log.info("linked MIMIC-CXR-JPG from %s (groups %s)", src, ",".join(groups))
    return {"mode": "local", "path": str(src), "groups_present": groups, "verified": verified}


def _verify_local(root: Path, params: MimicParams, select: Callable[[dict[str, str]], list[str]]) -> str:
    """Check a local copy against the SHA256SUMS.txt beside it; say what was checked (for the marker)."""
    sums_file = root / SUMS_FILE
    if not params.verify:
        return "no: download.mimic.verify is false"
    if not sums_file.is_file():
        return f"no: {root} holds no {SUMS_FILE}"
    sums = parse_sha256sums(sums_file.read_text())
    count = verify_local_copy(root, select(sums), sums, params.workers)
    log.info("verified %d files of %s against %s", count, root, SUMS_FILE)
    return f"yes: {count} files against {SUMS_FILE}"


def link_reports(out: Path, params: MimicParams, local: Path) -> dict[str, Any]:
    """Symlink an existing reports ``files/`` folder into the layout, or unpack a local zip."""
    src = find_reports_source(local, params.reports_version)
    root = out / REPORTS_PROJECT / params.reports_version
    # A release copy keeps SHA256SUMS.txt beside the zip, or beside its files/ folder.
    if src.is_file():
        verified = _verify_local(src.parent, params, lambda sums: [src.name])
        count = unpack_if_needed(src, root)
        return {"mode": "local-zip", "path": str(src), "reports": count, "verified": verified}
    groups = _check_local_groups(src, params.groups, "--local-reports")
    verified = _verify_local(
        src.parent, params, lambda sums: select_report_txts(sums, params.reports_version, params.groups)
    )
    link_groups(root / "files", src, params.groups)
    log.info("linked MIMIC-CXR reports from %s (groups %s)", src, ",".join(groups))
    return {"mode": "local", "path": str(src), "groups_present": groups, "verified": verified}


def _check_local_groups(files_dir: Path, groups: list[str], flag: str) -> list[str]:
    present = group_dirs(files_dir)
    missing = [] if "all" in groups else [g for g in groups if g not in present]
    if missing:
        raise PhysioNetError(
            f"{flag}: {files_dir} lacks the group folder(s) {', '.join(missing)} that download.mimic.groups "
            f"asks for (present: {', '.join(present) or 'none'})"
        )
    return present


def verify_local_copy(root: Path, rels: list[str], sums: Mapping[str, str], workers: int) -> int:
    """Check the files ``rels`` under ``root`` (a local release copy) against ``sums``; return how many.

    Raises :class:`PhysioNetError` naming up to five missing or differing files: a truncated or empty
    JPG in a copy would otherwise flow silently into every stage.
    """

    def problem(rel: str) -> str | None:
        path = root / rel
        if not path.is_file():
            return f"{rel} (missing)"
        return None if sha256_file(path) == sums[rel] else f"{rel} (checksum differs)"

    with ThreadPoolExecutor(max(1, workers)) as pool:  # hashlib releases the GIL: threads read in parallel
        bad = [p for p in tqdm(pool.map(problem, rels), total=len(rels), desc="verify local copy", unit="file") if p]
    if bad:
        raise PhysioNetError(
            f"{len(bad)} of {len(rels)} files of the local copy {root} do not match its {SUMS_FILE}: "
            f"{', '.join(bad[:5])}; re-download them, or set download.mimic.verify: false "
            "to link the copy unchecked"
        )
    return len(rels)


def _candidate_roots(path: Path, project: str, version: str) -> list[Path]:
    """Where a release's version root may sit relative to a user-given path, most specific first."""
    if path.name == "files":
        return [path.parent]
    return [
        path,
        path / "physionet.org" / "files" / project / version,  # wget run in PATH
        path / "files" / project / version,  # PATH = the physionet.org folder
        path / project / version,  # PATH = physionet.org/files
        path / version,  # PATH = the project folder
    ]


def find_jpg_root(path: Path, version: str) -> Path:
    """The MIMIC-CXR-JPG version root (holding ``files/pXX`` and the four CSVs) reachable from ``path``.

    ``path`` may be the version root itself, its ``files/`` folder (CSVs beside it), a wget mirror
    folder (``.../physionet.org/files/mimic-cxr-jpg/<version>`` below it) or a folder on the way.
    A missing piece raises :class:`PhysioNetError` listing what is missing and what was expected.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise PhysioNetError(f"--local-jpg {path} does not exist")
    csvs = JPG_CSVS
    problems: list[str] = []
    for root in _candidate_roots(path, JPG_PROJECT, version):
        if not root.is_dir():
            continue
        has_files = (root / "files").is_dir()
        if not has_files and not any((root / c).exists() for c in csvs):
            continue
        missing = [c for c in csvs if not (root / c).is_file()]
        if not has_files:
            missing.insert(0, "files/")
        elif not group_dirs(root / "files"):
            missing.insert(0, "files/p1X/ group folders (p10..p19)")
        if not missing:
            return root
        problems.append(f"{root}: missing {', '.join(missing)}")
    expected = f"a folder holding files/p1X/... and {', '.join(csvs)}"
    found = "; ".join(problems) if problems else "no candidate folder found"
    raise PhysioNetError(
        f"--local-jpg {path} is not a MIMIC-CXR-JPG {version} copy ({found}). Expected {expected}: the "
        f"version root (e.g. .../physionet.org/files/{JPG_PROJECT}/{version}), its files/ folder, or the "
        "folder where wget was run"
    )


def find_reports_source(path: Path, version: str) -> Path:
    """The reports source reachable from ``path``: a ``files/`` folder of ``.txt`` reports, or the zip.

    Accepts the zip itself, the reports version root (``.../physionet.org/files/mimic-cxr/<version>``),
    its ``files/`` folder, a wget mirror folder, or a folder holding ``mimic-cxr-reports.zip``.
    Returns the ``files/`` folder or the zip path.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise PhysioNetError(f"--local-reports {path} does not exist")
    if path.is_file():
        if zipfile.is_zipfile(path):
            return path
        raise PhysioNetError(f"--local-reports {path} is a file but not a zip; expected {REPORTS_ZIP} or a folder")
    problems: list[str] = []
    for root in _candidate_roots(path, REPORTS_PROJECT, version):
        files_dir = root / "files"
        if files_dir.is_dir():
            groups = group_dirs(files_dir)
            if groups and _has_txt(files_dir / groups[0]):
                return files_dir
            problems.append(f"{files_dir}: no p1X/ group folders holding .txt reports")
        if (root / REPORTS_ZIP).is_file():
            return root / REPORTS_ZIP
    found = "; ".join(problems) if problems else "no files/ folder or zip found"
    raise PhysioNetError(
        f"--local-reports {path} holds no MIMIC-CXR reports ({found}). Expected {REPORTS_ZIP}, or a folder "
        f"with files/p1X/pSSSSSSSS/sTTTTTTTT.txt (e.g. .../physionet.org/files/{REPORTS_PROJECT}/{version}), "
        "or that files/ folder itself"
    )


def _has_txt(group_dir: Path) -> bool:
    """Whether the first few patient folders of a group hold a ``.txt`` (cheap: never walks the tree)."""
    for i, patient in enumerate(sorted(group_dir.iterdir())):
        if i >= 20:
            break
        if patient.is_dir() and any(p.suffix == ".txt" for p in patient.iterdir()):
            return True
    return False


def link_groups(target: Path, source: Path, groups: list[str]) -> None:
    """Make ``target`` (the layout's ``files/``) hold exactly the group folders ``groups`` of ``source``, each a
    link, so the data is what a download of those groups holds, whatever else the copy has: a pipeline's
    cohort must not depend on how its data arrived. ``all``: ``target`` is one link to the whole of ``source``.
    Links to groups no longer asked for are removed."""
    if target.is_symlink():
        target.unlink()  # an earlier link to the whole copy; never write into the copy through it
    elif target.is_dir():
        for entry in target.iterdir():
            if entry.is_symlink() and ("all" in groups or entry.name not in groups):
                entry.unlink()
    if "all" in groups:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # it held only group links; anything else (a download) makes link_tree refuse
        link_tree(target.parent, {target.name: source})
    else:
        link_tree(target, {group: source / group for group in groups})


def link_tree(target_root: Path, links: Mapping[str, Path]) -> None:
    """Make ``target_root`` a real folder whose entries ``name -> source`` are symlinks.

    Existing symlinks are replaced atomically; a real file or folder at a link position is left
    alone and raises :class:`PhysioNetError` (it may be a download we must not delete).
    """
    target_root.mkdir(parents=True, exist_ok=True)
    for name, source in links.items():
        dest = target_root / name
        if dest.exists() and not dest.is_symlink():
            raise PhysioNetError(
                f"{dest} already exists and is not a link (a previous download?); move it away or use "
                "another --out folder before linking a local copy"
            )
        tmp = dest.with_name(f".{dest.name}.link-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(source, tmp, target_is_directory=source.is_dir())
        os.replace(tmp, dest)
