"""The per-worker training function: data shard -> model -> DeepSpeed -> steps -> records.

Under Ray, ``harness.sweep.launch`` runs :func:`train_worker` in every worker of a Ray Train
data-parallel trainer (the process group is formed here: a file on one node, a TCP store
bound to rank 0's node address on a cluster). Without Ray, ``python -m harness.train``
(``harness/train.py``) calls :func:`run_training` in one process (world size 1), for
debugging, profiling, or machines where Ray is not installed.

Both paths write the same records (docs/records.md). What one run does:

1. seed, pick the device (CUDA -> nccl + bf16, CPU -> gloo + fp32), load this rank's data;
2. ``models.build_model`` -> ``deepspeed.initialize`` (DeepSpeed config from the job file);
3. resume from the last checkpoint if there is one (Ray Train's, or the run folder's);
4. train: timed steps after ``measure_warmup`` (``measure_steps`` of them), a report every
   ``log_interval`` steps (values averaged over ranks), eval every ``eval_interval``,
   a checkpoint every ``checkpoint_interval`` and at the end;
5. a non-finite loss or solver residual stops the run, recorded as failed with the reason;
6. final eval on validation and test, then the summary (the figures of docs/records.md).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.records import RunRecord
from harness.run import faults, measure
from harness.run.dsconfig import deepspeed_config
from harness.run.envinfo import environment
from harness.run.session import Session, describe_exception, scratch_dir
from harness.run.workload import Workload
from harness.run.spec import RunSpec

log = logging.getLogger("deqbench.train")


class WorkerOutOfMemory(RuntimeError):
    """Raised (not returned): the other ranks are blocked in a collective, so the worker group
    must be torn down; Ray Train retries up to max_failures, then the run is recorded failed."""


class Diverged(RuntimeError):
    """A non-finite loss or solver residual: the run stops and is recorded as failed."""


def _device(session: Session) -> torch.device:
    if torch.cuda.is_available():
        # a worker may see all of the node's GPUs (index by local rank) or only its own
        index = session.local_rank if torch.cuda.device_count() > session.local_rank else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _setup_logging(run_dir: Path, rank: int) -> None:
    handler = RunRecord(run_dir).log_handler(rank)
    handler.setFormatter(logging.Formatter("%(asctime)s rank%(rank)s %(levelname)s %(message)s"))
    handler.addFilter(lambda r: setattr(r, "rank", rank) or True)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (``train_loop_per_worker``)."""
    from harness.run.session import RaySession

    spec = config["spec"]
    tags = {"sweep": spec.sweep, "run_id": spec.run_id,
            "strategy": str(spec.model.get("depth", {}).get("kind", ""))}
    session = RaySession(tags)
    check_worker_paths(spec, config["run_dir"])
    if config.get("rendezvous") == "file":
        _file_rendezvous(session)
    elif config.get("rendezvous") == "tcp":
        _tcp_rendezvous(session)
    try:
        run_training(spec, Path(config["run_dir"]), session)
    finally:
        if config.get("rendezvous") in ("file", "tcp") and dist.is_initialized():
            dist.destroy_process_group()


class WorkerPathError(RuntimeError):
    """A path of the run spec is missing on this worker's node (e.g. not on shared storage)."""


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


def _node_name() -> str:
    """This worker's Ray node id (or the host name outside Ray): where each rank ran."""
    ray = sys.modules.get("ray")  # never imported here on the path without Ray
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    import socket

    return socket.gethostname()


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
        torch.cuda.set_device(_device(session))
    dist.init_process_group(backend, store=store, rank=session.rank, world_size=session.world_size)
    for key, value in {"RANK": session.rank, "WORLD_SIZE": session.world_size,
                       "LOCAL_RANK": session.local_rank, **env}.items():
        os.environ[key] = str(value)


def run_training(spec: RunSpec, run_dir: Path, session: Session) -> dict | None:
    """Train one run on this worker; rank 0's reports become the run's records.

    Running out of memory anywhere (model build, measurement, a step) is raised as
    :class:`WorkerOutOfMemory` with one line that says so, the step and the rank.
    """
    try:
        return _train(spec, run_dir, session)
    except WorkerOutOfMemory:
        raise
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkerOutOfMemory(f"out of memory on rank {session.rank}: {first}") from None


def _train(spec: RunSpec, run_dir: Path, session: Session) -> dict | None:
    train_cfg = spec.train
    _setup_logging(run_dir, session.rank)
    torch.manual_seed(train_cfg.seed)
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
    device = _device(session)
    is_main = session.rank == 0
    if device.type == "cpu" and spec.resources.memory_cap_gb:
        _cap_memory(spec.resources.memory_cap_gb)

    work = Workload(spec, rank=session.rank, world_size=session.world_size, device=device)
    import deepspeed

    ds_cfg = deepspeed_config(spec, cuda=device.type == "cuda")

    def build_engine():
        model = work.build_model()
        engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                       config=ds_cfg)
        _load_weights_only(engine)
        return model, engine, optimizer

    model, engine, optimizer = build_engine()
    counts = model.param_counts()
    start_step = 0
    refused = None
    with session.checkpoint() as ckpt:
        if ckpt is not None:
            try:
                path, client = engine.load_checkpoint(str(ckpt), tag="latest_run_ckpt")
                if path is None:
                    raise FileNotFoundError("no DeepSpeed checkpoint 'latest_run_ckpt' in it")
                start_step = int((client or {}).get("step", 0))
            except Exception as exc:  # noqa: BLE001 (any unreadable checkpoint: refused, not fatal)
                refused = describe_exception(exc)
        # every rank must agree: one rank's unreadable shard means nobody resumes
        if _any_rank(refused is not None, device):
            refused = refused or "unreadable on another rank"
            log.warning("checkpoint refused (%s); starting from step 0", refused)
            torch.manual_seed(train_cfg.seed)  # a half-loaded engine is not trusted: a new one
            model, engine, optimizer = build_engine()
            start_step = 0
        elif ckpt is not None:
            log.info("resumed from checkpoint at step %d", start_step)

    env = environment(seeds={"train": train_cfg.seed}, world_size=session.world_size) if is_main else None
    status: dict[str, Any] = {"state": "running", "step": start_step}
    if refused:
        status["checkpoint_refused"] = f"the last checkpoint could not be read ({refused}); started again from step 0"
    first: dict[str, Any] = {"status": status, "env": env,
                             # records after the starting step belong to a lost attempt
                             "resumed_from": start_step}
    session.send(first if is_main else {})
    # every rank (ZeRO-3 forwards gather). A DEQ with a warm-up is measured as the DEQ it is
    # for most of training (equilibrium mode), and in its warm-up mode as a second figure.
    depth_cfg = spec.model.get("depth", {})
    warmup_steps = int(depth_cfg.get("pretrain_steps") or 0) if depth_cfg.get("kind") == "deq" else 0
    act_warmup = None
    if warmup_steps:
        engine.module.set_step(0)
        act_warmup = work.activation_bytes(engine.module)
        engine.module.set_step(warmup_steps)
    act_bytes = work.activation_bytes(engine.module)

    steps = train_cfg.steps
    planned = faults.faults_for(spec, session.rank)
    # timed steps: after the warm-up, counted from where this attempt starts (a resumed run
    # pays its warm-up again), squeezed into the steps left if need be
    n_measure = min(train_cfg.measure_steps, steps - start_step)
    measure_from = min(start_step + train_cfg.measure_warmup, steps - n_measure)
    measure_to = measure_from + n_measure
    window = measure.MemoryWindow(device)
    timed: dict[str, list[float]] = {"step": [], "fwd": [], "bwd": [], "solver": []}
    pending: list[dict] = []
    agg = measure.StatsWindow()
    evals: dict[str, float] = {}
    t_start = measure.now(device)
    last_loss = float("nan")
    peak = 0
    tokens_per_step = work.tokens_per_batch * session.world_size
    try:
        for step in range(start_step + 1, steps + 1):
            engine.train()
            engine.module.set_step(step)
            if step == measure_from + 1:
                window.begin()
            inputs, targets = work.train_batch(step - 1)
            t0 = measure.now(device)
            poison = faults.before_step(planned, step, run_dir) if planned else False
            try:
                out = engine(inputs, targets)
                loss = out.loss * float("nan") if poison else out.loss
                t1 = measure.now(device)
                engine.backward(loss)
                t2 = measure.now(device)
                engine.step()
                t3 = measure.now(device)
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise WorkerOutOfMemory(f"out of memory at step {step} on rank {session.rank}: "
                                        f"{first}") from None
            stats = dict(out.stats)
            stats.update(out.backward_stats())
            if measure_from < step <= measure_to:
                timed["step"].append(t3 - t0)
                timed["fwd"].append(t1 - t0)
                timed["bwd"].append(t2 - t1)
                timed["solver"].append(float(stats.get("solver_time_s", 0.0)))
                if step == measure_to:
                    peak = window.peak_bytes()
            stats["step_time_s"] = t3 - t0
            agg.add(float(loss.detach()), stats)
            do_log = step % train_cfg.log_interval == 0 or step == steps
            ckpt_every = train_cfg.checkpoint_interval
            do_ckpt = bool(ckpt_every) and step % ckpt_every == 0 and step != steps
            if do_log:
                if not (run_dir / "spec.json").is_file():  # the run folder was deleted under us
                    raise WorkerPathError(f"run folder {run_dir} was deleted while the run was in flight "
                                          f"(at step {step})")
                rec = agg.flush(device)
                last_loss = rec["loss"]
                rec.update(kind="train", step=step, elapsed_s=measure.now(device) - t_start,
                           lr=float(engine.get_lr()[0]),
                           tokens_per_s=tokens_per_step / max(rec["step_time_s"], 1e-12))
                if peak:
                    rec["peak_mem_bytes"] = peak
                _check_finite(rec, step)
                pending.append(rec)
            interval = train_cfg.eval_interval
            if interval and step % interval == 0 and step != steps:
                ev = work.evaluate(engine, "valid", max_batches=train_cfg.eval_batches)
                pending.append({"kind": "eval", "step": step, "elapsed_s": measure.now(device) - t_start,
                                **{f"val_{k}": v for k, v in ev.items()}})
            if do_ckpt:
                _report_with_checkpoint(session, engine, step, pending if is_main else [])
                pending = []
            elif do_log:
                session.send({"records": pending, "status": {"state": "running", "step": step}}
                               if is_main else {})
                pending = []
    except Diverged as exc:  # every rank sees the same all-reduced values, so all stop here
        reason = f"Diverged: {exc}"
        log.error(reason)
        session.send({"records": pending, "failed": reason, "status": {"step": step}}
                       if is_main else {})
        return None

    evals.update({f"val_{k}": v for k, v in work.evaluate(engine, "valid").items()})
    evals.update({f"test_{k}": v for k, v in work.evaluate(engine, "test",
                                                           max_batches=train_cfg.test_batches or None).items()})
    wall = measure.now(device) - t_start
    step_time = measure.median(timed["step"])
    summary: dict[str, Any] = {
        "run_id": spec.run_id, "sweep": spec.sweep, "name": spec.name, "task": spec.task,
        "dataset": spec.data.dataset, "cell": spec.model.get("cell"),
        "strategy": spec.model.get("depth", {}).get("kind"), "depth": work.depth_size,
        "seed": train_cfg.seed, "world_size": session.world_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "params_total": counts["total"], "params_embedding": counts["embedding"],
        "params_non_embedding": counts["non_embedding"],
        "activation_bytes": act_bytes, "activation_bytes_warmup": act_warmup, "peak_mem_bytes": peak,
        "static_mem_bytes": measure.static_mem_bytes(engine.module, optimizer),
        "step_time_s": step_time, "fwd_time_s": measure.median(timed["fwd"]),
        "bwd_time_s": measure.median(timed["bwd"]), "solver_time_s": measure.median(timed["solver"]),
        "tokens_per_s": tokens_per_step / step_time if step_time > 0 else None,
        "wall_time_s": wall, "steps": steps, "train_loss": last_loss,
        "optimal_ppl": work.optimal_ppl, **agg.summary(), **evals,
    }
    summary = measure.reduce_summary(summary, device)
    # ZeRO-3 partitions the parameters: the module then holds no full copy to compare
    if engine.zero_optimization_stage() < 3:
        summary["rank_param_sha"] = measure.gather_from_ranks(measure.param_fingerprint(engine.module), session.world_size)
    summary["rank_nodes"] = measure.gather_from_ranks(_node_name(), session.world_size)
    final = {"records": [{"kind": "eval", "step": steps, "elapsed_s": wall,
                          **{k: v for k, v in evals.items() if k.startswith("val_")}}],
             "summary": summary,
             "status": {"state": "finished", "step": steps, "reason": None, "rank": None}}
    session.send(final if is_main else {})
    log.info("finished: %s", {k: summary.get(k) for k in ("val_ppl", "test_ppl", "step_time_s")})
    return summary if is_main else None


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _load_weights_only(engine) -> None:
    """Make DeepSpeed read checkpoints with ``torch.load(weights_only=True)``.

    Its torch checkpoint engine unpickles arbitrary objects (``weights_only=False``); a
    checkpoint folder is data, and loading it must not run code. Tensors, containers and
    plain values load as before; anything else is refused with torch's error.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # DeepSpeed's own plain-data classes that its ZeRO checkpoints hold
    allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]

    def load(path: str, map_location=None):
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    engine.checkpoint_engine.load = load


def _report_with_checkpoint(session: Session, engine, step: int, records: list[dict]) -> None:
    with scratch_dir("deqbench-ckpt-") as tmp:
        engine.save_checkpoint(str(tmp), tag="latest_run_ckpt", client_state={"step": step})
        report = {"records": records, "status": {"state": "running", "step": step}}
        session.send(report if session.rank == 0 else {}, checkpoint_dir=tmp)


def _cap_memory(cap_gb: float) -> None:
    """Limit this process's address space to its current size plus ``cap_gb`` GiB."""
    import resource

    with open("/proc/self/statm") as fh:
        current = int(fh.read().split()[0]) * resource.getpagesize()
    limit = current + int(cap_gb * 2 ** 30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    log.info("address space capped at %.2f GiB (%.2f GiB above start-up)", limit / 2 ** 30, cap_gb)


def _is_oom(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or the CPU allocator failing under a memory cap."""
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError))
            or "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower())


def _check_finite(rec: dict, step: int) -> None:
    for key in ("loss", "fwd_abs_res", "fwd_rel_res"):
        value = rec.get(key)
        if value is not None and not math.isfinite(value):
            raise Diverged(f"non-finite {key} ({value}) at step {step}")
