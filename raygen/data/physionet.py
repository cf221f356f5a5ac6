"""PhysioNet access for MIMIC-CXR(-JPG): credentials, verified resumable downloads, local copies.

Two pieces, each usable alone, and the download stage's use of them:

* :func:`resolve_credentials` finds HTTP basic-auth credentials in ``PHYSIONET_USERNAME`` /
  ``PHYSIONET_PASSWORD``, else ``~/.netrc`` (or ``$NETRC``), else an interactive prompt on a TTY.
  The password lives only in a :class:`Credentials` object whose ``repr`` hides it; it never
  reaches a log line, an exception message, a file or MLflow.
* :class:`PhysioNetClient` and :func:`download_release` fetch files listed in a release's
  ``SHA256SUMS.txt``: parallel, resumable (HTTP ``Range`` into ``<name>.part``), retried with
  exponential backoff, verified against the listed SHA-256 and only then renamed into place, so a
  file at its final path is always complete. Verified files are remembered in a small append-only
  state file (size + mtime + checksum), so a re-run does not rehash hundreds of gigabytes.
* :func:`download_jpg` and :func:`download_reports` fetch the parts of the two releases that
  ``download.mimic`` asks for; the reports zip is unpacked once (:func:`unpack_if_needed`).

An existing local copy is linked instead of downloaded by :mod:`raygen.data.local_copy`.

Layout (mirrors PhysioNet)::

    DATA/mimic-cxr-jpg/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg
    DATA/mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz
    DATA/mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT.txt
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import getpass
import json
import logging
import netrc
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

from raygen.errors import UserError
from raygen.io import read_json_object, sha256_file, write_json

if TYPE_CHECKING:
    from raygen.stages.download import MimicParams

log = logging.getLogger(__name__)

JPG_PROJECT = "mimic-cxr-jpg"
REPORTS_PROJECT = "mimic-cxr"
REPORTS_ZIP = "mimic-cxr-reports.zip"
SUMS_FILE = "SHA256SUMS.txt"
UNPACKED = ".reports-unpacked.json"  # at the reports root: which zip the files/ tree came from
STATE_FILE = ".download-verified.jsonl"  # one JSON line per verified file, at the release root
PART_SUFFIX = ".part"
PROGRESS_EVERY = 60.0  # seconds between progress log lines (the tqdm bar only shows on a terminal)
CHUNK = 1 << 20  # 1 MiB per read: large enough for throughput, small enough to stop promptly
GROUP_RE = re.compile(r"^p1\d$")  # group folders p10..p19 (first two digits of the subject id)
CREDENTIAL_HELP = (
    "set PHYSIONET_USERNAME and PHYSIONET_PASSWORD in the environment, "
    "or add 'machine physionet.org login USER password PASS' to ~/.netrc (chmod 600), "
    "or run the command in an interactive terminal to be prompted"
)


# The four tables at the JPG version root. Their names keep "2.0.0" in later JPG releases too (2.1.0
# added files beside them), so they do not follow jpg_version.
JPG_CSVS: tuple[str, ...] = tuple(f"mimic-cxr-2.0.0-{t}.csv.gz" for t in ("metadata", "split", "chexpert", "negbio"))


class PhysioNetError(UserError, RuntimeError):
    """A download or link problem; the message says what to do and never holds a password."""


class CredentialsError(PhysioNetError):
    """Credentials are missing or PhysioNet refused them."""


# --------------------------------------------------------------------------------------------------
# Credentials


@dataclasses.dataclass(frozen=True)
class Credentials:
    """HTTP basic-auth credentials; ``repr``/``str`` never show the password."""

    username: str
    password: str = dataclasses.field(repr=False)
    source: str = "env"  # env | netrc | prompt: logged so users know which one was used

    def auth(self) -> requests.auth.HTTPBasicAuth:
        return requests.auth.HTTPBasicAuth(self.username, self.password)


def resolve_credentials(
    host: str = "physionet.org",
    env: Mapping[str, str] | None = None,
    interactive: bool | None = None,
) -> Credentials:
    """Credentials for ``host``: environment, then netrc, then a TTY prompt, else :class:`CredentialsError`.

    ``env`` defaults to ``os.environ``; ``interactive`` defaults to ``sys.stdin.isatty()``. The netrc
    file is ``$NETRC`` when set, else ``~/.netrc``; entries for ``physionet.org`` and for ``host``
    are both accepted.
    """
    env = os.environ if env is None else env
    user, password = env.get("PHYSIONET_USERNAME"), env.get("PHYSIONET_PASSWORD")
    if user and password:
        return Credentials(user, password, "env")
    found = _netrc_credentials(host, env)
    if found is not None and (not user or found.username == user):
        return found
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        if not user:
            user = input(f"PhysioNet username for {host}: ").strip()
        password = getpass.getpass(f"PhysioNet password for {user}: ")
        if user and password:
            return Credentials(user, password, "prompt")
    raise CredentialsError(f"no PhysioNet credentials found for {host}: {CREDENTIAL_HELP}")


def _netrc_credentials(host: str, env: Mapping[str, str]) -> Credentials | None:
    path = Path(env["NETRC"]) if env.get("NETRC") else Path(env.get("HOME") or Path.home()) / ".netrc"
    if not path.is_file():
        return None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; protect it with 'chmod 600 %s'", path, path)
    try:
        parsed = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as err:
        # The parse error quotes the offending line, which may hold a password: keep only the line number.
        line = getattr(err, "lineno", "?")
        raise CredentialsError(
            f"cannot parse {path} (line {line}); fix it or use another way: {CREDENTIAL_HELP}"
        ) from None
    for machine in dict.fromkeys((host, "physionet.org")):
        entry = parsed.authenticators(machine)
        if entry and entry[0] and entry[2]:
            return Credentials(entry[0], entry[2], "netrc")
    return None


# --------------------------------------------------------------------------------------------------
# Checksums and file selection


def parse_sha256sums(text: str) -> dict[str, str]:
    """``SHA256SUMS.txt`` content as ``{relative path: lower-case hex digest}``.

    Lines are ``<64 hex>  <path>`` (``sha256sum`` format; a ``*`` before the path marks binary
    mode and a leading ``./`` is dropped). Blank and malformed lines are skipped.
    """
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            continue
        rel = parts[1].lstrip("*")
        rel = rel[2:] if rel.startswith("./") else rel
        sums[rel] = parts[0].lower()
    return sums


def in_groups(rel: str, groups: Iterable[str]) -> bool:
    """Whether ``files/pXX/...`` lies under one of ``groups`` (``["all"]`` = every group)."""
    parts = rel.split("/")
    if len(parts) < 3 or parts[0] != "files":
        return False
    groups = tuple(groups)
    return "all" in groups or parts[1] in groups


def select_jpg_files(sums: Mapping[str, str], version: str, groups: Iterable[str]) -> list[str]:
    """The four CSV tables plus every ``.jpg`` under the chosen groups, in listing order."""
    groups = tuple(groups)
    csvs = JPG_CSVS
    missing = [c for c in csvs if c not in sums]
    if missing:
        raise PhysioNetError(
            f"{SUMS_FILE} of {JPG_PROJECT} {version} does not list {', '.join(missing)}; "
            "check jpg_version in params.yaml"
        )
    images = [rel for rel in sums if rel.endswith(".jpg") and in_groups(rel, groups)]
    _check_groups_present(images, groups, f"{JPG_PROJECT} {version}", "images")
    return [*csvs, *images]


def select_report_txts(sums: Mapping[str, str], version: str, groups: Iterable[str]) -> list[str]:
    """Report ``.txt`` files under the chosen groups (``wget -A .txt`` semantics: never DICOMs)."""
    groups = tuple(groups)
    txts = [rel for rel in sums if rel.endswith(".txt") and in_groups(rel, groups)]
    _check_groups_present(txts, groups, f"{REPORTS_PROJECT} {version}", "report .txt files")
    return txts


def _check_groups_present(rels: list[str], groups: tuple[str, ...], release: str, what: str) -> None:
    found = {rel.split("/")[1] for rel in rels}
    if "all" in groups:
        empty = [] if found else ["pXX"]
    else:
        empty = sorted(set(groups) - found)
    if empty:
        raise PhysioNetError(
            f"{SUMS_FILE} of {release} lists no {what} under {', '.join(f'files/{g}/' for g in empty)}; "
            "check download.mimic.groups (p10..p19 or all) and the release version"
        )


# --------------------------------------------------------------------------------------------------
# Verified-file state (so re-runs skip without rehashing)


class VerifiedState:
    """Remembers ``rel -> (size, mtime_ns, sha256)`` of files verified under one release root.

    Stored as JSON lines appended to ``<root>/.download-verified.jsonl``: an append is cheap per
    file and a torn last line (a crash mid-write) is simply ignored on the next load. A file whose
    size or mtime changed since it was recorded is rehashed.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / STATE_FILE
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, int, str]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self._entries[rec["rel"]] = (int(rec["size"]), int(rec["mtime_ns"]), str(rec["sha256"]))
                except (ValueError, KeyError, TypeError):
                    continue

    def matches(self, rel: str, path: Path, sha256: str) -> bool:
        """True when ``path`` was verified as ``sha256`` and has not changed since."""
        entry = self._entries.get(rel)
        if entry is None:
            return False
        st = path.stat()
        return entry == (st.st_size, st.st_mtime_ns, sha256)

    def record(self, rel: str, path: Path, sha256: str) -> None:
        st = path.stat()
        rec = {"rel": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
        with self._lock:
            self._entries[rel] = (st.st_size, st.st_mtime_ns, sha256)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")


# --------------------------------------------------------------------------------------------------
# HTTP client


class _Stopped(Exception):
    """Another worker failed fatally; this one leaves its ``.part`` for the next run to resume."""


class PhysioNetClient:
    """Authenticated, retrying, resumable HTTP GETs against one PhysioNet base URL.

    One ``requests.Session`` per thread (sessions are not guaranteed thread-safe). Retries cover
    connection errors, timeouts and 5xx/429 answers, with ``backoff * 2**attempt`` seconds between
    tries; 401/403 raise :class:`CredentialsError` at once; 404 raises :class:`PhysioNetError`.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 2.0,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.stop = threading.Event()
        self._local = threading.local()

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "physionet.org"

    def url(self, project: str, version: str, rel: str = "") -> str:
        return f"{self.base_url}{project}/{version}/{rel}"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self.credentials.auth()  # explicit auth: requests then ignores ~/.netrc
            self._local.session = session
        return session

    def fetch(
        self,
        url: str,
        dest: Path,
        sha256: str | None,
        project: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Download ``url`` to ``dest`` via ``dest.part`` (resumed when present); return bytes received.

        With ``sha256`` given the finished ``.part`` is hashed; a mismatch deletes it and raises
        :class:`PhysioNetError`. Only a verified (or, with ``sha256=None``, a complete) file is renamed
        onto ``dest``.
        """
        part = dest.with_name(dest.name + PART_SUFFIX)
        dest.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        for attempt in range(self.retries + 1):
            if self.stop.is_set():
                raise _Stopped()
            try:
                received += self._get_into(url, part, project, on_bytes)
                break
            except _TRANSIENT as err:
                if attempt == self.retries:
                    raise PhysioNetError(
                        f"could not download {url} after {self.retries + 1} attempts ({_describe(err)}); "
                        "check the network connection and re-run: finished files are kept and the "
                        f"partial one resumes from {part.name}"
                    ) from None
                wait = self.backoff * 2**attempt
                log.warning("retrying %s in %.1f s (%s)", url, wait, _describe(err))
                if self.stop.wait(wait):
                    raise _Stopped() from None
        if sha256 is not None:
            got = sha256_file(part)
            if got != sha256:
                part.unlink(missing_ok=True)
                raise PhysioNetError(
                    f"checksum mismatch for {url}: {SUMS_FILE} says {sha256}, the download hashes to "
                    f"{got}; the bad partial file was deleted, re-run to download it again"
                )
        os.replace(part, dest)
        return received

    def _get_into(self, url: str, part: Path, project: str, on_bytes: Callable[[int], None] | None) -> int:
        have = part.stat().st_size if part.exists() else 0
        # identity: byte offsets (Range, Content-Length, the checksum) refer to the file as stored
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        with self._session().get(url, headers=headers, stream=True, timeout=self.timeout) as resp:
            if resp.status_code == 416 and have:
                return 0  # the .part already holds the whole file (a crash came before the rename)
            self._raise_for_status(resp, url, project)
            mode = "ab" if have and resp.status_code == 206 else "wb"  # 200 = server ignored Range
            received = 0
            with open(part, mode) as f:
                for block in resp.raw.stream(CHUNK, decode_content=False):
                    if self.stop.is_set():
                        raise _Stopped()
                    f.write(block)
                    received += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
            expected = resp.headers.get("Content-Length")
            if expected is not None and received < int(expected):
                raise _Retryable(f"connection closed after {received} of {expected} bytes")
        return received

    def _raise_for_status(self, resp: requests.Response, url: str, project: str) -> None:
        code = resp.status_code
        if code in (401, 403):
            release = "/".join(url[len(self.base_url) :].split("/")[:2])  # <project>/<version>
            content = self.base_url.replace("/files/", "/content/") + f"{release}/"
            name = "MIMIC-CXR-JPG" if project == JPG_PROJECT else "MIMIC-CXR"
            raise CredentialsError(
                f"PhysioNet refused the credentials from {self.credentials.source} (HTTP {code}): "
                f"check username/password and that your account has signed the {name} data use "
                f"agreement at {content}"
            )
        if code == 404 and url.endswith(SUMS_FILE):
            raise PhysioNetError(
                f"PhysioNet has no release at {url.removesuffix(SUMS_FILE)} (HTTP 404); check base_url "
                "and the release versions in params.yaml"
            )
        if code == 404:
            raise PhysioNetError(
                f"PhysioNet has no file at {url} (HTTP 404) although {SUMS_FILE} lists it; check the "
                "release version and base_url in params.yaml, then re-run"
            )
        if code == 429 or code >= 500:
            raise _Retryable(f"HTTP {code}")
        if code >= 400:
            raise PhysioNetError(f"unexpected HTTP {code} for {url}; re-run later")


class _Retryable(Exception):
    """A transient failure worth another attempt."""


# Worth another attempt. Reading resp.raw directly surfaces urllib3's own errors, unwrapped.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    _Retryable,
)


def _describe(err: BaseException) -> str:
    # requests' messages carry the URL and the cause, never the auth header; keep them short.
    text = str(err) or type(err).__name__
    return text if len(text) < 300 else text[:300] + "..."


# --------------------------------------------------------------------------------------------------
# Release downloads


@dataclasses.dataclass(frozen=True)
class ReleaseResult:
    """What :func:`download_release` did for one release."""

    project: str
    version: str
    files: int  # files selected
    downloaded: int  # files fetched this run
    skipped: int  # files already present and verified (or present, with verify off)
    bytes: int  # bytes received this run
    unverified: int  # files that had no checksum to verify against


def fetch_sums(client: PhysioNetClient, project: str, version: str, root: Path) -> dict[str, str]:
    """The release's ``SHA256SUMS.txt``, kept at ``root`` (a release is immutable, so a kept copy is reused)."""
    path = root / SUMS_FILE
    if not path.is_file():
        log.info("fetching %s", client.url(project, version, SUMS_FILE))
        client.fetch(client.url(project, version, SUMS_FILE), path, None, project)
    sums = parse_sha256sums(path.read_text(encoding="utf-8", errors="replace"))
    if not sums:
        path.unlink(missing_ok=True)
        raise PhysioNetError(f"{client.url(project, version, SUMS_FILE)} lists no files; re-run, or check the version")
    return sums


def download_release(
    client: PhysioNetClient,
    project: str,
    version: str,
    root: Path,
    rels: list[str],
    sums: Mapping[str, str],
    verify: bool = True,
    workers: int = 4,
) -> ReleaseResult:
    """Download ``rels`` of ``project/version`` into ``root`` with ``workers`` threads.

    A file already at its place is skipped when the state file says it was verified unchanged, or
    when it hashes to the listed checksum (or, with ``verify=False``, simply when present). The first
    fatal error stops every worker (in-flight downloads keep their ``.part``) and is raised.
    """
    state = VerifiedState(root)
    progress = _ReleaseProgress(project, version, len(rels))

    def one(rel: str) -> None:
        dest = root / rel
        expected = sums.get(rel) if verify else None
        if verify and expected is None:
            log.warning("%s is not listed in %s: downloading it unverified", rel, SUMS_FILE)
        if dest.is_file() and _already_good(rel, dest, expected, verify, state):
            outcome = "skipped"
        else:
            client.fetch(client.url(project, version, rel), dest, expected, project, progress.on_bytes)
            if expected is not None:
                state.record(rel, dest, expected)
            outcome = "downloaded"
        progress.file_done(outcome, expected is None)

    _run_workers(client, one, rels, workers, progress)
    counts = progress.counts
    return ReleaseResult(
        project, version, len(rels), counts["downloaded"], counts["skipped"], counts["bytes"], counts["unverified"]
    )


class _ReleaseProgress:
    """Counts and the progress bar of one release download, updated by the worker threads."""

    def __init__(self, project: str, version: str, total: int) -> None:
        self.project, self.version, self.total = project, version, total
        self.counts = {"downloaded": 0, "skipped": 0, "bytes": 0, "unverified": 0}
        self.done = 0
        self.lock = threading.Lock()
        self.bar = tqdm(
            total=None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"{project} {version}",
            mininterval=1.0,
            disable=None,
        )

    def on_bytes(self, n: int) -> None:
        with self.lock:
            self.counts["bytes"] += n
            self.bar.update(n)

    def file_done(self, outcome: str, unverified: bool) -> None:
        with self.lock:
            self.counts[outcome] += 1
            self.counts["unverified"] += int(unverified)
            self.done += 1
            self.bar.set_postfix_str(f"files {self.done}/{self.total}", refresh=False)

    def log_line(self) -> None:
        log.info(
            "%s %s: %d/%d files, %.2f GB received",
            self.project,
            self.version,
            self.done,
            self.total,
            self.counts["bytes"] / 1e9,
        )


def _run_workers(
    client: PhysioNetClient, one: Callable[[str], None], rels: list[str], workers: int, progress: _ReleaseProgress
) -> None:
    """Run ``one(rel)`` for every file on a thread pool; the first fatal error stops the others and is raised."""
    client.stop.clear()
    pool = cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="physionet")
    try:
        futures = [pool.submit(one, rel) for rel in rels]
        last_log = time.monotonic()
        for fut in cf.as_completed(futures):
            err = fut.exception()
            if err is not None and not isinstance(err, _Stopped):
                raise err
            if time.monotonic() - last_log > PROGRESS_EVERY:  # for logs of non-TTY runs (Snakemake)
                last_log = time.monotonic()
                progress.log_line()
    except BaseException:
        client.stop.set()  # workers stop at their next chunk; their .part files resume next run
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.bar.close()
        client.stop.clear()


def _already_good(rel: str, dest: Path, expected: str | None, verify: bool, state: VerifiedState) -> bool:
    if not verify or expected is None:
        return True  # present is all we can know without a checksum
    if state.matches(rel, dest, expected):
        return True
    if sha256_file(dest) == expected:
        state.record(rel, dest, expected)
        return True
    log.warning("%s does not match its checksum: downloading it again", rel)
    return False


# --------------------------------------------------------------------------------------------------
# Reports zip


def unpack_reports_zip(zip_path: Path, reports_root: Path) -> int:
    """Unpack the reports zip's ``files/`` tree into ``reports_root/files`` atomically; return the .txt count.

    Extraction goes to a temporary folder beside the target, which is renamed into place only when
    complete (an older ``files/`` is replaced). Members with absolute paths or ``..`` are refused.
    """
    reports_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".files-unpack-", dir=reports_root))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for name in zf.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise PhysioNetError(f"{zip_path} holds an unsafe member path {name!r}; not unpacking it")
            zf.extractall(tmp)
        files_dir = _find_files_dir(tmp)
        if files_dir is None:
            raise PhysioNetError(f"{zip_path} holds no files/pXX/ folder of reports; is it {REPORTS_ZIP}?")
        count = sum(1 for _ in files_dir.rglob("*.txt"))
        target = reports_root / "files"
        _replace_dir(files_dir, target)
        return count
    except zipfile.BadZipFile as err:
        raise PhysioNetError(f"{zip_path} is not a valid zip ({err}); delete it and re-run") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _find_files_dir(root: Path) -> Path | None:
    """``root/files`` or ``root/<one folder>/files`` holding pXX folders (zips differ in their top folder)."""
    for cand in [root / "files", *(p / "files" for p in sorted(root.iterdir()) if p.is_dir())]:
        if cand.is_dir() and group_dirs(cand):
            return cand
    return None


def _replace_dir(src: Path, target: Path) -> None:
    """Move ``src`` onto ``target``; an existing target is moved aside first, then deleted."""
    old = None
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(src, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Group folders


def group_dirs(files_dir: Path) -> list[str]:
    """Sorted names of the group folders (p10..p19) directly in ``files_dir``; [] when unreadable."""
    try:
        return sorted(p.name for p in files_dir.iterdir() if p.is_dir() and GROUP_RE.match(p.name))
    except OSError:
        return []


# --------------------------------------------------------------------------------------------------
# The download stage's releases


def connect(params: MimicParams) -> PhysioNetClient:
    """A client for ``params.base_url`` with the credentials :func:`resolve_credentials` finds."""
    host = urlsplit(params.base_url).hostname or "physionet.org"
    creds = resolve_credentials(host)
    # Where the credentials came from, never the username or password: logs are shared more than data.
    log.info("PhysioNet credentials from %s", creds.source)
    return PhysioNetClient(params.base_url, creds, params.timeout, params.retries, params.backoff)


def download_jpg(client: PhysioNetClient, out: Path, params: MimicParams) -> dict[str, Any]:
    """Fetch the JPG release's CSV tables and the chosen groups' images."""
    root = out / JPG_PROJECT / params.jpg_version
    sums = fetch_sums(client, JPG_PROJECT, params.jpg_version, root)
    rels = select_jpg_files(sums, params.jpg_version, params.groups)
    log.info(
        "%s %s: %d files selected (4 tables + %d images in %s)",
        JPG_PROJECT,
        params.jpg_version,
        len(rels),
        len(rels) - len(JPG_CSVS),
        ",".join(params.groups),
    )
    res = download_release(client, JPG_PROJECT, params.jpg_version, root, rels, sums, params.verify, params.workers)
    _log_release(res)
    return {"mode": "download", **dataclasses.asdict(res)}


def download_reports(client: PhysioNetClient, out: Path, params: MimicParams) -> dict[str, Any]:
    """Fetch the reports: the zip (then unpack it) or the chosen groups' ``.txt`` files."""
    root = out / REPORTS_PROJECT / params.reports_version
    sums = fetch_sums(client, REPORTS_PROJECT, params.reports_version, root)
    if params.reports == "txt":
        rels = select_report_txts(sums, params.reports_version, params.groups)
    else:
        rels = [REPORTS_ZIP]
    res = download_release(
        client, REPORTS_PROJECT, params.reports_version, root, rels, sums, params.verify, params.workers
    )
    _log_release(res)
    info: dict[str, Any] = {"mode": "download", **dataclasses.asdict(res)}
    if params.reports == "zip":
        info["reports"] = unpack_if_needed(root / REPORTS_ZIP, root)
    return info


def unpack_if_needed(zip_path: Path, root: Path) -> int:
    """Unpack the reports zip into ``root/files`` unless that exact zip (size + mtime) was unpacked already."""
    st = zip_path.stat()
    stamp = {"zip": str(zip_path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    previous = read_json_object(root / UNPACKED)
    if previous is not None and (root / "files").is_dir() and {k: previous.get(k) for k in stamp} == stamp:
        log.info("reports already unpacked from %s", zip_path.name)
        return int(previous.get("reports", 0))
    t0 = time.perf_counter()
    count = unpack_reports_zip(zip_path, root)
    log.info("unpacked %d reports from %s in %.1f s", count, zip_path.name, time.perf_counter() - t0)
    write_json(root / UNPACKED, {**stamp, "reports": count})
    return count


def _log_release(res: ReleaseResult) -> None:
    log.info(
        "%s %s: %d files, %d downloaded (%.1f MB), %d already verified/present%s",
        res.project,
        res.version,
        res.files,
        res.downloaded,
        res.bytes / 1e6,
        res.skipped,
        f", {res.unverified} without checksum" if res.unverified else "",
    )
