"""The per-worker training function: data shard -> model -> DeepSpeed -> steps -> records.

Under Ray, ``harness.sweep.lanes`` runs :func:`train_lane` in every worker of a Ray Train
data-parallel trainer, which trains the sweep's runs one after another (the process group is
formed here, once per worker group: a file on one node, a TCP store bound to rank 0's node
address on a cluster). Without Ray, ``python -m harness.train``
(``harness/train.py``) calls :func:`run_training` in one process (world size 1), for
debugging, profiling, or machines where Ray is not installed.

Both paths write the same records (docs/records.md). This module forms the process group
(CUDA -> nccl, CPU -> gloo), checks the run's paths on this node and turns running out of
memory anywhere into one line; the training itself (set-up, step, periodic work, summary)
is ``harness.run.trainer.Trainer``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.run.session import Session
from harness.run.spec import RunSpec
from harness.run.trainer import Trainer, WorkerPathError, device_for



class WorkerOutOfMemory(RuntimeError):
    """Raised (not returned): the other ranks are blocked in a collective, so the worker group
    must be torn down; Ray Train retries up to max_failures, then the run is recorded failed."""


def train_lane(config: dict[str, Any]) -> None:
    """Ray Train entry point of a lane (``harness.sweep.lanes``): the process group is formed
    once, then rank 0 asks the lane's run queue for a run, every rank trains it, and again,
    until the queue has none left for this lane. After a restart (a worker error) the queue
    hands back the run in flight, which resumes from its checkpoint."""
    import gc
    import time

    import ray
    from ray.train.collective import broadcast_from_rank_zero

    from harness.run.session import LaneSession

    session = LaneSession()
    queue, lane, shape = config["queue"], config["lane"], config["shape"]
    if config.get("rendezvous") == "file":
        _file_rendezvous(session)
    elif config.get("rendezvous") == "tcp":
        _tcp_rendezvous(session)
    finished = False
    try:
        while True:
            job = ray.get(queue.take.remote(lane, shape, finished)) if session.rank == 0 else None
            job = broadcast_from_rank_zero(job)
            if job is None:
                return
            spec, run_dir = job
            session.begin(spec, run_dir, broadcast_from_rank_zero(time.time_ns()))
            check_worker_paths(spec, run_dir)
            run_training(spec, Path(run_dir), session)
            session.send({"task_ended": time.time()} if session.rank == 0 else {})
            finished = True
            gc.collect()  # the last run's engine, model and data go before the next run is built
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next run's memory figures start from a clean slate
    finally:
        if config.get("rendezvous") in ("file", "tcp") and dist.is_initialized():
            dist.destroy_process_group()


def check_worker_paths(spec: RunSpec, run_dir: str | Path) -> None:
    """The run's corpus and run folder exist on this worker's node; one line naming both if not.

    The driver checked them on its own node; a cluster node that lacks the shared folder must
    fail here, at once and plainly, not deep inside a loader. Nothing is generated here: the
    driver generated the synthetic corpus before the runs started.
    """
    import socket

    from harness.data import DataError, check_data_dir
    from harness.data.datasets import DATASETS, synthetic_state

    node = socket.gethostname()
    try:
        import ray

        node = f"{node} ({ray.util.get_node_ip_address()})"
    except Exception:  # noqa: BLE001 (outside Ray: the host name is enough)
        pass
    if not (Path(run_dir) / "spec.json").is_file():
        raise WorkerPathError(f"on node {node}: run folder {run_dir} (its spec.json) does not exist: deleted, "
                              "or the results folder is not on storage every node shares")
    if spec.task != "lm":
        return
    dataset, data_dir = spec.data.dataset, spec.data.data_dir
    try:
        if DATASETS[dataset].kind == "synthetic" and synthetic_state(Path(data_dir)) == "absent":
            raise DataError(f"{dataset}: data dir {data_dir!r} holds no corpus")
        check_data_dir(dataset, data_dir)
    except DataError as exc:
        first = str(exc).splitlines()[0].split("; source:")[0]
        raise WorkerPathError(f"on node {node}: {first} (data.data_dir must be a folder every "
                              "node sees at the same path)") from None


def _node_interface(ip: str) -> str | None:
    """The network interface that holds address ``ip`` (for gloo/NCCL to bind to), if any."""
    try:
        import psutil
    except ImportError:  # pragma: no cover (psutil comes with Ray)
        return None
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == ip for a in addrs):
            return name
    return None


def _tcp_rendezvous(session: Session) -> None:
    """Form the process group through torch's TCP store, bound to rank 0's node address only.

    torch's own env:// rendezvous (and Ray's TorchTrainer) open the store on every interface.
    Here rank 0 binds a socket to its node's address (Ray's node IP), hands it to the store
    (``master_listen_fd``) and broadcasts the address to the other ranks through Ray Train;
    gloo and NCCL are pointed at the interface that holds the node's address.
    """
    import datetime
    import socket

    import ray
    from ray.train.collective import broadcast_from_rank_zero

    ip = ray.util.get_node_ip_address()
    iface = _node_interface(ip)
    if iface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", iface)
    listener = None
    address = None
    if session.rank == 0:
        listener = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((ip, 0))
        listener.listen(max(128, session.world_size))
        address = (ip, listener.getsockname()[1])
    address = broadcast_from_rank_zero(address)
    store = dist.TCPStore(address[0], address[1], session.world_size, is_master=session.rank == 0,
                          timeout=datetime.timedelta(minutes=5),
                          # the store owns the socket from here (detach: Python must not close it)
                          master_listen_fd=listener.detach() if listener is not None else None)
    _init_group(session, store, MASTER_ADDR=address[0], MASTER_PORT=address[1])


def _file_rendezvous(session: Session) -> None:
    """Form the process group through a file instead of a TCP store (single node only).

    torch's TCPStore listens on every interface; on one machine a FileStore in the temp
    folder does the same job without opening a port. The file is named after the worker
    group's placement group, which all workers of one (re)start share and no other has.
    gloo and NCCL are told to use the loopback interface for the same reason.
    """
    import ray

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    group = ray.get_runtime_context().get_placement_group_id() or "nogroup"
    path = Path(tempfile.gettempdir()) / f"deqbench-rendezvous-{group}"
    _init_group(session, dist.FileStore(str(path), session.world_size))


def _init_group(session: Session, store, **env: Any) -> None:
    """Join the process group through ``store`` (nccl on CUDA, gloo on CPU) and export the
    rank variables DeepSpeed reads (plus ``env``)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device_for(session))
    dist.init_process_group(backend, store=store, rank=session.rank, world_size=session.world_size)
    for key, value in {"RANK": session.rank, "WORLD_SIZE": session.world_size,
                       "LOCAL_RANK": session.local_rank, **env}.items():
        os.environ[key] = str(value)


def run_training(spec: RunSpec, run_dir: Path, session: Session) -> dict | None:
    """Train one run on this worker (``harness.run.trainer``); rank 0's messages become the
    run's records.

    Running out of memory anywhere (model build, measurement, a step) is raised as
    :class:`WorkerOutOfMemory` with one line that says so, the step and the rank.
    """
    trainer = None
    try:
        trainer = Trainer(spec, run_dir, session)
        return trainer.run()
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if isinstance(exc, WorkerOutOfMemory) or not _is_oom(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        at = f" at step {trainer.step}" if trainer is not None and trainer.step else ""
        raise WorkerOutOfMemory(f"out of memory{at} on rank {session.rank}: {first}") from None


def _is_oom(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or the CPU allocator failing under a memory cap."""
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError))
            or "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower())


