"""Where a training worker sends its messages and finds its checkpoint.

The per-worker function (``harness.run.worker``) talks to a :class:`Session`, never to Ray
directly, so the same function runs

- under Ray Train, in a lane that trains several runs one after another
  (:class:`LaneSession`, ``harness.sweep.lanes``): ``ray.train.report`` carries each
  message, with the run it belongs to, to the driver, where the callback of
  :func:`lane_callback` writes that run's records; checkpoints are kept in the run's own
  folder, so a restarted worker group (or a resubmitted sweep) resumes from the last one;
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
    """Inside a Ray Train worker: its ranks and the live metrics it exports (the base of
    :class:`LaneSession`, which sends the messages and keeps the checkpoints)."""

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


class LaneSession(RaySession):
    """Inside a lane's worker (``harness.sweep.lanes``): the worker group trains one run after
    another, so each message names its run (``run_dir``), and checkpoints are kept in the
    run's own folder (every rank copies its part into one staging folder, rank 0 swaps it
    in), not in Ray Train's storage, which belongs to the lane."""

    def __init__(self):
        super().__init__({})
        self.run_dir: str | None = None

    def begin(self, spec, run_dir: str, attempt_tag: int) -> None:
        """The run this session speaks for from now on; ``attempt_tag`` (the same on every
        rank, growing from one attempt to the next) orders its staged checkpoints."""
        self.run_dir = str(run_dir)
        self._attempt, self._saved = int(attempt_tag), 0
        self._tags = {"sweep": spec.sweep, "run_id": spec.run_id,
                      "strategy": str(spec.model.get("depth", {}).get("kind", ""))}

    def send(self, message: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        if checkpoint_dir is not None:
            staged = self._stage_checkpoint(checkpoint_dir)
            if self.rank == 0:  # committed by the driver once the message's records are written
                message = {**message, "checkpoint": str(staged)}
        if self.rank == 0 and message.get("records"):
            self._export_live(message["records"])
        ray.train.report({"message": message, "run_dir": self.run_dir})

    def _stage_checkpoint(self, source: Path) -> Path:
        """Every rank copies its part of the checkpoint into one staging folder of the run."""
        import torch.distributed as dist

        self._saved += 1
        record = RunRecord(self.run_dir)
        tag = f"{self._attempt:020d}-{self._saved:08d}"
        staging = record.checkpoint_dir / f"local.new-{tag}"
        if self.rank == 0:
            record.stage_checkpoint(tag)
        if dist.is_initialized():
            dist.barrier()
        record.add_to_staged_checkpoint(staging, source)
        if dist.is_initialized():
            dist.barrier()
        return staging

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        # the run's own (lanes) or, for a run interrupted under one trainer per run, Ray Train's
        yield RunRecord(self.run_dir).latest_checkpoint()


def lane_callback(queue, lane: str):
    """A Ray Train ``UserCallback`` (on the driver) for a lane: every rank-0 message goes into
    the records of the run it names; a worker error is noted on the lane's run in flight
    (``harness.sweep.lanes.RunQueue`` counts the restart when the workers ask again)."""
    from ray.train import UserCallback

    class LaneCallback(UserCallback):
        def __init__(self, queue, lane: str):
            self.queue, self.lane = queue, lane

        def after_report(self, run_context, metrics, checkpoint):
            first = (metrics[0] or {}) if metrics else {}
            if first.get("run_dir") and first.get("message"):
                apply_message(RunRecord(first["run_dir"]), first["message"])

        def after_exception(self, run_context, worker_exceptions):
            import ray

            current = ray.get(self.queue.current_of.remote(self.lane))
            if current is None:
                return
            _note_worker_error(RunRecord(current), worker_exceptions)

    return LaneCallback(queue, lane)


def _note_worker_error(record: RunRecord, worker_exceptions: dict) -> None:
    if record.read_status().get("state") in ("finished", "failed"):  # already decided (a full disk)
        return
    rank, exc = sorted(worker_exceptions.items())[0]
    # the run goes on if its workers restart; if not, the driver side records it failed
    record.set_status("running", reason=f"worker error: {describe_exception(exc)}", rank=rank)


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
