"""Durable records of a sweep: the only code that reads or writes a run's files.

The layout is documented in docs/records.md. In short::

    results/<sweep>/sweep.json, job.yaml, runs/<run_id>/{spec,status,summary,env}.json,
                                          runs/<run_id>/metrics.jsonl, logs/, checkpoints/

Every JSON file is replaced atomically (write a temporary file in the same folder,
fsync, ``os.replace``), so a process killed at any instant leaves either the old
record or the new one. ``metrics.jsonl`` is appended line by line; a reader skips an
incomplete last line, and :meth:`RunRecord.truncate_metrics` rewrites it atomically
when a run resumes from a checkpoint, so the curve has no duplicate steps.

Reading (``harness.records.io``): a record that exists but cannot be used (empty, torn, not
UTF-8, not JSON, the wrong shape) never raises from the ``read_*`` methods: it is read as
missing, or a status is rebuilt (:meth:`RunRecord.read_status`), and one
:class:`RecordProblem` line is kept in the record's ``problems``. ``strict=True`` raises
:class:`RecordError` instead. The pandas loaders are in ``harness.records.loaders``.
"""
from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from harness.records.io import (STATES, RecordError, RecordProblem, append_whole, atomic_write_json,
                                atomic_write_text, json_line, read_json, read_jsonl, scan_jsonl, skipped_lines)
from harness.records.tail import latest_records

__all__ = ["STATES", "RecordError", "RecordProblem", "RunRecord", "SweepStore", "append_whole", "atomic_write_json",
           "atomic_write_text", "is_disk_full", "read_json", "read_jsonl", "release_reserve", "utc_now"]


def utc_now() -> str:
    """ISO-8601 UTC timestamp with seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


NOT_FINISHED = "the run counts as not finished: left out of the figures; resubmitting reruns it"


class RunRecord:
    """The folder of one run: spec, status, metrics, summary, environment, logs, checkpoints."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.problems: list[RecordProblem] = []  # damaged records met by the readers below

    # paths
    @property
    def run_id(self) -> str:
        return self.dir.name

    @property
    def sweep_dir(self) -> Path:
        return self.dir.parent.parent  # results/<sweep>/runs/<run_id>

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def log_handler(self, rank: int) -> logging.Handler:
        """A logging handler that writes ``logs/rank<rank>.log`` (stderr if the folder cannot
        be made: a log is never a reason for a run to fail)."""
        import sys

        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            return logging.FileHandler(self.log_dir / f"rank{rank}.log")
        except OSError:
            return logging.StreamHandler(sys.stderr)

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("rank*.log")) if self.log_dir.is_dir() else []

    def log_tail(self, rank: int, lines: int) -> list[str] | None:
        """The last ``lines`` lines of rank ``rank``'s log, or None when it has none."""
        path = self.log_dir / f"rank{rank}.log"
        if not path.is_file():
            return None
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]

    # checkpoints of a run trained without Ray (Ray Train keeps its own under its storage)
    def local_checkpoint(self) -> Path | None:
        """The checkpoint kept in the run folder (``checkpoints/local``); the previous one
        (``local.old``) if a writer died between the two renames of its swap."""
        for name in ("local", "local.old"):
            path = self.checkpoint_dir / name
            if path.is_dir():
                return path
        return None

    def latest_checkpoint(self) -> Path | None:
        """The run's newest checkpoint folder, wherever it was trained: Ray Train's latest
        (its ``checkpoint_manager_snapshot.json`` names it; the newest ``checkpoint_*`` folder
        when the snapshot is unreadable) or the local one of a run without Ray. None if none."""
        local = self.local_checkpoint()
        if local is not None:
            return local
        storage = self.checkpoint_dir / self.run_id
        try:
            name = read_json(storage / "checkpoint_manager_snapshot.json")["latest_checkpoint_result"][
                "checkpoint_dir_name"]
        except (OSError, ValueError, KeyError, TypeError):  # none, torn, or not Ray's layout
            name = None
        if isinstance(name, str) and name and (storage / name).is_dir():
            return storage / name
        found = sorted(p for p in storage.glob("checkpoint_*") if p.is_dir()) if storage.is_dir() else []
        return found[-1] if found else None

    def store_local_checkpoint(self, source: str | Path) -> None:
        """Copy the checkpoint folder ``source`` in as the run's latest, atomically: a
        process killed mid-copy leaves the previous checkpoint in place."""

        staging = self.stage_checkpoint("0")
        self.add_to_staged_checkpoint(staging, source)
        self.commit_checkpoint(staging)

    def stage_checkpoint(self, tag: str) -> Path:
        """An empty staging folder for a checkpoint (``checkpoints/local.new-<tag>``): the
        workers copy their parts in, and it becomes the run's latest only when
        :meth:`commit_checkpoint` is called, after the records of its step were written (a
        checkpoint ahead of the records would leave a gap in the curve after a resume)."""
        import shutil

        staging = self.checkpoint_dir / f"local.new-{tag}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def add_to_staged_checkpoint(self, staging: str | Path, source: str | Path) -> None:
        """Copy one worker's part of a checkpoint (the folder ``source``) into ``staging``."""
        import shutil

        shutil.copytree(source, staging, dirs_exist_ok=True)

    def commit_checkpoint(self, staging: str | Path) -> None:
        """The staged checkpoint becomes the run's latest; a process killed at any point
        leaves a whole checkpoint readable (``local``, else ``local.old``). Staged folders
        older than this one (never committed: their writer died) are removed."""
        import shutil

        staging = Path(staging)
        current = self.checkpoint_dir / "local"
        old = current.with_name("local.old")
        if not staging.is_dir():
            return
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            current.rename(old)
        staging.rename(current)  # 'old' is only a leftover from here
        shutil.rmtree(old, ignore_errors=True)
        for leftover in self.checkpoint_dir.glob("local.new-*"):
            if leftover.name < staging.name:
                shutil.rmtree(leftover, ignore_errors=True)

    # fault injection (tests): a marker so that a fault fires once, across restarts
    def claim_marker(self, name: str) -> bool:
        """Create the marker file ``name`` in the run folder; False if it already existed."""
        try:
            with open(self.dir / name, "x", encoding="utf-8") as fh:
                fh.write("fired\n")
        except FileExistsError:
            return False
        return True

    # reading: a damaged file (RecordError) is noted in ``problems`` and read as missing
    def _read(self, name: str, default: Any, action: str = "read as missing", strict: bool = False) -> Any:
        try:
            return read_json(self.dir / name, default)
        except RecordError as exc:
            if strict:
                raise
            self.note(RecordProblem(exc.path, exc.problem, self.run_id, action=action))
            return default

    def note(self, problem: RecordProblem) -> None:
        """Keep one line about a damaged record of this run (once per file and problem)."""
        if all((p.path, p.problem) != (problem.path, problem.problem) for p in self.problems):
            self.problems.append(problem)

    def problem_with(self, file_name: str) -> RecordProblem | None:
        """The problem noted about this run's file ``file_name``, if any."""
        return next((p for p in self.problems if p.path.name == file_name), None)

    # spec / env / summary
    def write_spec(self, spec: dict) -> None:
        atomic_write_json(self.dir / "spec.json", spec)

    def read_spec(self, *, strict: bool = False) -> dict:
        return self._read("spec.json", {}, "the run's settings are unknown", strict)

    def write_env(self, env: dict) -> None:
        atomic_write_json(self.dir / "env.json", env)

    def read_env(self) -> dict:
        return self._read("env.json", {})

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.dir / "summary.json", summary)

    def read_summary(self) -> dict | None:
        return self._read("summary.json", None, NOT_FINISHED)

    def write_analysis(self, analysis: dict) -> None:
        atomic_write_json(self.dir / "analysis.json", analysis)

    def read_analysis(self) -> dict | None:
        return self._read("analysis.json", None, "read as missing (python -m harness.analyze rebuilds it)")

    # status
    def read_status(self, *, strict: bool = False) -> dict:
        """The run's status. A damaged ``status.json`` is rebuilt from the other records
        (:meth:`_rebuilt_status`), and a ``finished`` run whose ``summary.json`` is damaged
        reads as ``pending``, so resubmitting reruns it; ``strict``: RecordError instead."""
        try:
            status = read_json(self.dir / "status.json")
        except RecordError as exc:
            if strict:
                raise
            return self._rebuilt_status(exc)
        if status is None:
            return {"run_id": self.run_id, "state": "pending", "reason": None, "rank": None, "attempt": 0,
                    "step": 0, "started": None, "ended": None, "updated": None}
        if status.get("state") == "finished":
            try:
                read_json(self.dir / "summary.json")
            except RecordError as exc:
                if strict:
                    raise
                self.note(RecordProblem(exc.path, exc.problem, self.run_id, action=NOT_FINISHED))
                return {**status, "state": "pending", "ended": None, "reason": f"{exc}; resubmit to rerun the run"}
        return status

    def _rebuilt_status(self, exc: RecordError) -> dict:
        """A status from the records beside a damaged one: ``finished`` when the run's summary
        is whole, else ``pending`` at the last recorded step (resubmitting resumes it)."""
        summary = self._read("summary.json", None, NOT_FINISHED)
        latest = latest_records(self.metrics_path)
        step = max([0] + [int(r["step"]) for r in latest.values() if isinstance(r.get("step"), (int, float))])
        if summary:
            steps = summary.get("steps")
            step, state, reason = int(steps) if isinstance(steps, (int, float)) else step, "finished", None
            action = "status rebuilt as finished from summary.json"
        else:
            again = "resumes it from its last checkpoint" if self.latest_checkpoint() else "reruns it"
            state = "pending"
            action = f"status rebuilt as pending at step {step}: resubmitting the sweep {again}"
            reason = f"{exc.path.name}: {exc.problem}; {action}"
        self.note(RecordProblem(exc.path, exc.problem, self.run_id, action=action))
        return {"run_id": self.run_id, "state": state, "reason": reason, "rank": None, "attempt": 0, "step": step,
                "started": None, "ended": None, "updated": None}

    def set_status(self, state: str, **fields: Any) -> dict:
        if state not in STATES:
            raise ValueError(f"status state {state!r} is not one of {', '.join(STATES)}")
        status = self.read_status()
        status.update(fields)
        status["run_id"] = self.run_id
        status["state"] = state
        status["updated"] = utc_now()
        if state == "running" and not status.get("started"):
            status["started"] = status["updated"]
        if state in ("finished", "failed"):
            status["ended"] = status["updated"]
        self.dir.mkdir(parents=True, exist_ok=True)  # a deleted run folder still gets its verdict
        atomic_write_json(self.dir / "status.json", status)
        return status

    # metrics
    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def append_metrics(self, records: Iterable[dict]) -> None:
        lines = "".join(json_line(r) for r in records)
        if not lines:
            return
        append_whole(self.metrics_path, lines.encode("utf-8"))

    def read_metrics(self) -> list[dict]:
        """The run's metrics records; damaged lines are skipped and noted (one line for all)."""
        records, bad = scan_jsonl(self.metrics_path)
        if bad:
            self.note(RecordProblem(self.metrics_path, skipped_lines(bad), self.run_id,
                                    action="those lines skipped, the rest of the curve kept"))
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only records with ``step <= last_step`` (used when resuming from a checkpoint)."""
        kept = [r for r in self.read_metrics() if (r.get("step") or 0) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json_line(r) for r in kept))


def is_disk_full(exc: BaseException) -> bool:
    """An OSError that says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


RESERVE_NAME = ".space-reserve"
RESERVE_BYTES = 1 << 20


def release_reserve(sweep_dir: str | Path) -> bool:
    """Free the sweep's reserved space (so a full disk still takes a run's verdict)."""
    try:
        (Path(sweep_dir) / RESERVE_NAME).unlink()
    except FileNotFoundError:
        return False
    return True


class SweepStore:
    """The folder of one sweep: ``sweep.json``, ``job.yaml`` and ``runs/<run_id>/``."""

    def __init__(self, sweep_dir: str | Path):
        self.dir = Path(sweep_dir)
        self.problems: list[RecordProblem] = []  # damaged records of the sweep met by the readers

    def reserve_space(self) -> None:
        """Hold ``RESERVE_BYTES`` in a file of the sweep folder. When the disk fills up, the
        records free it to write the failed run's status ("no space left"), which a full
        disk would refuse otherwise. Made again at each submission."""
        path = self.dir / RESERVE_NAME
        if path.is_file() and path.stat().st_size >= RESERVE_BYTES:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)  # real blocks: a sparse file would reserve nothing
            fh.flush()
            os.fsync(fh.fileno())

    def run(self, run_id: str) -> RunRecord:
        return RunRecord(self.dir / "runs" / run_id)

    def run_ids(self) -> list[str]:
        """The sweep's runs: ``sweep.json``'s list, else (none, or damaged) the run folders."""
        meta = self.read_meta()
        if meta and meta.get("run_ids"):
            return list(meta["run_ids"])
        runs = self.dir / "runs"
        return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []

    def read_meta(self, *, strict: bool = False) -> dict:
        """``sweep.json``; {} when missing, or damaged (noted in ``problems``; ``strict``: RecordError)."""
        try:
            return read_json(self.dir / "sweep.json", {})
        except RecordError as exc:
            if strict:
                raise
            problem = RecordProblem(exc.path, exc.problem, action="its runs are taken from the folders in runs/")
            if all(str(p) != str(problem) for p in self.problems):
                self.problems.append(problem)
            return {}

    def write_meta(self, meta: dict) -> None:
        atomic_write_json(self.dir / "sweep.json", meta)

    def write_job_text(self, text: str) -> None:
        """The job file as submitted (``job.yaml``), verbatim."""
        atomic_write_text(self.dir / "job.yaml", text)

    def archive(self, suffix: str) -> Path | None:
        """Move the sweep folder aside to ``<name>-<suffix>`` (``--fresh``); returns the new
        folder, or None when there was nothing to move."""
        if not self.dir.exists():
            return None
        archived = self.dir.with_name(f"{self.dir.name}-{suffix}")
        self.dir.rename(archived)
        return archived

    def job_text(self) -> str | None:
        """``job.yaml`` as submitted (bytes that are not UTF-8 shown as U+FFFD); None if missing."""
        try:
            return (self.dir / "job.yaml").read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.append(RecordProblem(self.dir / "job.yaml", f"cannot be read ({exc.strerror})",
                                               action="the report shows no job file"))
            return None
