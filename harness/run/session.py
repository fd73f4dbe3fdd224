"""Where a training worker sends its messages and finds its checkpoint.

The per-worker function (``harness.run.worker``) talks to a :class:`Session`, never to Ray
directly, so the same function runs

- under Ray Train (:class:`RaySession`): ``ray.train.report`` carries each message to the
  driver, where the callback of :func:`record_callback` writes the run's records, and
  checkpoints go through Ray Train's storage, so a restarted worker group resumes from the
  last one;
- without Ray (:class:`LocalSession`): one process, world size 1, records written
  directly, checkpoints kept under the run folder. Ray is never imported on this path.

A *message* is a plain dict built by rank 0 (other ranks send ``{}``); its keys are listed
in ``harness.records.messages``, whose :func:`apply_message` turns it into record writes
for both sessions. (The comparison *report* of a sweep is ``harness.report``'s.)
"""
from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Protocol

from harness.records import RunRecord, apply_message

# Metrics exported to Ray's metrics system (dashboard, Prometheus) at every message.
LIVE_METRICS = ("loss", "tokens_per_s", "step_time_s", "fwd_nstep", "fwd_rel_res", "bwd_nstep",
                "peak_mem_bytes", "val_ppl")


class Session(Protocol):
    rank: int
    world_size: int
    local_rank: int

    def send(self, message: dict[str, Any], checkpoint_dir: Path | None = None) -> None: ...

    def checkpoint(self) -> contextlib.AbstractContextManager[Path | None]: ...


class LocalSession:
    """One process without Ray: records written in place, checkpoints in the run folder."""

    rank = 0
    world_size = 1
    local_rank = 0

    def __init__(self, record: RunRecord):
        self.record = record

    def send(self, message: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        if checkpoint_dir is not None:
            self.record.store_local_checkpoint(checkpoint_dir)
        apply_message(self.record, message)

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        yield self.record.local_checkpoint()


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

    def send(self, message: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        if self.rank == 0 and message.get("records"):
            self._export_live(message["records"])
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report({"message": message}, checkpoint=ckpt)

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
    """A Ray Train ``UserCallback`` (on the driver) that writes every rank-0 message into the
    run's records."""
    from ray.train import UserCallback

    class RecordCallback(UserCallback):
        def __init__(self, run_dir: str):
            self.run_dir = run_dir

        def after_report(self, run_context, metrics, checkpoint):
            # a full disk raises RecordsFull here, after recording the run failed: Ray Train
            # then ends the run, and launch keeps that verdict
            record = RunRecord(self.run_dir)
            message = (metrics[0] or {}).get("message", {}) if metrics else {}
            apply_message(record, message)

        def after_exception(self, run_context, worker_exceptions):
            record = RunRecord(self.run_dir)
            if record.read_status().get("state") == "failed":  # already decided (a full disk)
                return
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
