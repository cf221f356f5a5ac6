"""A PhysioNet look-alike: a demo-rendered MIMIC-CXR release in PhysioNet's exact layout, served over HTTP.

Test-harness code, used by ``tests/test_download.py``, ``tests/test_physionet_server.py`` and
``tests/rehearsal.py`` (scripts put this folder on ``sys.path``). No MIMIC data is involved.

* :class:`FakePhysioNet` serves a folder under ``/files/`` on 127.0.0.1 with HTTP basic auth and
  ``Range``, and records every request and the bytes sent per file, so tests measure what the download
  stage fetched. It can also corrupt, fail or cut short chosen files.
* :func:`build_release` turns a dataset rendered by the demo renderer (``raygen demo-data`` or
  :func:`raygen.data.demo.build_demo_dataset`) into the two releases as PhysioNet serves them::

      SERVE/mimic-cxr-jpg/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg
      SERVE/mimic-cxr-jpg/2.0.0/{mimic-cxr-2.0.0-*.csv.gz (4), IMAGE_FILENAMES, LICENSE.txt, SHA256SUMS.txt}
      SERVE/mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT.txt
      SERVE/mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.dcm   (placeholders: never to be fetched)
      SERVE/mimic-cxr/2.0.0/{mimic-cxr-reports.zip, cxr-record-list.csv.gz, cxr-study-list.csv.gz,
                            LICENSE.txt, SHA256SUMS.txt}

  The reports zip holds ``files/pXX/pSSSSSSSS/sTTTTTTTT.txt`` (with the folder entries ``zip -r`` writes);
  each ``SHA256SUMS.txt`` lists every other file of its release as ``<sha256>  <relative path>``. The
  files are copies: the rendered tree is never changed, and a test may alter the served one. The demo's
  ``demo-ground-truth.csv`` is not served (the real release has no such file).

By hand, to try the ``rehearsal`` profile (its base_url is ``http://127.0.0.1:38917/files/``)::

    .venv/bin/python -m raygen demo-data --out /tmp/render --studies 90 --groups p10 p10 p10 p11
    .venv/bin/python tests/physionet_server.py --demo /tmp/render --serve /tmp/physionet
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import shutil
import signal
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

USER, PASSWORD = "alice", "s3cret-Pa55word"
PORT = 38917  # params.yaml: profiles.rehearsal.download.mimic.base_url
JPG_PROJECT, REPORTS_PROJECT, VERSION = "mimic-cxr-jpg", "mimic-cxr", "2.0.0"
JPG_CSVS = tuple(f"mimic-cxr-2.0.0-{t}.csv.gz" for t in ("metadata", "split", "chexpert", "negbio"))
REPORTS_ZIP, SUMS_FILE = "mimic-cxr-reports.zip", "SHA256SUMS.txt"
ZIP_TIME = (2019, 9, 13, 0, 0, 0)  # a fixed member time: the same rendering gives the same zip bytes
LICENSE = (
    "Stand-in for the PhysioNet Credentialed Health Data License 1.5.0.\n"
    "This release is NOT MIMIC-CXR: every image and report was rendered by RayGen's demo renderer.\n"
)
# A DICOM file starts with a 128-byte preamble and the magic "DICM"; the rest is a note, not a dataset.
DICOM_PLACEHOLDER = b"\0" * 128 + b"DICM" + b"placeholder: the download stage must never fetch a DICOM\n" * 64


# --------------------------------------------------------------------------------------------------
# the server


class FakePhysioNet:
    """Serves ``root`` under ``/files/`` with basic auth and Range on 127.0.0.1; records every request.

    ``port=0`` takes any free port; ``base_url`` says which. :meth:`close` stops the server.
    """

    def __init__(self, root: Path, port: int = 0, user: str = USER, password: str = PASSWORD) -> None:
        self.root = Path(root)
        self.requests: list[tuple[str, str | None, int]] = []  # (rel path, Range header, status)
        self.sent: dict[str, int] = {}  # rel path -> body bytes sent
        self.corrupt: set[str] = set()  # paths served with a flipped byte
        self.fail_once: set[str] = set()  # paths answered 503 the first time
        self.drop_once: set[str] = set()  # paths whose first answer stops half-way (connection lost)
        self.lock = threading.RLock()
        self._expected_auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server naming
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        rel = h.path.split("?", 1)[0].removeprefix("/files/")
        rng = h.headers.get("Range")
        if h.headers.get("Authorization") != self._expected_auth:
            return self._reply(h, rel, rng, 401, b"unauthorized", {"WWW-Authenticate": 'Basic realm="x"'})
        with self.lock:
            if rel in self.fail_once:
                self.fail_once.discard(rel)
                return self._reply(h, rel, rng, 503, b"busy")
        path = self._local(rel)
        if path is None:
            return self._reply(h, rel, rng, 404, b"not found")
        data = path.read_bytes()
        if rel in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        with self.lock:
            drop = rel in self.drop_once
            self.drop_once.discard(rel)
        if drop:  # promise the whole file, send half, hang up
            return self._reply(h, rel, rng, 200, data[: len(data) // 2], {}, length=len(data))
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return self._reply(h, rel, rng, 416, b"")
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            return self._reply(h, rel, rng, 206, data[start:], headers)
        return self._reply(h, rel, rng, 200, data)

    def _local(self, rel: str) -> Path | None:
        """The served file for ``rel``; None when absent, a folder, or outside ``root``."""
        path = self.root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not path.is_file():
            return None
        return path

    def _reply(self, h, rel, rng, code, body, headers=None, length=None) -> None:
        with self.lock:
            self.requests.append((rel, rng, code))
            if code in (200, 206):
                self.sent[rel] = self.sent.get(rel, 0) + len(body)
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body)

    def fetched(self) -> set[str]:
        """Release-relative paths that were served with a body."""
        return {rel.split("/", 2)[2] for rel, _, code in self.requests if code in (200, 206)}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------------
# the release


def build_release(demo_root: Path, serve_root: Path) -> dict[str, Any]:
    """Write both releases of the demo rendering in ``demo_root`` under ``serve_root`` (module docstring).

    Release folders already under ``serve_root`` are replaced. Returns counts: JPGs per group folder,
    reports, DICOM placeholders and files listed per release.
    """
    demo_root, serve_root = Path(demo_root), Path(serve_root)
    src_jpg, src_rep = demo_root / JPG_PROJECT / VERSION, demo_root / REPORTS_PROJECT / VERSION
    if not (demo_root / "demo-complete.json").is_file() or not (src_jpg / "files").is_dir():
        raise ValueError(f"{demo_root} is not a finished demo rendering (no demo-complete.json or JPG files/)")
    if serve_root.resolve() == demo_root.resolve():
        raise ValueError("build the release into another folder than the rendering")
    jpg, rep = serve_root / JPG_PROJECT / VERSION, serve_root / REPORTS_PROJECT / VERSION
    for folder in (jpg, rep):
        shutil.rmtree(folder, ignore_errors=True)
    images = _jpg_release(src_jpg, jpg)
    reports = _reports_release(src_rep, rep, images)
    groups: dict[str, int] = {}
    for rel in images:
        groups[rel.split("/")[1]] = groups.get(rel.split("/")[1], 0) + 1
    return {
        "jpg": {"root": str(jpg), "images": len(images), "groups": dict(sorted(groups.items())), "listed": _sums(jpg)},
        "reports": {"root": str(rep), "reports": len(reports), "dicoms": len(images), "listed": _sums(rep)},
    }


def _jpg_release(src: Path, dest: Path) -> list[str]:
    """Copy the JPG tree and the four tables; add IMAGE_FILENAMES and LICENSE.txt. Returns the JPG paths."""
    images = sorted(p.relative_to(src).as_posix() for p in (src / "files").rglob("*.jpg"))
    for rel in [*JPG_CSVS, *images]:
        _copy(src / rel, dest / rel)
    (dest / "IMAGE_FILENAMES").write_text("".join(f"{rel}\n" for rel in images))
    (dest / "LICENSE.txt").write_text(LICENSE)
    return images


def _reports_release(src: Path, dest: Path, images: list[str]) -> list[str]:
    """Copy the report .txt files, write a DICOM placeholder per image, the zip and the two record lists."""
    reports = sorted(p.relative_to(src).as_posix() for p in (src / "files").rglob("*.txt"))
    for rel in reports:
        _copy(src / rel, dest / rel)
    records, studies = [], {}
    for rel in images:
        _, _, patient, study, name = rel.split("/")
        dcm = rel.removesuffix(".jpg") + ".dcm"
        (dest / dcm).parent.mkdir(parents=True, exist_ok=True)
        (dest / dcm).write_bytes(DICOM_PLACEHOLDER)
        records.append(f"{patient[1:]},{study[1:]},{name.removesuffix('.jpg')},{dcm}")
        studies[(patient, study)] = f"{patient[1:]},{study[1:]},{rel.rsplit('/', 2)[0]}/{study}.txt"
    _write_gz(dest / "cxr-record-list.csv.gz", "subject_id,study_id,dicom_id,path", records)
    _write_gz(dest / "cxr-study-list.csv.gz", "subject_id,study_id,path", [studies[k] for k in sorted(studies)])
    _write_reports_zip(dest, reports)
    (dest / "LICENSE.txt").write_text(LICENSE)
    return reports


def _write_reports_zip(root: Path, reports: list[str]) -> None:
    """``mimic-cxr-reports.zip`` as ``zip -r``: ``files/``, ``files/pXX/``, ... folder entries, then each report."""
    folders = sorted({"/".join(rel.split("/")[:i]) + "/" for rel in reports for i in range(1, rel.count("/") + 1)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted([*folders, *reports]):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.external_attr = (0o40755 << 16) | 0x10 if name.endswith("/") else 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if name.endswith("/") else zipfile.ZIP_DEFLATED
            zf.writestr(info, b"" if name.endswith("/") else (root / name).read_bytes())
    (root / REPORTS_ZIP).write_bytes(buf.getvalue())


def _sums(root: Path) -> int:
    """Write ``root/SHA256SUMS.txt`` listing every other file under ``root``; returns how many."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    lines = [f"{_sha256(root / rel)}  {rel}\n" for rel in files if rel != SUMS_FILE]
    (root / SUMS_FILE).write_text("".join(lines))
    return len(lines)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _write_gz(path: Path, header: str, rows: list[str]) -> None:
    path.write_bytes(gzip.compress(("\n".join([header, *rows]) + "\n").encode(), mtime=0))


# --------------------------------------------------------------------------------------------------
# by hand


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a PhysioNet-layout release from a demo rendering and serve it until interrupted.",
        epilog=__doc__.split("By hand, ")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", type=Path, default=None, help="demo rendering (omit: serve --serve as it is)")
    parser.add_argument("--serve", type=Path, required=True, help="folder the releases are written to and served")
    parser.add_argument("--port", type=int, default=PORT, help="port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--user", default=USER, help="basic-auth username (default: %(default)s)")
    parser.add_argument("--password", default=PASSWORD, help="basic-auth password (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.demo is not None:
        summary = build_release(args.demo, args.serve)
        print(
            f"built {summary['jpg']['images']} JPGs {summary['jpg']['groups']}, {summary['reports']['reports']} reports"
        )
    server = FakePhysioNet(args.serve, args.port, args.user, args.password)
    print(f"serving {args.serve} at {server.base_url}")
    print(f"  export PHYSIONET_USERNAME={args.user} PHYSIONET_PASSWORD={args.password}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or kill PID (a background job ignores SIGINT)
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.close()
        print(f"stopped after {len(server.requests)} requests, {sum(server.sent.values())} bytes sent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
