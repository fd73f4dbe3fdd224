"""Download, verify and unpack a public corpus into the folder a job file reads.

    python -m harness.data.fetch {ptb,wikitext103} [--dest DIR] [--url URL] [--sha256 HEX]
                                 [--force] [--quiet] [--timeout SECONDS]

``--dest`` is the corpus folder itself (what a job file's ``data.data_dir`` names); it
defaults to the dataset's ``default_dir`` (``data/ptb``, ``data/wikitext-103``), relative to
the current folder. What to download comes from the registry (``datasets.py``: the
``archive_*`` fields); ``--url`` names a mirror and ``--sha256`` the archive's checksum.

What happens, in order, under an advisory lock (``.<name>.fetch.lock`` next to DIR), so two
fetches of one folder never interleave:

1. a folder that already holds the corpus is left alone (``--force`` fetches it again);
2. the archive is downloaded to ``<DIR>.download/<archive>.part``. A rerun after an
   interrupted download resumes it with an HTTP Range request when the server honours it
   (206), and starts over when the server answers with the whole file (200);
3. its SHA-256 is checked; a wrong one deletes the download;
4. only the split files named in the registry are read from the archive, and each is written
   under its own name (never under its path inside the archive) into a temporary folder next
   to DIR, which becomes DIR (or whose files are moved into an existing DIR) only once all of
   them are complete: a killed fetch never leaves half a corpus in DIR;
5. ``check_data_dir`` must pass on the result; the folder is printed on stdout.

Every failure (no network, an HTTP error, a dropped connection, a wrong checksum, a broken
archive) ends with ONE line on stderr and exit code 1, never a traceback; a bad command line
is argparse's exit code 2. Only the standard library is used (urllib, tarfile, zipfile).
This module is not imported by ``harness.data`` so that ``python -m`` runs it cleanly.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .datasets import DATASETS, DatasetInfo, check_data_dir
from .fsutil import atomic_write_text, file_lock
from .vocab import DataError

CHUNK = 1 << 20
USER_AGENT = "deqbench-fetch/1 (python urllib)"
HEX = frozenset("0123456789abcdef")


class FetchError(Exception):
    """A failure reported to the user as one line (the message) and exit code 1."""


def fetchable() -> list[str]:
    """The registered datasets that name an archive to download."""
    return sorted(name for name, info in DATASETS.items() if info.archive_url)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    info: DatasetInfo
    url: str
    sha256: str
    shown: str  # the destination as the user wrote it (for messages)
    dest: Path  # the destination, absolute with symlinks resolved (for the work)

    @property
    def archive_name(self) -> str:
        name = posixpath.basename(urllib.parse.urlsplit(self.url).path)
        safe = "".join(c for c in name if c.isalnum() or c in "._-").lstrip(".")
        return safe or "archive"

    @property
    def download_dir(self) -> Path:
        return self.dest.with_name(self.dest.name + ".download")

    @property
    def part(self) -> Path:
        return self.download_dir / f"{self.archive_name}.part"

    @property
    def meta(self) -> Path:
        return self.download_dir / f"{self.archive_name}.part.json"

    @property
    def lock(self) -> Path:
        return self.dest.with_name(f".{self.dest.name}.fetch.lock")

    @property
    def unpack_prefix(self) -> str:
        return f".{self.dest.name}.unpack-"

    @property
    def targets(self) -> list[str]:
        return [name for _, name in self.info.archive_members]


def by_hand(info: DatasetInfo, url: str, shown: str) -> str:
    """The manual steps, in one clause: what to download, unpack and put where."""
    names = ", ".join(name for _, name in info.archive_members)
    members = [_normalise(member) for member, _ in info.archive_members]
    folders = {posixpath.dirname(m) for m in members}
    same_names = all(posixpath.basename(m) == name for m, (_, name) in zip(members, info.archive_members))
    if same_names and len(folders) == 1:
        folder = folders.pop()
        where = f" (from {folder}/ in the archive)" if folder else ""
        return f"to fetch it by hand: download {url}, unpack it and put {names}{where} into {shown}"
    pairs = ", ".join(f"{m} as {name}" for m, (_, name) in zip(members, info.archive_members))
    return f"to fetch it by hand: download {url}, unpack it and put {pairs} into {shown}"


# ----------------------------------------------------------------------------- progress


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
        if n < scale * 1024 or unit == "GiB":
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


class Progress:
    """Status lines on stderr: one updating line on a terminal, a plain line now and then otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, quiet: bool = False,
                 interval: float = 15.0) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.interval = interval  # seconds between plain lines when the size is unknown
        self.open_line = False
        self.total: int | None = None
        self.first = 0
        self.started = 0.0
        self.last_shown = 0.0
        self.last_step = -1

    def say(self, text: str) -> None:
        if self.quiet:
            return
        self.close()
        print(f"{self.label}: {text}", file=self.stream, flush=True)

    def start(self, done: int, total: int | None) -> None:
        self.first, self.total = done, total
        self.started = self.last_shown = time.monotonic()
        self.last_step = self._step(done)

    def _step(self, done: int) -> int:
        return -1 if not self.total else min(10, done * 10 // self.total)

    def _text(self, done: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (done - self.first) / elapsed
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        return f"{_size(done)} of {_size(self.total)}{share}, {_size(int(rate))}/s"

    def update(self, done: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            if now - self.last_shown >= 0.2 or (self.total and done >= self.total):
                self.last_shown = now
                self.stream.write(f"\r{self.label}: {self._text(done)}\x1b[K")
                self.stream.flush()
                self.open_line = True
            return
        step = self._step(done)
        if (self.total and step > self.last_step) or (not self.total and now - self.last_shown >= self.interval):
            self.last_step, self.last_shown = step, now
            print(f"{self.label}: {self._text(done)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


# ----------------------------------------------------------------------------- download


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else Exception(str(exc.reason))
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _read_meta(plan: Plan) -> dict | None:
    try:
        meta = json.loads(plan.meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(plan: Plan, validator: str | None, verified_size: int | None = None) -> None:
    plan.download_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.meta, json.dumps({"url": plan.url, "sha256": plan.sha256, "validator": validator,
                                             "verified_size": verified_size}) + "\n")


def _already_verified(plan: Plan) -> bool:
    """A whole archive whose checksum passed before (a fetch that failed later, e.g. a full disk)."""
    meta = _read_meta(plan)
    return bool(meta and meta.get("url") == plan.url and meta.get("sha256") == plan.sha256
                and plan.part.is_file() and meta.get("verified_size") == plan.part.stat().st_size)


def discard_download(plan: Plan) -> None:
    plan.part.unlink(missing_ok=True)
    plan.meta.unlink(missing_ok=True)
    try:
        plan.download_dir.rmdir()
    except OSError:
        pass  # absent, or holds something that is not ours


def _resume_point(plan: Plan) -> tuple[int, str | None]:
    """Bytes already downloaded (0: none, or a partial file of another URL or checksum)."""
    meta = _read_meta(plan)
    if plan.part.is_file() and meta and meta.get("url") == plan.url and meta.get("sha256") == plan.sha256:
        return plan.part.stat().st_size, meta.get("validator")
    if plan.part.exists() or plan.meta.exists():
        discard_download(plan)
    return 0, None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL); TOTAL None when given as ``*``."""
    try:
        unit, _, spec = (value or "").strip().partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.partition("-")[0])
        return (start, None if total.strip() == "*" else int(total)) if unit == "bytes" else (None, None)
    except ValueError:
        return None, None


def _validator(headers) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def download(plan: Plan, progress: Progress, timeout: float) -> None:
    """Bring ``plan.part`` to the whole archive, resuming a partial one where possible."""
    offset, validator = _resume_point(plan)

    def unreachable(reason: str) -> FetchError:
        return FetchError(f"cannot download {plan.url} ({reason}); {by_hand(plan.info, plan.url, plan.shown)}")

    for _attempt in range(3):  # a resume the server will not serve is retried from the start
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        try:
            response = urllib.request.urlopen(urllib.request.Request(plan.url, headers=headers),
                                              timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                _, total = _content_range((exc.headers or {}).get("Content-Range", "").replace("*", "0-0"))
                if total == offset:  # the partial file is already whole: go on to the checksum
                    return
                # otherwise it is not a prefix the server knows: start over
                discard_download(plan)
                offset, validator = 0, None
                continue
            raise unreachable(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise unreachable(_reason(exc)) from None
        with response:
            status = response.status or 200  # file: URLs have no status
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    discard_download(plan)
                    offset, validator = 0, None
                    continue
                mode, done = "ab", offset
                progress.say(f"resuming {plan.url} at {_size(offset)} of {_size(total)}")
            else:
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.strip().isdigit() else None
                if offset:
                    progress.say(f"the server ignored the request to resume at {_size(offset)}; "
                                 "downloading from the start")
                mode, done = "wb", 0
                validator = _validator(response.headers)
                _write_meta(plan, validator)
                progress.say(f"downloading {plan.url} ({_size(total)}) to {plan.part}")
            progress.start(done, total)
            failure: str | None = None
            with open(plan.part, mode) as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        failure = _reason(exc)
                        break
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    progress.update(done)
            progress.close()
            if failure is None and total is not None and done < total:
                failure = "the connection closed early"
            if failure is not None:
                raise FetchError(f"the download of {plan.url} was interrupted after {_size(done)} of "
                                 f"{_size(total)} ({failure}); the partial file {plan.part} is kept: "
                                 "rerun the same command to resume it")
            return
    raise unreachable("the server would neither resume nor restart the download")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- unpack


def _normalise(name: str) -> str:
    """An archive member name compared the same way whatever its spelling (``./a/b``, ``/a/b``)."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    return posixpath.normpath(name) if name else ""


def _copy(src, target: Path, mode: int) -> None:
    with open(target, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(target, mode)


def unpack(plan: Plan, archive: Path, out_dir: Path, file_mode: int) -> None:
    """Write the registry's members of ``archive`` into ``out_dir`` under their split-file names."""
    wanted = {_normalise(member): name for member, name in plan.info.archive_members}
    where = f"the archive from {plan.url}"

    def missing(found: dict) -> None:
        absent = [m for m in wanted if m not in found]
        if absent:
            raise FetchError(f"{where} has no {', '.join(absent)}; is it the right archive? "
                             f"{by_hand(plan.info, plan.url, plan.shown)}")

    def not_a_file(member: str) -> FetchError:
        return FetchError(f"{member} in {where} is not a regular file (a link or a folder); not unpacking it")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                found = {}
                for entry in zf.infolist():
                    key = _normalise(entry.filename)
                    if key in wanted:
                        found[key] = entry
                missing(found)
                for key, name in wanted.items():
                    entry = found[key]
                    kind = stat.S_IFMT(entry.external_attr >> 16)
                    if entry.is_dir() or kind not in (0, stat.S_IFREG):
                        raise not_a_file(entry.filename)
                    with zf.open(entry) as src:
                        _copy(src, out_dir / name, file_mode)
        else:
            with tarfile.open(archive, "r:*") as tar:  # one pass; a name stored twice: the last wins
                found = {}
                for entry in tar:
                    key = _normalise(entry.name)
                    if key not in wanted:
                        continue
                    src = tar.extractfile(entry) if entry.isfile() else None
                    if src is None:
                        raise not_a_file(entry.name)
                    with src:
                        _copy(src, out_dir / wanted[key], file_mode)
                    found[key] = entry
                missing(found)
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise FetchError(f"cannot unpack {where} ({_reason(exc)}); "
                         f"{by_hand(plan.info, plan.url, plan.shown)}") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def place(plan: Plan, tmp: Path) -> None:
    """Make the complete ``tmp`` folder the corpus folder (or move its files into an existing one)."""
    dest = plan.dest
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{plan.shown} exists and is not a folder; move it away or choose another --dest")
    if not dest.exists():
        os.rename(tmp, dest)
        return
    if not any(dest.iterdir()):
        try:
            os.rename(tmp, dest)  # replaces an empty folder in one step
            return
        except OSError:
            pass  # e.g. a mount point: move the files instead
    for name in plan.targets:  # each file arrives whole (os.replace), old ones are overwritten
        os.replace(tmp / name, dest / name)
    tmp.rmdir()


def _clear_leftovers(plan: Plan) -> None:
    """Temporary unpack folders of fetches that were killed (we hold the lock: none is in use)."""
    parent = plan.dest.parent
    if parent.is_dir():
        for stale in parent.glob(plan.unpack_prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)


def _holds_corpus(info: DatasetInfo, dest: Path) -> bool:
    try:
        check_data_dir(info.name, dest)
    except DataError:
        return False
    return True


def fetch(plan: Plan, *, force: bool, timeout: float, progress: Progress) -> bool:
    """Fetch into ``plan.dest``; False when it already held the corpus (and not ``force``)."""
    plan.dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(plan.lock):
        if not force and _holds_corpus(plan.info, plan.dest):
            return False
        _clear_leftovers(plan)
        if _already_verified(plan):
            progress.say(f"using the archive downloaded before, {plan.part}")
        else:
            download(plan, progress, timeout)
        actual = sha256_of(plan.part)
        if actual != plan.sha256:
            discard_download(plan)
            raise FetchError(f"checksum mismatch for {plan.url}: expected SHA-256 {plan.sha256}, got {actual}; "
                             "the download was deleted (rerun to try again; if the archive changed "
                             "upstream, check it and pass --sha256)")
        meta = _read_meta(plan) or {}
        _write_meta(plan, meta.get("validator"), verified_size=plan.part.stat().st_size)
        progress.say(f"SHA-256 verified; unpacking {', '.join(plan.targets)}")
        mask = _umask()
        tmp = Path(tempfile.mkdtemp(prefix=plan.unpack_prefix, dir=plan.dest.parent))
        try:
            os.chmod(tmp, 0o777 & ~mask)
            try:
                unpack(plan, plan.part, tmp, 0o666 & ~mask)
            except FetchError:
                discard_download(plan)  # the right bytes, but not an archive this dataset can use
                raise
            try:
                check_data_dir(plan.info.name, tmp)
            except DataError as exc:  # pragma: no cover - unpack wrote every split file
                raise FetchError(str(exc).splitlines()[0]) from None
            place(plan, tmp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        discard_download(plan)
        try:
            check_data_dir(plan.info.name, plan.dest)
        except DataError as exc:  # pragma: no cover - placed files passed the same check
            raise FetchError(str(exc).splitlines()[0]) from None
    return True


# ----------------------------------------------------------------------------- command line


def _sha256_arg(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or not set(value) <= HEX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 (64 hex digits)")
    return value


def _url_arg(text: str) -> str:
    if urllib.parse.urlsplit(text).scheme not in ("http", "https", "file"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http://, https:// or file:// URL")
    return text


def build_parser() -> argparse.ArgumentParser:
    names = fetchable()
    defaults = ", ".join(f"{n}: {DATASETS[n].default_dir}" for n in names if DATASETS[n].default_dir)
    parser = argparse.ArgumentParser(
        prog="python -m harness.data.fetch",
        description="Download a public corpus, check its SHA-256 and unpack its split files into "
                    "the folder a job file's data.data_dir names.")
    parser.add_argument("dataset", choices=names, help="the corpus to fetch")
    parser.add_argument("--dest", default=None,
                        help=f"the corpus folder (default, relative to the current folder: {defaults})")
    parser.add_argument("--url", type=_url_arg, default=None, help="download from here instead (a mirror)")
    parser.add_argument("--sha256", type=_sha256_arg, default=None,
                        help="the archive's SHA-256 (default: the one the registry records)")
    parser.add_argument("--force", action="store_true", help="fetch again even if DEST holds the corpus")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (errors still print)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout, seconds (default 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 fetched or already there, 1 failed (one line on stderr), 2 bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    info = DATASETS[args.dataset]
    label = f"fetch {info.name}"
    progress = Progress(label, sys.stderr, quiet=args.quiet)

    def fail(message: str) -> int:
        progress.close()
        print(f"{label}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
        return 1

    shown = args.dest if args.dest is not None else info.default_dir
    if not shown:
        parser.error(f"{info.name} has no default folder; give --dest")
    dest = Path(os.path.realpath(os.path.expanduser(shown)))
    if dest == dest.parent:
        parser.error(f"--dest {shown!r} is a filesystem root; name the corpus folder itself")
    url = args.url or info.archive_url
    sha256 = args.sha256 or info.archive_sha256
    plan = Plan(info=info, url=url, sha256=sha256 or "", shown=shown, dest=dest)
    try:
        if not args.force and _holds_corpus(info, dest):
            return _report_present(plan, progress)
        if not sha256:
            known = []
            if info.archive_md5:
                known.append(f"MD5 {info.archive_md5}")
            if info.archive_size:
                known.append(f"{info.archive_size} bytes")
            hint = (f" (what is published: {', '.join(known)}; check a copy you downloaded by hand "
                    f"against that, then pass its `sha256sum`)") if known else ""
            return fail(f"no published SHA-256 is recorded for {url}, so the download could not be "
                        f"verified; pass --sha256 HEX{hint}")
        if not fetch(plan, force=args.force, timeout=args.timeout, progress=progress):
            return _report_present(plan, progress)  # another fetch finished it while we waited
    except FetchError as exc:
        return fail(str(exc))
    except OSError as exc:  # local trouble: permissions, a full disk
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return fail(f"{_reason(exc)}{where}")
    except KeyboardInterrupt:
        progress.close()
        kept = (f"; the partial download {plan.part} is kept: rerun the same command to resume it"
                if plan.part.exists() else "")
        print(f"{label}: interrupted{kept}", file=sys.stderr, flush=True)
        return 130
    progress.say(f"ready: {shown} ({', '.join(plan.targets)})")
    print(shown, flush=True)
    return 0


def _report_present(plan: Plan, progress: Progress) -> int:
    progress.say(f"{plan.shown} already holds the corpus; nothing to do (--force fetches it again)")
    print(plan.shown, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
