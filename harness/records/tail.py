"""Reading the end of a run's ``metrics.jsonl`` cheaply, for views that refresh while it grows.

:func:`latest_records` reads a file backwards from its end (a long run costs little);
:class:`MetricsTail` keeps reading only what was appended since its last poll. Both skip a
torn last line (a writer mid-append) and lines that are not whole records (not UTF-8, not
JSON, or the wrong shape: ``harness.records.io.metrics_line_problem``).
"""
from __future__ import annotations

import os
from pathlib import Path

from harness.records.io import metrics_line_problem, parse_json


def _record(line: bytes) -> dict | None:
    """One metrics line, or None when it is not a whole, well-formed record (skipped)."""
    try:
        rec = parse_json(line)
    except ValueError:
        return None
    return rec if metrics_line_problem(rec) is None else None


def latest_records(path: str | Path, kinds: tuple[str, ...] = ("train", "eval"), *,
                   chunk_bytes: int = 1 << 16) -> dict[str, dict]:
    """The last record of each kind in a metrics.jsonl, read backwards from the file's end.

    Reads ``chunk_bytes`` from the end, then 4x more each round until every kind is found
    or the whole file was read. A torn last line (no newline yet) and lines that are not
    whole records are skipped. Returns ``{kind: record}`` for the kinds found.
    """
    try:
        fh = open(path, "rb")
    except OSError:  # none yet, or not a readable file
        return {}
    with fh:
        size = fh.seek(0, 2)
        window = max(int(chunk_bytes), 1)
        while True:
            start = max(0, size - window)
            fh.seek(start)
            lines = fh.read(size - start).split(b"\n")[:-1]  # the part after the last newline is torn
            if start > 0:
                lines = lines[1:]  # may begin mid-line
            found: dict[str, dict] = {}
            for line in reversed(lines):
                rec = _record(line) if line.strip() else None
                kind = rec.get("kind") if rec is not None else None
                if kind in kinds and kind not in found:
                    found[kind] = rec
                    if len(found) == len(kinds):
                        return found
            if start == 0:
                return found
            window *= 4


class MetricsTail:
    """The latest record of each kind in one metrics.jsonl, read incrementally.

    The first :meth:`poll` reads the file from its end (:func:`latest_records`);
    later polls read only the complete lines appended since. A file rewritten on resume
    (new inode, or shorter than what was read) is read afresh.
    """

    def __init__(self, path: str | Path, kinds: tuple[str, ...] = ("train", "eval")):
        self.path = Path(path)
        self.kinds = kinds
        self.offset = 0          # bytes consumed: always the end of a complete line
        self.latest: dict[str, dict] = {}
        self._inode: int | None = None

    def poll(self) -> dict[str, dict]:
        try:
            st = os.stat(self.path)
            if not os.path.isfile(self.path):
                raise FileNotFoundError(self.path)
        except OSError:
            self.offset, self.latest, self._inode = 0, {}, None
            return self.latest
        if st.st_ino != self._inode or st.st_size < self.offset:
            self._inode = st.st_ino
            self.latest = latest_records(self.path, self.kinds)
            self.offset = self._end_of_complete_lines(st.st_size)
        elif st.st_size > self.offset:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(st.st_size - self.offset)
            complete = data[:data.rfind(b"\n") + 1]  # a torn last line waits for its newline
            self.offset += len(complete)
            for line in complete.split(b"\n"):
                self._take(line)
        return self.latest

    def _end_of_complete_lines(self, size: int) -> int:
        with open(self.path, "rb") as fh:
            start = max(0, size - 65536)
            fh.seek(start)
            tail = fh.read(size - start)
        cut = tail.rfind(b"\n")
        return start + cut + 1 if cut >= 0 else (0 if start == 0 else self._end_of_complete_lines(start))

    def _take(self, line: bytes) -> None:
        rec = _record(line) if line.strip() else None
        if rec is not None and rec.get("kind") in self.kinds:
            self.latest[rec["kind"]] = rec
