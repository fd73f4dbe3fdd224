"""Durable records of a sweep: the only code that reads or writes a run's files.

The layout is documented in docs/records.md. In short::

    results/<sweep>/sweep.json, job.yaml, runs/<run_id>/{spec,status,summary,env}.json,
                                          runs/<run_id>/metrics.jsonl, logs/, checkpoints/

Every JSON file is replaced atomically (write a temporary file in the same folder,
fsync, ``os.replace``), so a process killed at any instant leaves either the old
record or the new one. ``metrics.jsonl`` is appended line by line; a reader skips an
incomplete last line, and :meth:`RunRecord.truncate_metrics` rewrites it atomically
when a run resumes from a checkpoint, so the curve has no duplicate steps.

``load_sweep`` returns one row per run as a pandas DataFrame (spec, status and summary
flattened); ``load_metrics`` returns every run's per-step records.
"""
from __future__ import annotations

import datetime as _dt
import errno
import logging
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

STATES = ("pending", "running", "finished", "failed")


def utc_now() -> str:
    """ISO-8601 UTC timestamp with seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace non-finite floats with None so every file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=True, default=_json_default) + "\n")


def append_whole(path: str | Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (made if missing) and fsync; if the write fails (a full
    disk), the file is cut back to its old end, so no half line or record stays behind to
    corrupt the next append."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        size = fh.tell()
        try:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            fh.truncate(size)
            raise


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; an incomplete (torn) last line is ignored."""
    out: list[dict] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn final line: the writer died mid-append
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


class RunRecord:
    """The folder of one run: spec, status, metrics, summary, environment, logs, checkpoints."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

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
        path = self.checkpoint_dir / "local"
        return path if path.is_dir() else None

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
        import shutil

        current = self.checkpoint_dir / "local"
        staging, old = current.with_name("local.new"), current.with_name("local.old")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            current.rename(old)
        staging.rename(current)  # the swap is atomic; 'old' is only a leftover
        shutil.rmtree(old, ignore_errors=True)

    # fault injection (tests): a marker so that a fault fires once, across restarts
    def claim_marker(self, name: str) -> bool:
        """Create the marker file ``name`` in the run folder; False if it already existed."""
        try:
            with open(self.dir / name, "x", encoding="utf-8") as fh:
                fh.write("fired\n")
        except FileExistsError:
            return False
        return True

    # spec / env / summary
    def write_spec(self, spec: dict) -> None:
        atomic_write_json(self.dir / "spec.json", spec)

    def read_spec(self) -> dict:
        return read_json(self.dir / "spec.json", {})

    def write_env(self, env: dict) -> None:
        atomic_write_json(self.dir / "env.json", env)

    def read_env(self) -> dict:
        return read_json(self.dir / "env.json", {})

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.dir / "summary.json", summary)

    def read_summary(self) -> dict | None:
        return read_json(self.dir / "summary.json")

    def write_analysis(self, analysis: dict) -> None:
        atomic_write_json(self.dir / "analysis.json", analysis)

    def read_analysis(self) -> dict | None:
        return read_json(self.dir / "analysis.json")

    # status
    def read_status(self) -> dict:
        return read_json(self.dir / "status.json", {"run_id": self.run_id, "state": "pending",
                                                    "reason": None, "rank": None, "attempt": 0,
                                                    "step": 0, "started": None, "ended": None,
                                                    "updated": None})

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
        lines = "".join(json.dumps(_clean(r), default=_json_default) + "\n" for r in records)
        if not lines:
            return
        append_whole(self.metrics_path, lines.encode("utf-8"))

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only records with ``step <= last_step`` (used when resuming from a checkpoint)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


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
        meta = self.read_meta()
        if meta and meta.get("run_ids"):
            return list(meta["run_ids"])
        runs = self.dir / "runs"
        return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []

    def read_meta(self) -> dict:
        return read_json(self.dir / "sweep.json", {})

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
        try:
            return (self.dir / "job.yaml").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None


def _flatten(prefix: str, obj: Any, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list):
        out[prefix] = json.dumps(obj)
    else:
        out[prefix] = obj


def load_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """All runs of a sweep, one row each.

    Columns: ``run_id``, ``name``, ``state``, ``reason``, ``failed_rank``, ``attempt``, ``step``,
    ``started``, ``ended``, the grid axes as ``grid.<key>``, the summary figures
    (docs/records.md) and the flattened spec as ``spec.<path>``.
    """
    store = SweepStore(sweep_dir)
    if not store.dir.is_dir():
        raise FileNotFoundError(f"{store.dir}: no such sweep folder")
    rows = []
    for run_id in store.run_ids():
        rec = store.run(run_id)
        spec = rec.read_spec()
        status = rec.read_status()
        row: dict[str, Any] = {"run_id": run_id, "name": spec.get("name", run_id),
                               "state": status.get("state"), "reason": status.get("reason"),
                               "failed_rank": status.get("rank"), "attempt": status.get("attempt"),
                               "step": status.get("step"), "started": status.get("started"),
                               "ended": status.get("ended")}
        for k, v in (spec.get("grid") or {}).items():
            row[f"grid.{k}"] = v
        _flatten("spec", {k: v for k, v in spec.items() if k != "grid"}, row)
        for k, v in (rec.read_summary() or {}).items():
            if k not in row:
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def load_metrics(sweep_dir: str | Path) -> pd.DataFrame:
    """Every per-step record of every run of a sweep, with a ``run_id`` column."""
    store = SweepStore(sweep_dir)
    frames = []
    for run_id in store.run_ids():
        recs = store.run(run_id).read_metrics()
        if recs:
            df = pd.DataFrame(recs)
            df.insert(0, "run_id", run_id)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run_id", "kind", "step"])
    return pd.concat(frames, ignore_index=True)
