"""A worker's message -> a run's records: the one place where a message becomes file writes.

Rank 0 of a run's workers sends messages (``harness.run.session``); every other rank sends
``{}``. A message is a plain dict, every key optional::

    {"records": [metric dicts],        # appended to metrics.jsonl (and TensorBoard's events)
     "status": {"state": ..., "step": ...},   # merged into status.json (state moves here)
     "summary": {...},                 # summary.json (the run's figures, docs/records.md)
     "analysis": {...},                # analysis.json (the trained cell's equilibrium analysis)
     "env": {...},                     # env.json; marks the first message of an attempt
     "failed": "reason",               # the run stopped: status failed with this reason
     "resumed_from": step,             # drop metrics records after this step (a lost attempt)
     "task_ended": time,               # a lane is done with the run (status.json, state kept)
     "checkpoint": "staged folder"}    # the workers' staged checkpoint: the latest from now on

Under Ray the driver's Ray Train callback applies each message as it arrives; without Ray
``LocalSession`` applies it in the worker's own process. Both call :func:`apply_message`.
"""
from __future__ import annotations

import time
from typing import Any

from harness.records import tensorboard
from harness.records.store import RunRecord, is_disk_full, release_reserve


NO_SPACE = "no space left on device"  # the start of a full disk's reason, wherever it is caught


class RecordsFull(OSError):
    """The disk of the results folder is full: the run was recorded failed ("no space left
    on device") and must stop; the records written before stay as they were."""


def apply_message(record: RunRecord, message: dict[str, Any]) -> None:
    """Write one worker message into a run's records (:func:`_apply`); a full disk records
    the run as failed with "no space left on device" (in the space the sweep reserved) and
    raises :class:`RecordsFull`."""
    try:
        _apply(record, message)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        reason = (f"{NO_SPACE}: the run's records could not be written "
                  f"({exc.filename or record.dir}); free space in the results folder and resubmit")
        release_reserve(record.sweep_dir)
        record.set_status("failed", reason=reason, rank=None)
        raise RecordsFull(exc.errno, reason) from None


def _apply(record: RunRecord, message: dict[str, Any]) -> None:
    """Write one worker message into a run's records (idempotent for status, append for metrics).

    Attempts are timed here, on the receiving side's clock: an attempt runs from its first
    message to its last one. ``status.json`` keeps the finished attempts' times
    (``attempt_times_s``), so the final summary's ``wall_time_s`` covers every attempt of
    the run, across worker restarts and resubmissions, and ``attempt_wall_s`` lists them.
    """
    if not message:
        return
    now = time.time()
    previous = record.read_status()
    timing: dict[str, Any] = {"attempt_last_report": now}
    times = list(previous.get("attempt_times_s") or [])  # the finished attempts
    if message.get("env"):  # the first message of each (re)start of the workers: count the attempt
        if previous.get("attempt_started") and previous.get("attempt_last_report"):
            times.append(round(float(previous["attempt_last_report"]) - float(previous["attempt_started"]), 3))
        timing.update(attempt=int(previous.get("attempt") or 0) + 1, attempt_started=now, attempt_times_s=times)
    message = {**message, "status": {**(message.get("status") or {}), **timing}}
    if message.get("summary") and message["summary"].get("wall_time_s") is not None:
        this = float(message["summary"]["wall_time_s"])  # the worker's own clock for this attempt
        message["summary"] = {**message["summary"], "attempt_wall_s": times + [this],
                             "wall_time_s": sum(times) + this, "attempts": len(times) + 1}
    if message.get("resumed_from") is not None:
        record.truncate_metrics(int(message["resumed_from"]))
    attempt = int(timing.get("attempt") or previous.get("attempt") or 0)
    if message.get("env"):
        record.write_env(message["env"])
        tensorboard.append_lines(record.dir, attempt, [], resumed_from=message.get("resumed_from"))
    if message.get("records"):
        record.append_metrics(message["records"])
        tensorboard.append_lines(record.dir, attempt, message["records"])
    if message.get("analysis"):
        record.write_analysis(message["analysis"])
    if message.get("summary"):
        record.write_summary(message["summary"])
    if message.get("failed"):
        extra = {k: v for k, v in (message.get("status") or {}).items() if k != "state"}
        record.set_status("failed", reason=message["failed"], **extra)
    elif message.get("status"):
        status = dict(message["status"])
        if message.get("task_ended") is not None:  # the run's end: its state stays as it is
            status.setdefault("state", previous.get("state") or "running")
            status["task_ended"] = float(message["task_ended"])
        record.set_status(status.pop("state", "running"), **status)
    if message.get("checkpoint"):  # only now, with the records of its step written
        record.commit_checkpoint(message["checkpoint"])
