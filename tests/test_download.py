"""Tests of the ``download`` stage against a local PhysioNet look-alike (http.server on 127.0.0.1).

The server (``tests/physionet_server.py``) serves a miniature MIMIC-CXR-JPG / MIMIC-CXR tree built in
tmp_path, checks HTTP basic auth, honours ``Range`` and counts the bytes it sends per file, so resume,
skip and verification are measured, not assumed. No MIMIC data is involved.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import socket
import sys
import types
import zipfile
from pathlib import Path

import pytest
import yaml
from physionet_server import PASSWORD, USER, FakePhysioNet

from raygen.config import ConfigError, from_dict
from raygen.data import dataset_root, local_copy
from raygen.data import physionet as pn
from raygen.stages import download as stage

JV = RV = "2.0.0"
DICOM_A = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
DICOM_B = "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"
DICOM_C = "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"
BIG = f"files/p10/p10000032/s50414267/{DICOM_A}.jpg"  # ~300 kB so a resume is measurable
SMALL = f"files/p10/p10000764/s57375967/{DICOM_B}.jpg"
OTHER_GROUP = f"files/p11/p11000011/s51029426/{DICOM_C}.jpg"
TXT_A, TXT_B, TXT_P11 = (
    "files/p10/p10000032/s50414267.txt",
    "files/p10/p10000764/s57375967.txt",
    "files/p11/p11000011/s51029426.txt",
)
DCM = f"files/p10/p10000032/s50414267/{DICOM_A}.dcm"  # must never be fetched


# --------------------------------------------------------------------------------------------------
# fixtures: a miniature PhysioNet tree and a server for it


def _jpg_bytes(size: int, seed: int) -> bytes:
    head = b"\xff\xd8\xff\xe0" + bytes([seed]) * 16
    body = hashlib.sha256(bytes([seed])).digest() * (size // 32 + 1)
    return (head + body)[: size - 2] + b"\xff\xd9"


def _csv_gz(header: str, rows: list[str]) -> bytes:
    return gzip.compress(("\n".join([header, *rows]) + "\n").encode())


def _report(text: str) -> bytes:
    return f"                                 FINAL REPORT\n IMPRESSION: {text}\n".encode()


def build_tree(root: Path) -> dict[str, dict[str, bytes]]:
    """Write the miniature releases under ``root/<project>/<version>``; return {project: {rel: bytes}}."""
    jpg = {
        "mimic-cxr-2.0.0-metadata.csv.gz": _csv_gz("dicom_id,subject_id,study_id", [f"{DICOM_A},10000032,50414267"]),
        "mimic-cxr-2.0.0-split.csv.gz": _csv_gz(
            "dicom_id,study_id,subject_id,split", [f"{DICOM_A},50414267,10000032,train"]
        ),
        "mimic-cxr-2.0.0-chexpert.csv.gz": _csv_gz("subject_id,study_id,Atelectasis", ["10000032,50414267,1.0"]),
        "mimic-cxr-2.0.0-negbio.csv.gz": _csv_gz("subject_id,study_id,Atelectasis", ["10000032,50414267,"]),
        "LICENSE.txt": b"licence text\n",
        BIG: _jpg_bytes(300_000, 1),
        SMALL: _jpg_bytes(2_000, 2),
        OTHER_GROUP: _jpg_bytes(2_000, 3),
    }
    reports_txt = {
        TXT_A: _report("No acute process."),
        TXT_B: _report("Small left effusion."),
        TXT_P11: _report("Cardiomegaly."),
    }
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        for rel, data in reports_txt.items():
            zf.writestr(rel, data)
    reports = {**reports_txt, DCM: b"DICM" * 1000, pn.REPORTS_ZIP: zbuf.getvalue()}
    tree = {pn.JPG_PROJECT: jpg, pn.REPORTS_PROJECT: reports}
    for project, files in tree.items():
        base = root / project / "2.0.0"
        for rel, data in files.items():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_bytes(data)
        sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {rel}\n" for rel, d in files.items())
        (base / pn.SUMS_FILE).write_text(sums)
    return tree


@pytest.fixture()
def tree(tmp_path):
    return build_tree(tmp_path / "server")


@pytest.fixture()
def server(tmp_path, tree):
    srv = FakePhysioNet(tmp_path / "server")
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No real credentials or netrc leak in; stdin is not a terminal."""
    for var in ("PHYSIONET_USERNAME", "PHYSIONET_PASSWORD", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture()
def creds(monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)


def write_params(path: Path, base_url: str = "http://127.0.0.1:9/files/", **mimic) -> Path:
    section = {
        "source": "mimic",
        "mimic": {"base_url": base_url, "workers": 3, "retries": 2, "backoff": 0.01, "timeout": 10.0, **mimic},
    }
    path.write_text(yaml.safe_dump({"profile": "demo", "download": section}))
    return path


def run(tmp_path: Path, server: FakePhysioNet | None, *extra: str, **mimic) -> int:
    base_url = server.base_url if server else "http://127.0.0.1:9/files/"
    params = write_params(tmp_path / "params.yaml", base_url, **mimic)
    return stage.main(
        ["--out", str(tmp_path / "data"), "--params", str(params), "--log", str(tmp_path / "download.log"), *extra]
    )


def jroot(tmp_path: Path) -> Path:
    return tmp_path / "data" / pn.JPG_PROJECT / JV


def rroot(tmp_path: Path) -> Path:
    return tmp_path / "data" / pn.REPORTS_PROJECT / RV


def read_marker(tmp_path: Path) -> dict:
    import json

    return json.loads((tmp_path / "data" / dataset_root.COMPLETE).read_text())


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# --------------------------------------------------------------------------------------------------
# downloads


def test_download_verifies_places_files_and_writes_marker(tmp_path, server, tree, creds):
    assert run(tmp_path, server) == 0
    jpg, rep = jroot(tmp_path), rroot(tmp_path)
    for rel in (*pn.JPG_CSVS, BIG, SMALL):
        assert (jpg / rel).read_bytes() == tree[pn.JPG_PROJECT][rel]
    assert not (jpg / OTHER_GROUP).exists(), "groups: [p10] must not pull p11"
    assert not (jpg / "LICENSE.txt").exists()
    # reports came as the zip, unpacked into files/ (all groups: the zip is the whole release)
    assert (rep / TXT_A).read_bytes() == tree[pn.REPORTS_PROJECT][TXT_A]
    assert (rep / TXT_P11).is_file()
    assert not (rep / DCM).exists()
    assert DCM not in server.fetched() and OTHER_GROUP not in server.fetched()
    assert not list((tmp_path / "data").rglob("*.part"))
    marker = read_marker(tmp_path)
    assert marker["source"] == "mimic" and marker["groups"] == ["p10"]
    assert marker["jpg"]["files"] == 6 and marker["jpg"]["downloaded"] == 6
    assert marker["jpg"]["bytes"] == sum(len(tree[pn.JPG_PROJECT][r]) for r in (*pn.JPG_CSVS, BIG, SMALL))
    assert marker["reports"]["reports"] == 3
    assert PASSWORD.encode() not in all_bytes_under(tmp_path / "data")
    assert PASSWORD not in (tmp_path / "download.log").read_text()


def test_rerun_skips_verified_files_without_rehashing(tmp_path, server, creds, monkeypatch):
    assert run(tmp_path, server) == 0
    n_requests = len(server.requests)
    hashed: list[Path] = []
    real = pn.sha256_file
    monkeypatch.setattr(pn, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert run(tmp_path, server) == 0
    assert len(server.requests) == n_requests, "a verified tree must not be fetched again"
    assert hashed == [], "size+mtime state must spare the rehash"
    assert read_marker(tmp_path)["jpg"]["skipped"] == 6
    # a file changed on disk is rehashed, found wrong, and fetched again
    (jroot(tmp_path) / SMALL).write_bytes(b"garbage")
    assert run(tmp_path, server) == 0
    assert server.fetched() >= {SMALL}
    assert [r for r, _, _ in server.requests[n_requests:]] == [f"{pn.JPG_PROJECT}/{JV}/{SMALL}"]


def test_resume_from_part_file_transfers_only_the_rest(tmp_path, server, tree, creds):
    data = tree[pn.JPG_PROJECT][BIG]
    part = jroot(tmp_path) / (BIG + pn.PART_SUFFIX)
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:200_000])
    assert run(tmp_path, server) == 0
    assert (jroot(tmp_path) / BIG).read_bytes() == data
    assert not part.exists()
    key = f"{pn.JPG_PROJECT}/{JV}/{BIG}"
    assert server.sent[key] == len(data) - 200_000
    assert (key, "bytes=200000-", 206) in server.requests


def test_complete_part_file_is_verified_not_refetched(tmp_path, server, tree, creds):
    # a crash between the last byte and the rename: the server answers 416 and the .part is verified
    data = tree[pn.JPG_PROJECT][SMALL]
    part = jroot(tmp_path) / (SMALL + pn.PART_SUFFIX)
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    assert run(tmp_path, server) == 0
    assert (jroot(tmp_path) / SMALL).read_bytes() == data
    assert f"{pn.JPG_PROJECT}/{JV}/{SMALL}" not in server.sent


def test_wrong_credentials_stop_with_clear_message_and_no_secret(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", "wrong-" + PASSWORD)
    assert run(tmp_path, server) == 1
    err = capsys.readouterr().err
    log_text = (tmp_path / "download.log").read_text()
    for text in (err, log_text):
        assert "PhysioNet refused the credentials from" in text
        assert USER not in text, "the username is never logged"
        assert "data use agreement" in text and "/content/mimic-cxr-jpg/2.0.0/" in text
        assert PASSWORD not in text
    assert not (tmp_path / "data" / dataset_root.COMPLETE).exists()
    assert PASSWORD.encode() not in all_bytes_under(tmp_path / "data")
    # the exception itself holds no password either
    client = pn.PhysioNetClient(server.base_url, pn.Credentials(USER, "wrong-" + PASSWORD), retries=0)
    with pytest.raises(pn.CredentialsError) as info:
        pn.fetch_sums(client, pn.JPG_PROJECT, JV, tmp_path / "x")
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(client.credentials)


def test_checksum_mismatch_deletes_bad_file_and_writes_no_marker(tmp_path, server, creds, capsys):
    server.corrupt.add(f"{pn.JPG_PROJECT}/{JV}/{SMALL}")
    assert run(tmp_path, server) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "re-run" in err
    assert not (jroot(tmp_path) / SMALL).exists()
    assert not (jroot(tmp_path) / (SMALL + pn.PART_SUFFIX)).exists()
    assert not (tmp_path / "data" / dataset_root.COMPLETE).exists()
    # fixed server: the re-run completes
    server.corrupt.clear()
    assert run(tmp_path, server) == 0 and (tmp_path / "data" / dataset_root.COMPLETE).exists()


def test_listed_file_missing_on_server_is_a_404_error(tmp_path, server, creds, capsys):
    (server.root / pn.JPG_PROJECT / JV / SMALL).unlink()
    assert run(tmp_path, server) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and SMALL in err
    assert not (tmp_path / "data" / dataset_root.COMPLETE).exists()
    assert not (jroot(tmp_path) / SMALL).exists()


def test_transient_errors_are_retried(tmp_path, server, creds):
    key = f"{pn.JPG_PROJECT}/{JV}/{SMALL}"
    server.fail_once.add(key)
    assert run(tmp_path, server) == 0
    assert [code for rel, _, code in server.requests if rel == key] == [503, 200]


def test_connection_lost_mid_file_resumes_on_retry(tmp_path, server, tree, creds):
    key = f"{pn.JPG_PROJECT}/{JV}/{BIG}"
    server.drop_once.add(key)
    assert run(tmp_path, server) == 0
    data = tree[pn.JPG_PROJECT][BIG]
    assert (jroot(tmp_path) / BIG).read_bytes() == data
    assert [(r, c) for k, r, c in server.requests if k == key] == [(None, 200), (f"bytes={len(data) // 2}-", 206)]
    assert server.sent[key] == len(data), "the retry fetched only the missing half"


def test_connection_failure_after_retries_says_what_to_do(tmp_path, creds, capsys):
    with socket.socket() as sock:  # a port that was free a moment ago: every attempt is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    params = write_params(tmp_path / "params.yaml", f"http://127.0.0.1:{port}/files/")
    assert stage.main(["--out", str(tmp_path / "data"), "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "after 3 attempts" in err and "re-run" in err
    assert not (tmp_path / "data" / dataset_root.COMPLETE).exists()


def test_txt_reports_pull_only_chosen_groups_never_dicoms(tmp_path, server, tree, creds):
    assert run(tmp_path, server, reports="txt") == 0
    rep = rroot(tmp_path)
    assert (rep / TXT_A).read_bytes() == tree[pn.REPORTS_PROJECT][TXT_A] and (rep / TXT_B).is_file()
    assert not (rep / TXT_P11).exists() and not (rep / DCM).exists() and not (rep / pn.REPORTS_ZIP).exists()
    assert read_marker(tmp_path)["reports"]["files"] == 2


def test_groups_all_pulls_every_group(tmp_path, server, creds):
    assert run(tmp_path, server, groups=["all"]) == 0
    assert (jroot(tmp_path) / OTHER_GROUP).is_file()


def test_group_absent_from_release_is_an_error(tmp_path, server, creds, capsys):
    assert run(tmp_path, server, groups=["p10", "p12"]) == 1
    assert "files/p12/" in capsys.readouterr().err


def test_params_reject_bad_groups_and_credentials_in_url():
    with pytest.raises(ConfigError):
        from_dict(stage.DownloadParams, {"mimic": {"groups": ["p10", "all"]}})
    with pytest.raises(ConfigError):
        from_dict(stage.DownloadParams, {"mimic": {"groups": ["10"]}})
    with pytest.raises(ConfigError, match="credentials"):
        from_dict(stage.DownloadParams, {"mimic": {"base_url": f"https://{USER}:{PASSWORD}@physionet.org/files/"}})
    assert from_dict(stage.DownloadParams, {"source": "mimic"}).mimic.groups == ["p10"]


def test_parse_sha256sums_formats():
    h = "ab" * 32
    text = f"{h}  files/p10/a.jpg\n{h.upper()} *./b.csv.gz\n\nnot a line\n"
    assert pn.parse_sha256sums(text) == {"files/p10/a.jpg": h, "b.csv.gz": h}


def test_unsafe_zip_member_is_refused(tmp_path):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(pn.PhysioNetError, match="unsafe"):
        pn.unpack_reports_zip(zpath, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


# --------------------------------------------------------------------------------------------------
# credentials


def test_credentials_from_env_then_netrc_then_prompt(tmp_path, monkeypatch):
    env = {"PHYSIONET_USERNAME": USER, "PHYSIONET_PASSWORD": PASSWORD, "HOME": str(tmp_path)}
    assert pn.resolve_credentials(env=env, interactive=False) == pn.Credentials(USER, PASSWORD, "env")
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text(f"machine physionet.org login bob password {PASSWORD}\n")
    netrc_file.chmod(0o600)
    got = pn.resolve_credentials(env={"HOME": str(tmp_path)}, interactive=False)
    assert (got.username, got.password, got.source) == ("bob", PASSWORD, "netrc")
    # $NETRC wins over ~/.netrc, and an entry for the base_url host is accepted
    other = tmp_path / "other-netrc"
    other.write_text(f"machine 127.0.0.1 login carol password {PASSWORD}\n")
    got = pn.resolve_credentials("127.0.0.1", env={"HOME": str(tmp_path), "NETRC": str(other)}, interactive=False)
    assert got.username == "carol"
    # prompt on a terminal
    monkeypatch.setattr("builtins.input", lambda prompt: "dave")
    monkeypatch.setattr(pn.getpass, "getpass", lambda prompt: PASSWORD)
    got = pn.resolve_credentials(env={"HOME": str(tmp_path / "none")}, interactive=True)
    assert (got.username, got.source) == ("dave", "prompt")
    assert PASSWORD not in repr(got) and PASSWORD not in str(got)


def test_missing_credentials_error_names_the_three_ways(tmp_path, server, capsys):
    with pytest.raises(pn.CredentialsError) as info:
        pn.resolve_credentials(env={"HOME": str(tmp_path)}, interactive=False)
    msg = str(info.value)
    assert "PHYSIONET_USERNAME" in msg and ".netrc" in msg and "interactive" in msg
    assert run(tmp_path, server) == 1
    assert "PHYSIONET_PASSWORD" in capsys.readouterr().err


def test_netrc_credentials_drive_a_download(tmp_path, server, monkeypatch):
    netrc_file = Path(os.environ["HOME"]) / ".netrc"
    netrc_file.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc_file.chmod(0o600)
    assert run(tmp_path, server) == 0
    assert (jroot(tmp_path) / BIG).is_file()
    assert PASSWORD not in (tmp_path / "download.log").read_text()


# --------------------------------------------------------------------------------------------------
# local copies


def _wget_mirror(src: Path, dest: Path, project: str, rels: list[str]) -> Path:
    """Copy ``rels`` of a server release to ``dest/physionet.org/files/<project>/2.0.0`` (wget -r layout)."""
    root = dest / "physionet.org" / "files" / project / "2.0.0"
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((src / project / "2.0.0" / rel).read_bytes())
    return root


@pytest.fixture()
def mirror(tmp_path, tree):
    src = tmp_path / "server"
    jpg = _wget_mirror(src, tmp_path / "mirror", pn.JPG_PROJECT, [*pn.JPG_CSVS, BIG, SMALL, OTHER_GROUP])
    rep = _wget_mirror(src, tmp_path / "mirror", pn.REPORTS_PROJECT, [TXT_A, TXT_B])
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / pn.REPORTS_ZIP).write_bytes(tree[pn.REPORTS_PROJECT][pn.REPORTS_ZIP])
    return types.SimpleNamespace(wget=tmp_path / "mirror", jpg=jpg, rep=rep, zips=tmp_path / "zips")


@pytest.mark.parametrize("jpg_form", ["version_root", "files_dir", "wget_dir", "physionet_dir"])
@pytest.mark.parametrize("rep_form", ["version_root", "files_dir", "zip", "zip_dir"])
def test_local_copy_is_linked_for_every_root_form(tmp_path, mirror, tree, monkeypatch, jpg_form, rep_form):
    monkeypatch.setattr(pn, "resolve_credentials", lambda *a, **k: pytest.fail("local mode needs no credentials"))
    jpg_arg = {
        "version_root": mirror.jpg,
        "files_dir": mirror.jpg / "files",
        "wget_dir": mirror.wget,
        "physionet_dir": mirror.wget / "physionet.org",
    }[jpg_form]
    rep_arg = {
        "version_root": mirror.rep,
        "files_dir": mirror.rep / "files",
        "zip": mirror.zips / pn.REPORTS_ZIP,
        "zip_dir": mirror.zips,
    }[rep_form]
    assert run(tmp_path, None, "--local-jpg", str(jpg_arg), "--local-reports", str(rep_arg)) == 0
    jpg = jroot(tmp_path)
    assert (jpg / "files/p10").is_symlink() and (jpg / BIG).read_bytes() == tree[pn.JPG_PROJECT][BIG]
    assert not (jpg / OTHER_GROUP).exists(), "only the groups asked for, as a download of them would hold"
    assert (jpg / pn.JPG_CSVS[0]).read_bytes() == tree[pn.JPG_PROJECT][pn.JPG_CSVS[0]]
    assert (rroot(tmp_path) / TXT_A).read_bytes() == tree[pn.REPORTS_PROJECT][TXT_A]
    marker = read_marker(tmp_path)
    assert marker["source"] == "local" and marker["jpg"]["path"] == str(mirror.jpg.resolve())
    assert marker["jpg"]["groups_present"] == ["p10", "p11"]


def test_local_copy_missing_pieces_are_listed(tmp_path, mirror, capsys):
    (mirror.jpg / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    assert run(tmp_path, None, "--local-jpg", str(mirror.wget), "--local-reports", str(mirror.rep)) == 1
    err = capsys.readouterr().err
    assert "missing mimic-cxr-2.0.0-split.csv.gz" in err and "Expected" in err
    assert not (tmp_path / "data" / dataset_root.COMPLETE).exists()
    with pytest.raises(pn.PhysioNetError, match="no files/ folder or zip"):
        local_copy.find_reports_source(tmp_path / "zips" / "..", RV)


def test_local_copy_lacking_a_requested_group_is_an_error(tmp_path, mirror, capsys):
    assert (
        run(tmp_path, None, "--local-jpg", str(mirror.jpg), "--local-reports", str(mirror.rep), groups=["p10", "p11"])
        == 1
    )
    assert "p11" in capsys.readouterr().err  # the reports copy holds only p10


def test_a_local_copy_holds_the_groups_asked_for_and_never_more(tmp_path, mirror):
    local = ("--local-jpg", str(mirror.jpg), "--local-reports", str(mirror.zips))
    assert run(tmp_path, None, *local, groups=["all"]) == 0
    assert (jroot(tmp_path) / "files").is_symlink() and (jroot(tmp_path) / OTHER_GROUP).is_file()
    assert run(tmp_path, None, *local, groups=["p11"]) == 0
    files = jroot(tmp_path) / "files"
    assert not files.is_symlink() and sorted(p.name for p in files.iterdir()) == ["p11"]
    assert (mirror.jpg / "files/p10").is_dir(), "narrowing the link never touches the copy"
    assert run(tmp_path, None, *local, groups=["p10"]) == 0
    assert sorted(p.name for p in files.iterdir()) == ["p10"], "a group no longer asked for is unlinked"
    assert run(tmp_path, None, *local, groups=["all"]) == 0, "and back to the whole copy"
    assert files.is_symlink() and (jroot(tmp_path) / OTHER_GROUP).is_file()


def test_local_jpg_with_downloaded_reports(tmp_path, server, mirror, creds):
    assert run(tmp_path, server, "--local-jpg", str(mirror.jpg)) == 0
    assert (jroot(tmp_path) / "files/p10").is_symlink()
    assert (rroot(tmp_path) / TXT_A).is_file()
    assert all(rel.startswith(pn.REPORTS_PROJECT) for rel, _, _ in server.requests)
    assert read_marker(tmp_path)["source"] == "mimic"


# --------------------------------------------------------------------------------------------------
# demo


@dataclasses.dataclass(frozen=True)
class FakeDemoParams:
    n_patients: int = 4
    seed: int = 0


def test_demo_branch_builds_once_per_params(tmp_path, monkeypatch, capsys):
    calls: list[tuple[Path, FakeDemoParams, int]] = []

    def fake_build(out: Path, params: FakeDemoParams, workers: int = 2) -> dict:
        calls.append((out, params, workers))
        (out / pn.JPG_PROJECT / JV / "files").mkdir(parents=True, exist_ok=True)
        return {"images": params.n_patients * 2}

    fake_params, fake_builder = types.ModuleType("raygen.data.demo.params"), types.ModuleType("raygen.data.demo.build")
    fake_params.DemoParams, fake_builder.build_demo_dataset = FakeDemoParams, fake_build
    monkeypatch.setitem(sys.modules, "raygen.data.demo.params", fake_params)
    monkeypatch.setitem(sys.modules, "raygen.data.demo.build", fake_builder)
    params = tmp_path / "params.yaml"

    def main_with(demo: dict) -> int:
        params.write_text(yaml.safe_dump({"download": {"source": "demo", "demo": demo, "demo_workers": 1}}))
        return stage.main(["--out", str(tmp_path / "data"), "--params", str(params)])

    assert main_with({"n_patients": 7}) == 0
    assert calls == [(tmp_path / "data", FakeDemoParams(n_patients=7, seed=0), 1)]
    marker = read_marker(tmp_path)
    assert marker.pop("tree")["contents_hashed"] is True  # the marker changes whenever the data does
    assert marker == {"source": "demo", "summary": {"images": 14}}
    assert main_with({"n_patients": 7}) == 0 and len(calls) == 1, "same params: nothing to rebuild"
    assert main_with({"n_patients": 8}) == 0 and len(calls) == 2
    assert calls[-1][1] == FakeDemoParams(n_patients=8)
    assert main_with({"bogus": 1}) == 1
    assert "download.demo.bogus" in capsys.readouterr().err
    assert len(calls) == 2


def test_tree_digest_follows_contents_or_only_paths_and_sizes(tmp_path):
    from raygen.io import tree_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "a/x.jpg").write_bytes(b"12345")
    (tmp_path / "download-complete.json").write_text("{}")
    first = tree_digest(tmp_path, contents=True, skip=("download-complete.json",))
    assert (first["files"], first["bytes"]) == (1, 5)
    (tmp_path / "download-complete.json").write_text('{"other": 1}')  # skipped: no change
    assert tree_digest(tmp_path, contents=True, skip=("download-complete.json",)) == first
    (tmp_path / "a/x.jpg").write_bytes(b"12346")  # same size, other bytes
    assert tree_digest(tmp_path, contents=True, skip=("download-complete.json",))["sha256"] != first["sha256"]
    sizes = tree_digest(tmp_path, contents=False, skip=("download-complete.json",))
    (tmp_path / "a/x.jpg").write_bytes(b"99999")
    assert tree_digest(tmp_path, contents=False, skip=("download-complete.json",)) == sizes  # paths + sizes only
    (tmp_path / "a/y.jpg").write_bytes(b"1")
    assert tree_digest(tmp_path, contents=False, skip=("download-complete.json",))["files"] == 2


def test_local_copy_from_params_needs_no_flag(tmp_path, mirror, tree, monkeypatch):
    """The pipeline's way: download.mimic.local_jpg / local_reports in params.yaml."""
    monkeypatch.setattr(pn, "resolve_credentials", lambda *a, **k: pytest.fail("local mode needs no credentials"))
    assert run(tmp_path, None, local_jpg=str(mirror.jpg), local_reports=str(mirror.rep)) == 0
    assert (jroot(tmp_path) / BIG).read_bytes() == tree[pn.JPG_PROJECT][BIG]
    marker = read_marker(tmp_path)
    assert marker["source"] == "local" and marker["tree"]["contents_hashed"] is False and marker["tree"]["files"] > 0
    assert marker["verified"]["jpg"].startswith("no: ") and "SHA256SUMS.txt" in marker["verified"]["jpg"]


def test_a_local_copy_is_verified_against_its_sha256sums(tmp_path, mirror, tree, monkeypatch):
    monkeypatch.setattr(pn, "resolve_credentials", lambda *a, **k: pytest.fail("local mode needs no credentials"))
    _wget_mirror(tmp_path / "server", mirror.wget, pn.JPG_PROJECT, [pn.SUMS_FILE])
    assert run(tmp_path, None, local_jpg=str(mirror.jpg), local_reports=str(mirror.rep)) == 0
    assert read_marker(tmp_path)["verified"]["jpg"].startswith("yes: ")


def test_a_truncated_jpg_in_a_local_copy_stops_the_link(tmp_path, mirror, capsys):
    _wget_mirror(tmp_path / "server", mirror.wget, pn.JPG_PROJECT, [pn.SUMS_FILE])
    (mirror.jpg / BIG).write_bytes((mirror.jpg / BIG).read_bytes()[:10])
    assert run(tmp_path, None, local_jpg=str(mirror.jpg), local_reports=str(mirror.rep)) == 1
    assert f"{BIG} (checksum differs)" in capsys.readouterr().err
    assert not (tmp_path / "data" / dataset_root.COMPLETE).exists()
    # The documented switch for a copy too large to hash again: linked, and the marker says unchecked.
    assert run(tmp_path, None, local_jpg=str(mirror.jpg), local_reports=str(mirror.rep), verify=False) == 0
    assert read_marker(tmp_path)["verified"]["jpg"] == "no: download.mimic.verify is false"


def test_a_successful_download_writes_neither_username_nor_password_anywhere(tmp_path, server, creds, monkeypatch):
    """Everything the stage leaves behind (data tree, markers, params, its log), grepped for the secrets."""
    monkeypatch.setenv("RAYGEN_TRACKING", "off")
    assert run(tmp_path, server) == 0
    everything = all_bytes_under(tmp_path)
    assert PASSWORD.encode() not in everything and USER.encode() not in everything
