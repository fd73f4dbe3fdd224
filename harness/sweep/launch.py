"""Runs on Ray: one Ray Train trainer per run, each started from a Ray task.

Every trainer is Ray Train's data-parallel trainer without Ray's torch backend; the workers
form their process group themselves (gloo on CPU, nccl on CUDA). On the embedded single-node
Ray they meet through a file (``harness.run.worker._file_rendezvous``), so no port opens at all;
on a cluster joined with ``--address`` rank 0 opens torch's TCP store on its node's own
address only, never on every interface (``harness.run.worker._tcp_rendezvous``).

The tasks ask for no CPU themselves; each trainer's workers ask for the run's resources,
so Ray's own scheduler decides how many runs fit at once (``resources.max_concurrent_runs``
caps it further). A trainer's storage is ``runs/<run_id>/checkpoints/`` and its name is the
run id, so a resubmitted sweep resumes an interrupted run from its last checkpoint and the
dashboard lists runs under their ids. Worker failures are retried by Ray Train
(``resources.max_failures``), from the last checkpoint. A run whose workers cannot be placed
(a lost node that does not come back) waits ``resources.node_timeout_s`` at most, then is
recorded failed with that reason; each run's task is kept on the driver's node, which holds
the records.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from harness.records import SweepStore, is_disk_full
from harness.records.messages import NO_SPACE
from harness.records.store import release_reserve
from harness.run.session import describe_exception
from harness.run.spec import RunSpec


def _fit_run(spec: RunSpec, run_dir: str, single_node: bool) -> str:
    """Body of the Ray task of one run: build and fit its Ray Train trainer; returns its state."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.backend import BackendConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from harness.records import RunRecord
    from harness.run.session import record_callback
    from harness.run.worker import train_worker

    record = RunRecord(run_dir)
    res = spec.resources
    use_gpu = res.gpus_per_worker > 0
    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    record.set_status("running", reason=None, rank=None, task_started=time.time(), task_ended=None)
    shorten_cleaner_stop()
    _, placement_retries = placement_wait(res)
    failure_config = FailureConfig(max_failures=res.max_failures, controller_failure_limit=placement_retries)
    trainer = DataParallelTrainer(
        train_worker, backend_config=BackendConfig(),
        train_loop_config={"spec": spec, "run_dir": run_dir, "rendezvous": "file" if single_node else "tcp"},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=spec.run_id, storage_path=str(Path(run_dir) / "checkpoints"),
                             failure_config=failure_config,
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             callbacks=[record_callback(run_dir)]))
    try:
        trainer.fit()
    except Exception as exc:  # recorded, never raised: one run's failure must not stop the sweep
        failures = getattr(exc, "worker_failures", None) or {}
        rank = min(failures) if failures else None
        cause = failures[rank] if failures else exc
        record_failure(record, spec, _placement_failure(exc, record, res) or describe_exception(cause), rank)
    state = record.read_status().get("state")
    if state not in ("finished", "failed"):
        record.set_status("failed", reason="training ended without a final report")
        state = "failed"
    record.set_status(state, task_ended=time.time())  # the sweep timeline's end of this run
    return state


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


def placement_wait(res: dict) -> tuple[float, int]:
    """(seconds per placement attempt, retries): Ray Train gives up placing a worker group
    after ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` and retries ``controller_failure_limit``
    times; together they wait ``resources.node_timeout_s`` (rounded up to whole attempts)."""
    timeout = float(res.node_timeout_s)
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
    """Start every run (at most ``max_concurrent_runs`` at once) and wait for all of them."""
    from harness.watch.progress import SweepProgress

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env = {k: v for k, v in os.environ.items()
           if k in ("TORCH_EXTENSIONS_DIR", "RAY_AUTH_MODE", "PYTHONPATH", "DEQBENCH_FAULTS",
                     "DEQBENCH_GIT_COMMIT", "DEQBENCH_GIT_DIRTY", "DEQBENCH_NATIVE", "DEQBENCH_CACHE_DIR", "CC",
                     "RAY_TRAIN_ENABLE_STATE_TRACKING", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    # the run's task (and the Ray Train controller it starts) stays on the driver's node: a
    # lost worker node must not take the bookkeeping with it
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    fit_remote = ray.remote(num_cpus=0, max_retries=0)(_fit_run)

    def fit_options(spec: RunSpec):
        per_try, _ = placement_wait(spec.resources)
        run_env = {**env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": f"{per_try:g}"}
        return fit_remote.options(runtime_env={"env_vars": run_env}, scheduling_strategy=here)

    limit = concurrency_limit(ray.cluster_resources(), runs)
    queue = list(runs)
    active: dict = {}
    totals = {r.run_id: r.train.steps for r in runs}
    with SweepProgress(store.dir, [r.run_id for r in runs], total_steps=totals) as progress:
        try:
            while queue or active:
                while queue and len(active) < limit:
                    spec = queue.pop(0)
                    ref = fit_options(spec).remote(spec, str(store.run(spec.run_id).dir), single_node)
                    active[ref] = spec
                done, _ = ray.wait(list(active), num_returns=1, timeout=1.0)
                for ref in done:
                    spec = active.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as exc:  # the task itself died (e.g. its node was lost)
                        try:
                            record_failure(store.run(spec.run_id), spec, describe_exception(exc))
                        except OSError as write_error:  # the records themselves are unwritable
                            print(f"warning: run {spec.run_id}: {describe_exception(exc)}; its status "
                                  f"could not be written: {write_error}", file=sys.stderr)
                progress.update()
        except KeyboardInterrupt:
            stop_interrupted(ray, store, active, interrupt_name())
            raise


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


def stop_interrupted(ray, store: SweepStore, active: dict, why: str = "Ctrl-C") -> None:
    """Ctrl-C (or SIGTERM, SIGHUP: ``why``): stop the runs in flight and set them back to
    ``pending`` (never left ``running``).

    Each run's task (with its Ray Train controller and workers) is cancelled; once it is gone
    its status says where it stopped. Resubmitting resumes it from its last checkpoint.
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
    for spec in active.values():
        record = store.run(spec.run_id)
        step = record.read_status().get("step") or 0
        record.set_status("pending", reason=f"interrupted ({why}) at step {step}; resubmit to resume "
                                            "from the last checkpoint")
