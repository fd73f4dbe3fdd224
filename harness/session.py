"""Where a training worker sends its reports and finds its checkpoint.

The per-worker function (``harness.train``) talks to a :class:`Session`, never to Ray
directly, so the same function runs

- under Ray Train (:class:`RaySession`): ``ray.train.report`` carries each report to the
  driver side, where :class:`RecordCallback` writes the run's records, and checkpoints go
  through Ray Train's storage, so a restarted worker group resumes from the last one;
- without Ray (:class:`LocalSession`): one process, world size 1, records written
  directly, checkpoints kept under the run folder. Ray is never imported on this path.

A *report* is a plain dict built by rank 0 (other ranks send ``{}``)::

    {"records": [metric dicts], "status": {...}, "summary": {...} | None,
     "env": {...} | None, "failed": "reason" | None, "resumed_from": step | None}

:func:`apply_report` turns one report into record writes; both sessions use it.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

from harness.results import RunRecord

# Metrics exported to Ray's metrics system (dashboard, Prometheus) at every report.
LIVE_METRICS = ("loss", "tokens_per_s", "step_time_s", "fwd_nstep", "fwd_rel_res", "bwd_nstep",
                "peak_mem_bytes", "val_ppl")


def apply_report(record: RunRecord, report: dict[str, Any]) -> None:
    """Write one report into a run's records (idempotent for status, append for metrics).

    Attempts are timed here, on the receiving side's clock: an attempt runs from its first
    report to its last one. ``status.json`` keeps the finished attempts' times
    (``attempt_times_s``), so the final summary's ``wall_time_s`` covers every attempt of
    the run, across worker restarts and resubmissions, and ``attempt_wall_s`` lists them.
    """
    if not report:
        return
    now = time.time()
    previous = record.read_status()
    timing: dict[str, Any] = {"attempt_last_report": now}
    times = list(previous.get("attempt_times_s") or [])  # the finished attempts
    if report.get("env"):  # the first report of each (re)start of the workers: count the attempt
        if previous.get("attempt_started") and previous.get("attempt_last_report"):
            times.append(round(float(previous["attempt_last_report"]) - float(previous["attempt_started"]), 3))
        timing.update(attempt=int(previous.get("attempt") or 0) + 1, attempt_started=now, attempt_times_s=times)
    report = {**report, "status": {**(report.get("status") or {}), **timing}}
    if report.get("summary") and report["summary"].get("wall_time_s") is not None:
        this = float(report["summary"]["wall_time_s"])  # the worker's own clock for this attempt
        report["summary"] = {**report["summary"], "attempt_wall_s": times + [this],
                             "wall_time_s": sum(times) + this, "attempts": len(times) + 1}
    if report.get("resumed_from") is not None:
        record.truncate_metrics(int(report["resumed_from"]))
    if report.get("env"):
        record.write_env(report["env"])
    if report.get("records"):
        record.append_metrics(report["records"])
    if report.get("summary"):
        record.write_summary(report["summary"])
    if report.get("failed"):
        extra = {k: v for k, v in (report.get("status") or {}).items() if k != "state"}
        record.set_status("failed", reason=report["failed"], rank=report.get("failed_rank"), **extra)
    elif report.get("status"):
        status = dict(report["status"])
        record.set_status(status.pop("state", "running"), **status)


class Session(Protocol):
    rank: int
    world_size: int
    local_rank: int

    def report(self, report: dict[str, Any], checkpoint_dir: Path | None = None) -> None: ...

    def checkpoint(self) -> contextlib.AbstractContextManager[Path | None]: ...


class LocalSession:
    """One process without Ray: records written in place, checkpoints in the run folder."""

    rank = 0
    world_size = 1
    local_rank = 0

    def __init__(self, record: RunRecord):
        self.record = record
        self.ckpt = record.checkpoint_dir / "local"

    def report(self, report: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        if checkpoint_dir is not None:
            staging = self.ckpt.with_name("local.new")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint_dir, staging)
            old = self.ckpt.with_name("local.old")
            shutil.rmtree(old, ignore_errors=True)
            if self.ckpt.exists():
                self.ckpt.rename(old)
            staging.rename(self.ckpt)  # the swap is atomic; 'old' is only a leftover
            shutil.rmtree(old, ignore_errors=True)
        apply_report(self.record, report)

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        yield self.ckpt if self.ckpt.is_dir() else None


class RaySession:
    """Inside a Ray Train worker: ``ray.train.report`` / ``ray.train.get_checkpoint``."""

    def __init__(self, tags: dict[str, str]):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self._tags = tags
        self._gauges: dict[str, Any] = {}

    def _export_live(self, records: list[dict]) -> None:
        """Publish the latest figures as Ray metrics (tagged by sweep, run and strategy)."""
        from ray.util.metrics import Gauge

        for rec in records:
            for name in LIVE_METRICS:
                value = rec.get(name)
                if value is None:
                    continue
                if name not in self._gauges:
                    self._gauges[name] = Gauge(f"deqbench_{name}", description=f"deqbench {name}",
                                               tag_keys=tuple(self._tags))
                self._gauges[name].set(float(value), tags=self._tags)

    def report(self, report: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        if self.rank == 0 and report.get("records"):
            self._export_live(report["records"])
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report({"report": report}, checkpoint=ckpt)

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as path:
            yield Path(path)


def record_callback(run_dir: str):
    """A Ray Train ``UserCallback`` that writes every rank-0 report into the run's records."""
    from ray.train import UserCallback

    class RecordCallback(UserCallback):
        def __init__(self, run_dir: str):
            self.run_dir = run_dir

        def after_report(self, run_context, metrics, checkpoint):
            record = RunRecord(self.run_dir)
            report = (metrics[0] or {}).get("report", {}) if metrics else {}
            apply_report(record, report)

        def after_exception(self, run_context, worker_exceptions):
            record = RunRecord(self.run_dir)
            rank, exc = sorted(worker_exceptions.items())[0]
            # the run goes on if Ray Train restarts the workers; if not, launch marks it failed
            record.set_status("running", reason=f"worker error: {describe_exception(exc)}", rank=rank)

    return RecordCallback(run_dir)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_exception(exc: BaseException) -> str:
    """One line: the innermost exception's class and first message line."""
    inner = exc
    while True:  # the innermost cause; Ray Train's ControllerError keeps its own in controller_failure
        nxt = getattr(inner, "__cause__", None) or getattr(inner, "controller_failure", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    text = _ANSI.sub("", str(inner)).strip().splitlines()
    return f"{type(inner).__name__}: {text[0] if text else ''}".strip()


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
