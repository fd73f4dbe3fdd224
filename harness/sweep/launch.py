"""Runs on Ray: the sweep's runs go to lanes, Ray Train trainers that train one run after another.

A lane (``harness.sweep.lanes``) is Ray Train's data-parallel trainer without Ray's torch
backend, whose workers take runs from the sweep's run queue until none is left for them, so
Ray Train's start-up is paid once per lane, not once per run. The workers form their process
group themselves (gloo on CPU, nccl on CUDA). On the embedded single-node Ray they meet
through a file (``harness.run.worker._file_rendezvous``), so no port opens at all; on a
cluster joined with ``--address`` rank 0 opens torch's TCP store on its node's own address
only, never on every interface (``harness.run.worker._tcp_rendezvous``).

The lanes' tasks ask for no CPU themselves; each lane's workers ask for the runs'
resources, and as many lanes run at once as runs fit the cluster (``resources.max_concurrent_runs``
caps it further). A run's checkpoint is kept in ``runs/<run_id>/checkpoints/``, so a
resubmitted sweep resumes an interrupted run from its last checkpoint. Worker failures are
retried by Ray Train, from the last checkpoint, up to the run's ``resources.max_failures``.
A run whose workers cannot be placed (a lost node that does not come back) waits
``resources.node_timeout_s`` at most, then is recorded failed with that reason; each lane's
task and the run queue are kept on the driver's node, which holds the records.
"""
from __future__ import annotations

import math
import os
import sys

from harness.records import SweepStore, is_disk_full
from harness.records.messages import NO_SPACE
from harness.records.store import release_reserve
from harness.run.session import describe_exception
from harness.run.spec import RunSpec


CLEANER_STOP_TIMEOUT_S = 2.0  # Ray's own floor for it (max(2, ...))


def shorten_cleaner_stop() -> bool:
    """Make Ray Train's placement-group cleaner stop within ``CLEANER_STOP_TIMEOUT_S``.

    Ray Train 2.60 gives every run a detached ``PlacementGroupCleaner`` actor that polls the
    State API to remove the run's placement group should the controller die ungracefully. On
    a normal shutdown the controller tells it to stop and waits up to
    ``2 x check_interval + GET_ACTOR_TIMEOUT_S`` = 12 s for its monitor thread, which is
    usually inside a State-API ``get_actor`` call (slow on a loaded machine). Measured on 2
    busy cores: 51 s of wrap-up per run, against 1.5 s with this (``tests/test_harness_sweep``
    prints the per-run overhead). The stop path never cleans anything (the controller removes
    its placement group itself), and after the wait the actor exits anyway, killing the daemon
    thread: a shorter wait loses nothing. The callback is built in this process and pickled
    to the controller with its attributes, so setting it here is enough. Returns False (and
    changes nothing) when this Ray has no such callback."""
    try:
        from ray.train.v2._internal.callbacks import placement_group_callback as pgc
    except ImportError:
        return False
    cls = getattr(pgc, "PlacementGroupCleanerCallback", None)
    if cls is None or getattr(cls, "_deqbench_stop_timeout", False):
        return cls is not None
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if getattr(self, "_stop_timeout", None) is not None:
            self._stop_timeout = min(self._stop_timeout, CLEANER_STOP_TIMEOUT_S)

    cls.__init__ = __init__
    cls._deqbench_stop_timeout = True
    return True


def record_failure(record, spec: RunSpec, reason: str, rank: int | None = None) -> None:
    """Record a run as failed; a run folder deleted under the run is recreated and says so,
    and a verdict the records already gave for a full disk is kept."""
    status = record.read_status()
    if status.get("state") == "failed" and str(status.get("reason") or "").startswith(NO_SPACE):
        return
    deleted = not (record.dir / "spec.json").exists()
    if deleted and not reason.startswith("WorkerPathError"):  # whichever part tripped over it first
        reason = f"run folder {record.dir} was deleted while the run was in flight ({reason})"
    if "No space left on device" in reason or "Disk quota exceeded" in reason:
        reason = f"{NO_SPACE}: {reason}"
    try:
        record.set_status("failed", reason=reason, rank=rank)
        if deleted:
            record.write_spec(spec.to_json())
    except OSError as exc:
        if not is_disk_full(exc) or not release_reserve(record.sweep_dir):
            raise
        record.set_status("failed", reason=f"{NO_SPACE}: {reason}", rank=rank)  # in the reserved space


def placement_wait(node_timeout_s: float) -> tuple[float, int]:
    """(seconds per placement attempt, retries): Ray Train gives up placing a worker group
    after ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` and retries ``controller_failure_limit``
    times; together they wait ``resources.node_timeout_s`` (rounded up to whole attempts)."""
    timeout = float(node_timeout_s)
    per_try = min(timeout, 60.0)
    return per_try, max(0, math.ceil(timeout / per_try - 1e-9) - 1)


def _placement_failure(exc: BaseException, record, res: dict) -> str | None:
    """The one-line reason when Ray Train gave up placing the workers, else None."""
    inner = getattr(exc, "controller_failure", None)
    if type(inner).__name__ != "WorkerGroupStartupTimeoutError":
        return None
    status = record.read_status()
    waited = float(res.node_timeout_s)
    need = f"{res.workers} workers x ({res.cpus_per_worker:g} CPU, {res.gpus_per_worker:g} GPU)"
    if int(status.get("attempt") or 0) > 0:  # it ran before: a node went away and did not come back
        last = status.get("reason") or "no worker error on record"
        return (f"node lost: the run's {need} could not be placed again for {waited:g} s "
                f"(resources.node_timeout_s); last worker error: {last}")
    return (f"the run's {need} could not be placed for {waited:g} s (resources.node_timeout_s): "
            "the cluster has no room for them")


def concurrency_limit(cluster: dict, runs: list[RunSpec]) -> int:
    """How many trainers to keep in flight: as many as the cluster could run at once.

    Ray places the workers; this only avoids starting trainers that would sit waiting for
    resources (each holds a controller process). ``max_concurrent_runs`` lowers it further.
    """
    if not runs:
        return 0
    fits = []
    for r in runs:
        res = r.resources
        n = res.workers
        by_cpu = cluster.get("CPU", 0) // (n * res.cpus_per_worker)
        by_gpu = cluster.get("GPU", 0) // (n * res.gpus_per_worker) if res.gpus_per_worker else by_cpu
        fits.append(max(1, int(min(by_cpu, by_gpu))))
        if res.max_concurrent_runs:
            fits.append(res.max_concurrent_runs)
    return min(fits)


def run_all(ray, store: SweepStore, runs: list[RunSpec], *, single_node: bool = False) -> None:
    """Train every run in lanes (as many at once as fit, at most ``max_concurrent_runs``) and
    wait for all of them."""
    from harness.watch.progress import SweepProgress
    from harness.sweep.lanes import RunQueue, close_lane_runs, fit_lane, lane_name, lane_storage

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env = {k: v for k, v in os.environ.items()
           if k in ("TORCH_EXTENSIONS_DIR", "RAY_AUTH_MODE", "PYTHONPATH", "DEQBENCH_FAULTS",
                     "DEQBENCH_GIT_COMMIT", "DEQBENCH_GIT_DIRTY", "DEQBENCH_NATIVE", "DEQBENCH_CACHE_DIR", "CC",
                     "RAY_TRAIN_ENABLE_STATE_TRACKING", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    # Ray Train's state actor and placement-group cleaner ask Ray's State API whether actors are
    # alive; without an address it reads /tmp/ray/ray_current_cluster, which any earlier
    # `ray start` on this machine leaves behind, pointing at a dead cluster: each such call then
    # retried for 40 s while holding the state actor's lock, and a lane's trainer took 40 s to
    # return after it had finished. Tell them this cluster's address.
    env.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    # the lanes' tasks (and the Ray Train controllers they start) and the run queue stay on the
    # driver's node: a lost worker node must not take the bookkeeping with it
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    # the queue must live on the driver's node (hard affinity: a soft one placed it on a
    # worker node, and losing that node lost the sweep's bookkeeping)
    pinned = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    queue = ray.remote(num_cpus=0, max_restarts=0)(RunQueue).options(scheduling_strategy=pinned).remote(
        [(spec, str(store.run(spec.run_id).dir)) for spec in runs])
    lane_remote = ray.remote(num_cpus=0, max_retries=0)(fit_lane)
    sweep = runs[0].sweep if runs else store.dir.name

    def start_lane(k: int, shape):
        per_try, _ = placement_wait(shape[3])  # the shape's node_timeout_s
        run_env = {**env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": f"{per_try:g}"}
        lane = lane_name(sweep, k)
        return lane, lane_remote.options(runtime_env={"env_vars": run_env}, scheduling_strategy=here).remote(
            queue, lane, shape, lane_storage(store.dir), single_node)

    limit = concurrency_limit(ray.cluster_resources(), runs)
    active: dict = {}  # the lane's task -> (lane, shape)
    lanes = 0
    totals = {r.run_id: r.train.steps for r in runs}
    with SweepProgress(store.dir, [r.run_id for r in runs], total_steps=totals) as progress:
        try:
            while True:
                while len(active) < limit:
                    shape = ray.get(queue.next_lane_shape.remote([s for _, s in active.values()]))
                    if shape is None:
                        break
                    lanes += 1
                    lane, ref = start_lane(lanes, tuple(shape))
                    active[ref] = (lane, tuple(shape))
                if not active:
                    break
                done, _ = ray.wait(list(active), num_returns=1, timeout=1.0)
                for ref in done:
                    lane, _ = active.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as exc:  # the lane's task itself died (e.g. its node was lost)
                        _lane_died(ray, queue, lane, exc)
                        close_lane_runs(ray.get(queue.handed_out.remote(lane)))
                progress.update()
        except KeyboardInterrupt:
            stop_interrupted(ray, store, active, runs, interrupt_name())
            raise


def _lane_died(ray, queue, lane: str, exc: BaseException) -> None:
    """Record the lane's run in flight failed with why its task died."""
    in_flight = ray.get(queue.release.remote(lane))
    if in_flight is None:
        return
    spec, run_dir = in_flight
    from harness.records import RunRecord

    try:
        record_failure(RunRecord(run_dir), spec, describe_exception(exc))
    except OSError as write_error:  # the records themselves are unwritable
        print(f"warning: run {spec.run_id}: {describe_exception(exc)}; its status "
              f"could not be written: {write_error}", file=sys.stderr)


_RECEIVED: list[int] = []  # the stop signals received (Ray may re-raise ours as a new KeyboardInterrupt,
# so the signal is kept here rather than on the exception)


def _raise_interrupted(signum, frame) -> None:
    _RECEIVED.append(signum)
    raise KeyboardInterrupt


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP (what SLURM, Kubernetes, systemd, CI runners and a closed terminal
    send) raise KeyboardInterrupt in the driver, so they stop a sweep the way Ctrl-C does.
    Called after ``ray.init``, whose core worker installs its own fatal-signal handlers."""
    import signal

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)


def interrupt_name() -> str:
    """"SIGTERM" / "SIGHUP" when one of them stopped the sweep, else "Ctrl-C"."""
    import signal

    return signal.Signals(_RECEIVED[-1]).name if _RECEIVED else "Ctrl-C"


def interrupt_exit_code() -> int:
    """130 for Ctrl-C, 128 + the signal's number for SIGTERM (143) and SIGHUP (129)."""
    return 128 + _RECEIVED[-1] if _RECEIVED else 130


def stop_interrupted(ray, store: SweepStore, active: dict, runs: list[RunSpec], why: str = "Ctrl-C") -> None:
    """Ctrl-C (or SIGTERM, SIGHUP: ``why``): stop the lanes in flight and set their runs in
    flight back to ``pending`` (never left ``running``).

    Each lane's task (with its Ray Train controller and workers) is cancelled; once it is
    gone the status of each run it was training says where it stopped. Resubmitting resumes
    them from their last checkpoints.
    """
    for ref in active:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 (already gone, or Ray itself was interrupted)
            pass
    try:
        ray.wait(list(active), num_returns=len(active), timeout=10.0)
    except BaseException:  # noqa: BLE001 (a second Ctrl-C, or Ray down: record what we can)
        pass
    for spec in runs:
        record = store.run(spec.run_id)
        status = record.read_status()
        if status.get("state") != "running":
            continue
        step = status.get("step") or 0
        record.set_status("pending", reason=f"interrupted ({why}) at step {step}; resubmit to resume "
                                            "from the last checkpoint")
