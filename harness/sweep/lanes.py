"""Lanes: one Ray Train worker group trains several runs of a sweep, one after another.

Starting a Ray Train run costs seconds that have nothing to do with what a sweep measures:
the controller and placement-group cleaner actors, one new process per worker importing
torch, the process group, and the shutdown. Measured on this 2-core machine with an empty
training function (2 workers): 8.3 s from ``fit()`` to the function's first line, 3.4-5.1 s
importing torch in the fresh workers, 2.7-3.2 s from its last line to ``fit()`` returning;
the quickstart's 12 runs paid about 11 s each (docs/evidence/lanes_2026-12-08/README.md).

So a sweep's runs are handed to *lanes*. A lane is one Ray Train ``DataParallelTrainer``
whose training function (``harness.run.worker.train_lane``) asks a :class:`RunQueue` actor
for the next pending run, trains it, and asks again, until none is left for it. Processes,
imports and the process group are paid once per lane, not once per run. As many lanes run
at once as runs fit the cluster (``harness.sweep.launch.concurrency_limit``); a lane only
takes runs of its own shape (workers, CPUs and GPUs per worker, node timeout), and a run
with a memory cap (``resources.memory_cap_gb``, a process-wide limit) gets a lane of its own.

Fault tolerance stays Ray Train's, counted per run as before:

- a worker error restarts the lane's worker group (Ray Train, ``max_failures=-1``); the
  restarted function asks the queue again and gets the run it had in flight, which resumes
  from its last checkpoint. The queue counts these restarts per run: past the run's own
  ``resources.max_failures`` the run is recorded failed with its last worker error and the
  lane goes on with the next run;
- a worker group that cannot be placed (a lost node that does not come back) fails the
  lane's trainer after ``resources.node_timeout_s``: the run in flight is recorded failed
  with that reason, and the lane starts again for the runs left;
- checkpoints are written by the workers straight into the run's folder
  (``runs/<id>/checkpoints/local``, swapped in atomically; the results folder is on storage
  every node shares, which the workers already require), so a resubmitted sweep resumes an
  interrupted run whichever lane trains it next.

Only the driver side writes records: the queue writes a run's "running" status when it
hands the run out and its failure when its restarts are used up, the lane's Ray Train
callback applies the workers' messages (``harness.run.session.lane_callback``), and the
lane's task closes its runs when its trainer ends. Never two of them for one run at once.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from harness.run.spec import RunSpec

Shape = tuple


def shape_of(spec: RunSpec) -> Shape:
    """What a lane's worker group is fixed to; runs of one shape can share a lane."""
    res = spec.resources
    own = spec.run_id if res.memory_cap_gb else None  # the cap is process-wide: a lane of its own
    return (res.workers, float(res.cpus_per_worker), float(res.gpus_per_worker), float(res.node_timeout_s), own)


class RunQueue:
    """The sweep's pending runs, handed to lanes one at a time (a Ray actor on the driver's node).

    ``take(lane, shape, finished)`` is the only call the workers make (rank 0): it returns
    the lane's run in flight again after a restart (counting the restart), or the next
    pending run of the lane's shape, or None when there is none."""

    def __init__(self, runs: list[tuple[RunSpec, str]]):
        self.pending = list(runs)
        self.current: dict[str, tuple[RunSpec, str]] = {}
        self.restarts: dict[str, int] = {}
        self.handed: dict[str, list[str]] = {}
        self.lane_started: dict[str, float] = {}

    # ---------------------------------------------------------------- the driver
    def next_lane_shape(self, active: list) -> Shape | None:
        """The shape of a lane worth starting: pending runs of it outnumber its active lanes."""
        counts: dict = {}
        for spec, _ in self.pending:
            counts.setdefault(shape_of(spec), 0)
            counts[shape_of(spec)] += 1
        for spec, _ in self.pending:
            shape = shape_of(spec)
            if counts[shape] > sum(1 for s in active if tuple(s) == shape):
                return shape
        return None

    def pending_of(self, shape: Shape) -> int:
        return sum(1 for spec, _ in self.pending if shape_of(spec) == tuple(shape))

    # ---------------------------------------------------------------- the lane's task
    def start_lane(self, lane: str) -> None:
        """The lane's trainer is being started now: its first run's start-up begins here."""
        self.lane_started[lane] = time.time()

    def release(self, lane: str) -> tuple[RunSpec, str] | None:
        """The lane's run in flight, no longer in flight (its trainer ended)."""
        self.restarts.pop(lane, None)
        return self.current.pop(lane, None)

    def fail_next(self, lane: str, shape: Shape) -> tuple[RunSpec, str] | None:
        """Take the next pending run of ``shape`` out of the queue without training it (its
        lane could not start at all; the caller records why)."""
        job = self._pop(shape)
        if job is not None:
            self.handed.setdefault(lane, []).append(job[1])
        return job

    def _pop(self, shape: Shape) -> tuple[RunSpec, str] | None:
        """The first pending run of ``shape``, out of the queue."""
        for i, (spec, _) in enumerate(self.pending):
            if shape_of(spec) == tuple(shape):
                return self.pending.pop(i)
        return None

    def current_of(self, lane: str) -> str | None:
        """The run folder of the lane's run in flight, if any."""
        return self.current[lane][1] if lane in self.current else None

    def handed_out(self, lane: str) -> list[str]:
        return list(self.handed.get(lane, []))

    # ---------------------------------------------------------------- the workers (rank 0)
    def take(self, lane: str, shape: Shape, finished: bool) -> tuple[RunSpec, str] | None:
        from harness.records import RunRecord
        from harness.sweep.launch import record_failure

        if finished:
            self.current.pop(lane, None)
            self.restarts.pop(lane, None)
        if lane in self.current:  # the worker group restarted while this run was in flight
            spec, run_dir = self.current[lane]
            record = RunRecord(run_dir)
            status = record.read_status()
            if status.get("state") in ("finished", "failed"):
                pass  # it ended before the restart: nothing to resume
            else:
                self.restarts[lane] = self.restarts.get(lane, 0) + 1
                if self.restarts[lane] <= spec.resources.max_failures:
                    return spec, run_dir
                reason = str(status.get("reason") or "the workers failed")
                reason = reason.removeprefix("worker error: ")
                record_failure(record, spec, reason, status.get("rank"))
                record.set_status("failed", task_ended=time.time())
            self.current.pop(lane, None)
            self.restarts.pop(lane, None)
        job = self._pop(shape)
        if job is None:
            return None
        spec, run_dir = job
        self.current[lane] = job
        self.handed.setdefault(lane, []).append(run_dir)
        # the run's task starts when its lane's trainer started (the first run of a trainer
        # pays the worker group's start) or now (a later run: the group is already up)
        started = self.lane_started.pop(lane, None)
        RunRecord(run_dir).set_status("running", reason=None, rank=None, task_started=started or time.time(),
                                    task_ended=None)
        return spec, run_dir


def fit_lane(queue, lane: str, shape: Shape, storage: str, single_node: bool) -> int:
    """Body of the Ray task of one lane: fit its Ray Train trainer (again after a failure,
    while runs of its shape are pending); returns how many runs it handed out."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.backend import BackendConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from harness.records import RunRecord
    from harness.run.session import describe_exception, lane_callback
    from harness.run.worker import train_lane
    from harness.sweep.launch import _placement_failure, placement_wait, record_failure, shorten_cleaner_stop

    workers, cpus, gpus, node_timeout_s, _ = shape
    res = _LaneResources(workers, cpus, gpus, node_timeout_s)
    per_worker: dict[str, float] = {"CPU": cpus}
    if gpus:
        per_worker["GPU"] = gpus
    shorten_cleaner_stop()
    _, placement_retries = placement_wait(node_timeout_s)
    tries = 0
    while True:
        tries += 1
        ray.get(queue.start_lane.remote(lane))
        trainer = DataParallelTrainer(
            train_lane, backend_config=BackendConfig(),
            train_loop_config={"queue": queue, "lane": lane, "shape": shape,
                               "rendezvous": "file" if single_node else "tcp"},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker),
            run_config=RunConfig(name=f"{lane}-{tries}", storage_path=storage,
                                 failure_config=FailureConfig(max_failures=-1,
                                                              controller_failure_limit=placement_retries),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1),
                                 callbacks=[lane_callback(queue, lane)]))
        error: BaseException | None = None
        try:
            trainer.fit()
        except Exception as exc:  # recorded on the run in flight, never raised: the sweep goes on
            error = exc
        in_flight = ray.get(queue.release.remote(lane))
        if error is None:
            break
        if in_flight is None:  # the lane never got a run going: the next one carries the reason
            in_flight = ray.get(queue.fail_next.remote(lane, shape))
        if in_flight is not None:
            spec, run_dir = in_flight
            record = RunRecord(run_dir)
            if record.read_status().get("state") != "finished":  # a run that finished keeps its verdict
                record_failure(record, spec, _placement_failure(error, record, res) or describe_exception(error))
        if not ray.get(queue.pending_of.remote(shape)):
            break
    close_lane_runs(ray.get(queue.handed_out.remote(lane)))
    return len(ray.get(queue.handed_out.remote(lane)))


class _LaneResources:
    """What ``_placement_failure`` reads of a run's resources."""

    def __init__(self, workers: int, cpus: float, gpus: float, node_timeout_s: float):
        self.workers, self.cpus_per_worker, self.gpus_per_worker = workers, cpus, gpus
        self.node_timeout_s = node_timeout_s


def close_lane_runs(run_dirs: list[str]) -> None:
    """After a lane's trainer ended (no message of it still in flight): every run it handed
    out has a final state, and the last one's end is now (the lane's shutdown is its
    wrap-up)."""
    from harness.records import RunRecord

    now = time.time()
    for i, run_dir in enumerate(run_dirs):
        record = RunRecord(run_dir)
        status = record.read_status()
        state = status.get("state")
        fields: dict[str, Any] = {}
        if i == len(run_dirs) - 1 or status.get("task_ended") is None:
            fields["task_ended"] = now
        if state not in ("finished", "failed"):
            record.set_status("failed", reason="training ended without a final report", **fields)
        elif fields:
            record.set_status(state, **fields)


def lane_name(sweep: str, k: int) -> str:
    """A Ray Train run name for lane ``k`` of this submission (unique: Ray Train must not
    restore an earlier submission's lane from its storage)."""
    return f"{sweep}-lane{k}-{uuid.uuid4().hex[:6]}"


def lane_storage(sweep_dir: str | Path) -> str:
    """Ray Train's own storage for the sweep's lanes (its run state; no checkpoints go there)."""
    return str(Path(sweep_dir) / "lanes")
