"""``python -m harness.data.fetch``: download, verify, unpack, resume, and fail in one line.

A loopback HTTP server (127.0.0.1, a free port, one per test) serves small archives built
here in the real formats: a .tgz holding ./simple-examples/data/ptb.*.txt made from
tests/data/ptb, and a .zip holding wikitext-103/wiki.*.tokens made from tests/data/wikitext103.
It honours Range requests (or, when told, ignores them), can drop the connection after N
bytes of a response, and records every request it saw.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from harness.data import DATASETS, check_data_dir, load_corpus
from harness.data.fetch import Progress, main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parent / "data"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
WIKI_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
WT103_SHA256 = "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590"


# ----------------------------------------------------------------------------- archives


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE,
             link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 1_300_000_000
    info.type = kind
    info.linkname = link
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def make_ptb_tgz(extra: list[tuple[str, bytes | None, bytes, str]] = (), skip: tuple[str, ...] = ()) -> bytes:
    """simple-examples.tgz as published: members under ./simple-examples/, data/ptb.*.txt among others."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _tar_add(tar, "./simple-examples", kind=tarfile.DIRTYPE)
        _tar_add(tar, "./simple-examples/data", kind=tarfile.DIRTYPE)
        _tar_add(tar, "./simple-examples/data/ptb.char.train.txt", b"a _ b _ c\n")
        for name in PTB_FILES:
            if name not in skip:
                _tar_add(tar, f"./simple-examples/data/{name}", (SAMPLES / "ptb" / name).read_bytes())
        for name, data, kind, link in extra:
            _tar_add(tar, name, data, kind=kind, link=link)
    return buffer.getvalue()


def make_wiki_zip() -> bytes:
    """wikitext-103-v1.zip as published: a wikitext-103/ folder holding wiki.*.tokens."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("wikitext-103/", b"")
        for name in WIKI_FILES:
            zf.writestr(f"wikitext-103/{name}", (SAMPLES / "wikitext103" / name).read_bytes())
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ptb_tgz() -> bytes:
    return make_ptb_tgz()


@pytest.fixture(scope="module")
def wiki_zip() -> bytes:
    return make_wiki_zip()


# ----------------------------------------------------------------------------- the server


@dataclasses.dataclass
class Served:
    base: str = ""
    files: dict = dataclasses.field(default_factory=dict)
    honour_range: bool = True
    drop_after: int | None = None  # the next response stops after this many body bytes
    requests: list = dataclasses.field(default_factory=list)  # (path, Range header, status)

    def url(self, path: str) -> str:
        return self.base + path


def _handler(state: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            body = state.files.get(self.path)
            asked = self.headers.get("Range")
            if body is None:
                state.requests.append((self.path, asked, 404))
                self.send_error(404)
                return
            start, status = 0, 200
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if match and state.honour_range:
                start, status = int(match[1]), 206
                if start >= len(body):
                    state.requests.append((self.path, asked, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            state.requests.append((self.path, asked, status))
            payload = body[start:]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            if state.honour_range:
                self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if state.drop_after is not None:
                cut, state.drop_after = state.drop_after, None
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True  # the socket closes with the body unfinished
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def server():
    state = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url(path: str = "/simple-examples.tgz") -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def assert_same_files(dest: Path, sample: Path, names: tuple[str, ...]) -> None:
    for name in names:
        assert (dest / name).read_bytes() == (sample / name).read_bytes(), name


def leftovers(parent: Path, dest: Path) -> list[str]:
    """What a fetch left next to dest besides dest itself and its lock file."""
    return sorted(p.name for p in parent.iterdir()
                  if p.name not in (dest.name, f".{dest.name}.fetch.lock"))


# ----------------------------------------------------------------------------- the registry


def test_registry_names_archives_and_the_job_files_folders() -> None:
    jobs = {"ptb": ROOT / "jobs" / "ptb_sweep.yaml", "wikitext103": ROOT / "jobs" / "wt103_sweep.yaml"}
    for name, job in jobs.items():
        info = DATASETS[name]
        assert info.archive_url and info.archive_url.startswith(("http://", "https://"))
        assert info.default_dir == yaml.safe_load(job.read_text())["data"]["data_dir"]
        assert sorted(target for _, target in info.archive_members) == sorted(info.layouts[0])
        assert info.archive_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", info.archive_sha256)
    wt103 = DATASETS["wikitext103"]
    assert wt103.archive_url in wt103.source  # the S3 URL the registry already named
    assert wt103.archive_sha256 == WT103_SHA256 and wt103.archive_size == 190_229_076
    assert DATASETS["ptb"].archive_size == 34_869_662


def test_missing_corpus_error_points_at_fetch(tmp_path: Path) -> None:
    from harness.data import DataError

    with pytest.raises(DataError, match=r"python -m harness.data.fetch ptb --dest "):
        check_data_dir("ptb", tmp_path / "nowhere")


# ----------------------------------------------------------------------------- end to end


def test_fetch_ptb_end_to_end(server: Served, ptb_tgz: bytes, tmp_path: Path, capsys) -> None:
    server.files["/rnnlm/simple-examples.tgz"] = ptb_tgz
    dest = tmp_path / "data" / "ptb"
    code = main(["ptb", "--dest", str(dest), "--url", server.url("/rnnlm/simple-examples.tgz"),
                 "--sha256", sha(ptb_tgz)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == str(dest) and "Traceback" not in err
    check_data_dir("ptb", dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(PTB_FILES)  # only the named members
    assert_same_files(dest, SAMPLES / "ptb", PTB_FILES)
    assert leftovers(dest.parent, dest) == []  # no download folder, no temporary folder
    corpus = load_corpus("ptb", dest, cache_dir=tmp_path / "cache")
    assert corpus.train.numel() > 0 and "N" in corpus.vocab


def test_fetch_wikitext103_end_to_end(server: Served, wiki_zip: bytes, tmp_path: Path, capsys) -> None:
    server.files["/wikitext/wikitext-103-v1.zip"] = wiki_zip
    dest = tmp_path / "wikitext-103"
    dest.mkdir()  # an existing empty folder is fine
    code = main(["wikitext103", "--dest", str(dest), "--url", server.url("/wikitext/wikitext-103-v1.zip"),
                 "--sha256", sha(wiki_zip).upper()])
    out, err = capsys.readouterr()
    assert code == 0, err
    check_data_dir("wikitext103", dest)
    assert_same_files(dest, SAMPLES / "wikitext103", WIKI_FILES)
    assert leftovers(tmp_path, dest) == []
    reference = load_corpus("wikitext103", SAMPLES / "wikitext103", cache_dir=tmp_path / "c1")
    fetched = load_corpus("wikitext103", dest, cache_dir=tmp_path / "c2")
    assert fetched.vocab == reference.vocab and fetched.train.equal(reference.train)


def test_a_complete_dest_is_reported_and_not_downloaded_again(server: Served, ptb_tgz: bytes,
                                                              tmp_path: Path, capsys) -> None:
    server.files["/simple-examples.tgz"] = ptb_tgz
    dest = tmp_path / "ptb"
    argv = ["ptb", "--dest", str(dest), "--url", server.url("/simple-examples.tgz"), "--sha256", sha(ptb_tgz)]
    assert main(argv) == 0
    assert len(server.requests) == 1
    capsys.readouterr()
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "already holds the corpus" in err and out.strip() == str(dest)
    assert len(server.requests) == 1  # nothing downloaded
    (dest / "ptb.valid.txt").write_text("stale\n")
    (dest / "notes.txt").write_text("mine\n")
    assert main(argv + ["--force", "--quiet"]) == 0
    assert len(server.requests) == 2
    assert_same_files(dest, SAMPLES / "ptb", PTB_FILES)  # --force replaced the split files ...
    assert (dest / "notes.txt").read_text() == "mine\n"  # ... and left everything else alone


def test_two_fetches_of_one_folder_download_once(server: Served, ptb_tgz: bytes, tmp_path: Path) -> None:
    server.files["/simple-examples.tgz"] = ptb_tgz
    dest = tmp_path / "ptb"
    argv = ["ptb", "--dest", str(dest), "--url", server.url("/simple-examples.tgz"),
            "--sha256", sha(ptb_tgz), "--quiet"]
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(main(argv))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert codes == [0, 0]
    assert len(server.requests) == 1  # the second waited on the lock, then found the corpus
    assert_same_files(dest, SAMPLES / "ptb", PTB_FILES)


# ----------------------------------------------------------------------------- failures


def test_a_wrong_checksum_is_refused_in_one_line(server: Served, ptb_tgz: bytes, tmp_path: Path,
                                                 capsys) -> None:
    corrupted = bytearray(ptb_tgz)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.files["/simple-examples.tgz"] = bytes(corrupted)
    url = server.url("/simple-examples.tgz")
    dest = tmp_path / "ptb"
    code = main(["ptb", "--dest", str(dest), "--url", url, "--sha256", sha(ptb_tgz), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert url in err and sha(ptb_tgz) in err and sha(bytes(corrupted)) in err and "mismatch" in err
    assert not dest.exists()
    assert leftovers(tmp_path, dest) == []  # the partial download was deleted


def test_the_registry_checksum_applies_to_a_mirror(server: Served, wiki_zip: bytes, tmp_path: Path,
                                                   capsys) -> None:
    server.files["/mirror/wikitext-103-v1.zip"] = wiki_zip  # not the real archive
    dest = tmp_path / "wikitext-103"
    code = main(["wikitext103", "--dest", str(dest), "--url", server.url("/mirror/wikitext-103-v1.zip")])
    _, err = capsys.readouterr()
    assert code == 1
    assert len(error_lines(err)) == 1 and WT103_SHA256 in error_lines(err)[0]
    assert not dest.exists()


def _drop_then_rerun(server: Served, capsys, tmp_path: Path, *, dataset: str, folder: str, path: str,
                     archive: bytes, cut: int, honour_range: bool) -> tuple[str, str, tuple]:
    """Fetch ``dataset`` from ``path``; the connection drops after ``cut`` bytes, then a
    rerun (with the server honouring Range or not). Returns the first run's error output,
    the rerun's, and the rerun's last request."""
    server.files[path] = archive
    dest = tmp_path / folder
    argv = [dataset, "--dest", str(dest), "--url", server.url(path), "--sha256", sha(archive)]
    server.drop_after = cut
    assert main(argv) == 1
    _, first = capsys.readouterr()
    assert not dest.exists()
    assert (tmp_path / f"{folder}.download" / f"{Path(path).name}.part").read_bytes() == archive[:cut]
    server.honour_range = honour_range
    assert main(argv) == 0
    _, again = capsys.readouterr()
    assert leftovers(tmp_path, dest) == []
    return first, again, server.requests[-1]


def test_a_dropped_connection_keeps_the_partial_and_a_rerun_resumes_it(server: Served, ptb_tgz: bytes,
                                                                       tmp_path: Path, capsys) -> None:
    cut = len(ptb_tgz) // 3
    first, again, last = _drop_then_rerun(server, capsys, tmp_path, dataset="ptb", folder="ptb",
                                          path="/simple-examples.tgz", archive=ptb_tgz, cut=cut,
                                          honour_range=True)
    assert "Traceback" not in first
    [line] = error_lines(first)
    assert "interrupted" in line and "rerun" in line and server.url("/simple-examples.tgz") in line
    assert last == ("/simple-examples.tgz", f"bytes={cut}-", 206) and "resuming" in again
    assert_same_files(tmp_path / "ptb", SAMPLES / "ptb", PTB_FILES)


def test_a_rerun_restarts_cleanly_when_the_server_ignores_range(server: Served, wiki_zip: bytes,
                                                                tmp_path: Path, capsys) -> None:
    cut = len(wiki_zip) // 2
    _, again, last = _drop_then_rerun(server, capsys, tmp_path, dataset="wikitext103", folder="wikitext-103",
                                      path="/wikitext-103-v1.zip", archive=wiki_zip, cut=cut, honour_range=False)
    assert last == ("/wikitext-103-v1.zip", f"bytes={cut}-", 200) and "from the start" in again
    assert_same_files(tmp_path / "wikitext-103", SAMPLES / "wikitext103", WIKI_FILES)


def test_a_partial_file_that_is_already_whole_is_not_downloaded_again(server: Served, ptb_tgz: bytes,
                                                                      tmp_path: Path) -> None:
    import json

    server.files["/simple-examples.tgz"] = ptb_tgz
    url = server.url("/simple-examples.tgz")
    download_dir = tmp_path / "ptb.download"  # as a fetch killed before its checksum leaves it
    download_dir.mkdir()
    (download_dir / "simple-examples.tgz.part").write_bytes(ptb_tgz)
    (download_dir / "simple-examples.tgz.part.json").write_text(
        json.dumps({"url": url, "sha256": sha(ptb_tgz), "validator": None}))
    dest = tmp_path / "ptb"
    assert main(["ptb", "--dest", str(dest), "--url", url, "--sha256", sha(ptb_tgz), "--quiet"]) == 0
    assert server.requests == [("/simple-examples.tgz", f"bytes={len(ptb_tgz)}-", 416)]
    assert_same_files(dest, SAMPLES / "ptb", PTB_FILES)
    assert leftovers(tmp_path, dest) == []


def test_an_unreachable_host_fails_in_one_line_with_the_manual_steps(tmp_path: Path, capsys) -> None:
    url = closed_port_url()
    dest = tmp_path / "ptb"
    code = main(["ptb", "--dest", str(dest), "--url", url, "--sha256", "0" * 64, "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert url in line and "refused" in line.lower()
    assert "by hand" in line and str(dest) in line and all(name in line for name in PTB_FILES)
    assert not dest.exists()


def test_an_http_error_fails_in_one_line(server: Served, tmp_path: Path, capsys) -> None:
    url = server.url("/gone/wikitext-103-v1.zip")
    code = main(["wikitext103", "--dest", str(tmp_path / "wt"), "--url", url, "--quiet"])
    _, err = capsys.readouterr()
    assert code == 1
    [line] = err.splitlines()
    assert url in line and "HTTP 404" in line and "by hand" in line


def test_without_a_published_checksum_fetch_wants_sha256(server: Served, ptb_tgz: bytes, tmp_path: Path,
                                                         capsys, monkeypatch) -> None:
    monkeypatch.setitem(DATASETS, "ptb", dataclasses.replace(DATASETS["ptb"], archive_sha256=None))
    server.files["/simple-examples.tgz"] = ptb_tgz
    code = main(["ptb", "--dest", str(tmp_path / "ptb"), "--url", server.url("/simple-examples.tgz")])
    _, err = capsys.readouterr()
    assert code == 1
    [line] = err.splitlines()
    assert "--sha256" in line and "SHA-256" in line
    assert server.requests == []  # refused before downloading anything


def test_bad_command_lines_are_argparse_errors(capsys) -> None:
    for argv in (["enwik8"], ["ptb", "--sha256", "not-a-checksum"], ["ptb", "--url", "ftp://x/y.tgz"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_only_the_named_members_are_written_by_their_names(server: Served, tmp_path: Path, capsys) -> None:
    evil = make_ptb_tgz(extra=[("../escape.txt", b"out\n", tarfile.REGTYPE, ""),
                               ("/tmp-absolute.txt", b"abs\n", tarfile.REGTYPE, "")])
    server.files["/a.tgz"] = evil
    work = tmp_path / "work"
    dest = work / "ptb"
    assert main(["ptb", "--dest", str(dest), "--url", server.url("/a.tgz"), "--sha256", sha(evil), "--quiet"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(PTB_FILES)
    assert not list(tmp_path.rglob("escape.txt")) and not list(tmp_path.rglob("tmp-absolute.txt"))

    linked = make_ptb_tgz(skip=("ptb.valid.txt",),
                          extra=[("./simple-examples/data/ptb.valid.txt", None, tarfile.SYMTYPE, "/etc/passwd")])
    dest2 = work / "ptb2"
    line = _refused_in_one_line(server, capsys, linked, dest2)
    assert "ptb.valid.txt" in line and "not a regular file" in line
    assert not dest2.exists() and not [p for p in work.iterdir() if p.name.startswith(".ptb2.unpack-")]


def _refused_in_one_line(server: Served, capsys, archive: bytes, dest: Path) -> str:
    """Fetch PTB from ``archive`` into ``dest``: it must fail (exit 1) with one line; returns it."""
    server.files["/refused.tgz"] = archive
    code = main(["ptb", "--dest", str(dest), "--url", server.url("/refused.tgz"), "--sha256", sha(archive),
                 "--quiet"])
    _, err = capsys.readouterr()
    assert code == 1
    [line] = err.splitlines()
    return line


def test_an_archive_without_the_members_is_refused(server: Served, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "ptb"
    line = _refused_in_one_line(server, capsys, make_ptb_tgz(skip=("ptb.test.txt",)), dest)
    assert "simple-examples/data/ptb.test.txt" in line
    assert not dest.exists() and leftovers(tmp_path, dest) == []


def test_a_local_failure_after_the_checksum_keeps_the_verified_archive(server: Served, ptb_tgz: bytes,
                                                                       tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    import harness.data.fetch as fetch_module

    server.files["/simple-examples.tgz"] = ptb_tgz
    dest = tmp_path / "ptb"
    argv = ["ptb", "--dest", str(dest), "--url", server.url("/simple-examples.tgz"),
            "--sha256", sha(ptb_tgz), "--quiet"]

    def full_disk(plan, tmp):
        raise OSError(28, "No space left on device", str(plan.dest))

    monkeypatch.setattr(fetch_module, "place", full_disk)
    assert main(argv) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "No space left on device" in line
    assert not dest.exists() and not list(tmp_path.glob(".ptb.unpack-*"))
    monkeypatch.undo()
    assert main(argv) == 0
    assert len(server.requests) == 1  # the verified archive was used, not downloaded again
    assert_same_files(dest, SAMPLES / "ptb", PTB_FILES)
    assert leftovers(tmp_path, dest) == []


# ----------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_updating_line_on_a_terminal_and_few_lines_otherwise() -> None:
    tty = _Terminal()
    progress = Progress("fetch x", tty)
    progress.start(0, 100 << 20)
    for step in range(1, 101):
        progress.last_shown = -1.0  # as if time had passed
        progress.update(step << 20)
    progress.close()
    text = tty.getvalue()
    assert text.count("\r") == 100 and text.count("\n") == 1 and "100%" in text

    plain = io.StringIO()
    progress = Progress("fetch x", plain)
    progress.start(0, 100 << 20)
    for step in range(1, 101):
        progress.update(step << 20)
    assert "\r" not in plain.getvalue() and len(plain.getvalue().splitlines()) == 10


# ----------------------------------------------------------------------------- as a command


def test_the_command_runs_from_another_folder_with_a_relative_dest(server: Served, ptb_tgz: bytes,
                                                                   tmp_path: Path) -> None:
    server.files["/simple-examples.tgz"] = ptb_tgz
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "harness.data.fetch", "ptb", "--dest", "data/ptb"]
    done = subprocess.run(command + ["--url", server.url("/simple-examples.tgz"), "--sha256", sha(ptb_tgz)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "data/ptb" and "Traceback" not in done.stderr
    check_data_dir("ptb", tmp_path / "data" / "ptb")
    assert_same_files(tmp_path / "data" / "ptb", SAMPLES / "ptb", PTB_FILES)

    url = closed_port_url()
    failed = subprocess.run([*command[:4], "--dest", "data/ptb-again", "--url", url,
                             "--sha256", sha(ptb_tgz), "--quiet"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    [line] = failed.stderr.splitlines()
    assert url in line and "data/ptb-again" in line
    assert not (tmp_path / "data" / "ptb-again").exists()
