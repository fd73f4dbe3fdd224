"""One run's training on one worker, in the four parts torchtitan's trainer has:

1. set-up (:meth:`Trainer.__init__`): seed, threads, device, memory cap, this rank's data
   (``Workload``), the model, ``deepspeed.initialize`` with the job file's DeepSpeed block,
   the resume from the last checkpoint (refused in one line if unreadable: a fresh start),
   and the memory figures measured before training;
2. one training step (:meth:`Trainer.train_step`): forward, backward, optimizer step,
   timed with the device synchronised, injected faults (tests) first;
3. periodic work (:meth:`Trainer.periodic`): a training line every ``log_interval`` steps
   (values averaged over ranks), eval every ``eval_interval``, a checkpoint every
   ``checkpoint_interval``, each sent to the records as one message;
4. the summary (:meth:`Trainer.finish`): final eval on validation and test, the run's
   figures (``harness.records.schema``), the equilibrium analysis of the trained cell
   (``DepthModel.analysis``, rank 0), the final message.

A non-finite loss or solver residual raises :class:`Diverged`; :meth:`Trainer.run` records
it as the run's failure. ``harness.run.worker.run_training`` wraps all of it (the
out-of-memory translation).
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

from harness.records import RunRecord
from harness.run import faults, measure
from harness.run.dsconfig import deepspeed_config
from harness.run.envinfo import environment
from harness.run.session import Session, describe_exception, scratch_dir
from harness.run.spec import RunSpec
from harness.run.workload import Workload

log = logging.getLogger("deqbench.train")
CHECKPOINT_TAG = "latest_run_ckpt"


class Diverged(RuntimeError):
    """A non-finite loss or solver residual: the run stops and is recorded as failed."""


class WorkerPathError(RuntimeError):
    """A path of the run spec is missing on this worker's node (e.g. not on shared storage),
    or the run folder was deleted while the run was in flight."""


@dataclass
class StepTimes:
    """Per-step timings (seconds) of every step after the warm-up: the summary's medians and
    10th / 90th percentiles. ``solver`` only for a strategy that reports its solve time."""

    step: list[float] = field(default_factory=list)
    fwd: list[float] = field(default_factory=list)
    bwd: list[float] = field(default_factory=list)
    solver: list[float] = field(default_factory=list)

    def add(self, step: float, fwd: float, bwd: float, solver: float | None) -> None:
        self.step.append(step)
        self.fwd.append(fwd)
        self.bwd.append(bwd)
        if solver is not None:
            self.solver.append(float(solver))

    def figures(self) -> dict[str, float]:
        """``<name>_time_s`` (median), ``<name>_time_p10_s`` and ``<name>_time_p90_s``."""
        out: dict[str, float] = {}
        for name, values in (("step", self.step), ("fwd", self.fwd), ("bwd", self.bwd),
                             ("solver", self.solver)):
            out[f"{name}_time_s"] = measure.median(values)
            out[f"{name}_time_p10_s"] = measure.quantile(values, 0.1)
            out[f"{name}_time_p90_s"] = measure.quantile(values, 0.9)
        return out


class InferenceWindow:
    """The final validation pass, timed per batch (forward only, no gradient) and, on CUDA,
    its peak memory: what inference with the trained model costs."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.peak = device, [], None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def end(self) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))

    def figures(self) -> dict[str, Any]:
        return {"infer_time_s": measure.median(self.times), "infer_peak_mem_bytes": self.peak,
                "infer_times_s": [round(t, 7) for t in self.times]}


def device_for(session: Session) -> torch.device:
    if torch.cuda.is_available():
        # a worker may see all of the node's GPUs (index by local rank) or only its own
        index = session.local_rank if torch.cuda.device_count() > session.local_rank else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


class Trainer:
    """Everything one worker needs to train one run (see the module docstring)."""

    def __init__(self, spec: RunSpec, run_dir: Path, session: Session) -> None:
        self.spec, self.run_dir, self.session = spec, run_dir, session
        self.cfg = spec.train
        t_init, self.started_at = time.perf_counter(), time.time()
        self.is_main = session.rank == 0
        self.step: int | None = None  # the step in flight (for error messages)
        _setup_logging(run_dir, session.rank)
        torch.manual_seed(self.cfg.seed)
        torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
        self.device = device_for(session)
        if self.device.type == "cpu" and spec.resources.memory_cap_gb:
            _cap_memory(spec.resources.memory_cap_gb)
        self.work = Workload(spec, rank=session.rank, world_size=session.world_size, device=self.device)
        self.ds_config = deepspeed_config(spec, cuda=self.device.type == "cuda")
        self._build_engine()
        self.counts = self.model.param_counts()
        self.start_step, refused = self._resume()
        self._send_start(refused)
        self.activation_bytes, self.activation_bytes_warmup = self._measure_activations()
        self.tokens_per_step = self.work.tokens_per_batch * session.world_size
        self.planned_faults = faults.faults_for(spec, session.rank)
        # timed steps: after the warm-up, counted from where this attempt starts (a resumed
        # run pays its warm-up again), squeezed into the steps left if need be
        n_measure = min(self.cfg.measure_steps, self.cfg.steps - self.start_step)
        self.measure_from = min(self.start_step + self.cfg.measure_warmup, self.cfg.steps - n_measure)
        self.measure_to = self.measure_from + n_measure
        self.window = measure.MemoryWindow(self.device)
        self.times = StepTimes()
        self.stats = measure.StatsWindow()
        self.pending: list[dict] = []
        self.peak: int | None = None  # CUDA only (measure.MemoryWindow)
        self.last_loss = float("nan")
        self.t_start = measure.now(self.device)
        # the sweep timeline's phases (seconds, this attempt): set-up before the first step,
        # then eval and checkpoint time inside the training wall time
        self.phases = {"setup_time_s": time.perf_counter() - t_init, "eval_time_s": 0.0, "checkpoint_time_s": 0.0,
                       "worker_started_at": self.started_at, "training_started_at": time.time()}

    # ---------------------------------------------------------------- set-up
    def _build_engine(self) -> None:
        import deepspeed

        self.model = self.work.build_model()
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=self.model, model_parameters=self.model.parameters(), config=self.ds_config)
        _load_weights_only(self.engine)

    def _resume(self) -> tuple[int, str | None]:
        """(the step to start after, why the checkpoint was refused or None)."""
        start, refused = 0, None
        with self.session.checkpoint() as ckpt:
            if ckpt is not None:
                try:
                    path, client = self.engine.load_checkpoint(str(ckpt), tag=CHECKPOINT_TAG)
                    if path is None:
                        raise FileNotFoundError(f"no DeepSpeed checkpoint {CHECKPOINT_TAG!r} in it")
                    start = int((client or {}).get("step", 0))
                except Exception as exc:  # noqa: BLE001 (any unreadable checkpoint: refused, not fatal)
                    refused = describe_exception(exc)
            # every rank must agree: one rank's unreadable shard means nobody resumes
            if _any_rank(refused is not None, self.device):
                refused = refused or "unreadable on another rank"
                log.warning("checkpoint refused (%s); starting from step 0", refused)
                torch.manual_seed(self.cfg.seed)  # a half-loaded engine is not trusted: a new one
                self._build_engine()
                start = 0
            elif ckpt is not None:
                log.info("resumed from checkpoint at step %d", start)
        return start, refused

    def _send_start(self, refused: str | None) -> None:
        status: dict[str, Any] = {"state": "running", "step": self.start_step}
        if refused:
            status["checkpoint_refused"] = (f"the last checkpoint could not be read ({refused}); "
                                            "started again from step 0")
        env = environment(seeds={"train": self.cfg.seed}, world_size=self.session.world_size) \
            if self.is_main else None
        # records after the starting step belong to a lost attempt
        self._send({"status": status, "env": env, "resumed_from": self.start_step})

    def _measure_activations(self) -> tuple[int, int | None]:
        """(activation_bytes, activation_bytes_warmup), on every rank (ZeRO-3 forwards gather).

        A DEQ with a warm-up is measured as the DEQ it is for most of training (equilibrium
        mode), and in its warm-up mode as a second figure."""
        depth = self.spec.model.get("depth", {})
        warmup_steps = int(depth.get("pretrain_steps") or 0) if depth.get("kind") == "deq" else 0
        warmup_bytes = None
        if warmup_steps:
            self.engine.module.set_step(0)
            warmup_bytes = self.work.activation_bytes(self.engine.module)
            self.engine.module.set_step(warmup_steps)
        return self.work.activation_bytes(self.engine.module), warmup_bytes

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict | None:
        """Train from the start step to the end; the summary on rank 0 (None elsewhere and
        when the run diverged, which is recorded as its failure)."""
        try:
            for step in range(self.start_step + 1, self.cfg.steps + 1):
                self.step = step
                self.train_step(step)
                self.periodic(step)
        except Diverged as exc:  # every rank sees the same all-reduced values, so all stop here
            reason = f"Diverged: {exc}"
            log.error(reason)
            self._send({"records": self.pending, "failed": reason, "status": {"step": self.step}})
            return None
        self.step = None
        return self.finish()

    def train_step(self, step: int) -> None:
        """Forward, backward and optimizer step of global step ``step`` (1-based), timed."""
        engine, now = self.engine, measure.now
        engine.train()
        engine.module.set_step(step)
        if step == self.measure_from + 1:
            self.window.begin()
        inputs, targets = self.work.train_batch(step - 1)
        t0 = now(self.device)
        poison = faults.before_step(self.planned_faults, step, self.run_dir) if self.planned_faults else False
        out = engine(inputs, targets)
        loss = out.loss * float("nan") if poison else out.loss
        t1 = now(self.device)
        engine.backward(loss)
        t2 = now(self.device)
        engine.step()
        t3 = now(self.device)
        stats = {**out.stats, **out.backward_stats()}
        if step > self.measure_from:  # every step after the warm-up is timed
            self.times.add(t3 - t0, t1 - t0, t2 - t1, stats.get("solver_time_s"))
        if step == self.measure_to:
            self.peak = self.window.peak_bytes()
        stats["step_time_s"] = t3 - t0
        self.stats.add(float(loss.detach()), stats)

    def periodic(self, step: int) -> None:
        """The training line, the eval and the checkpoint due after ``step``, as one message."""
        cfg, last = self.cfg, step == self.cfg.steps
        do_log = step % cfg.log_interval == 0 or last
        do_ckpt = bool(cfg.checkpoint_interval) and step % cfg.checkpoint_interval == 0 and not last
        if do_log:
            if not (self.run_dir / "spec.json").is_file():  # the run folder was deleted under us
                raise WorkerPathError(f"run folder {self.run_dir} was deleted while the run was in flight "
                                      f"(at step {step})")
            self.pending.append(self._train_line(step))
        if cfg.eval_interval and step % cfg.eval_interval == 0 and not last:
            with self._timed("eval_time_s"):
                ev = self.work.evaluate(self.engine, "valid", max_batches=cfg.eval_batches)
                self.pending.append({"kind": "eval", "step": step, "elapsed_s": self._elapsed(),
                                     **{f"val_{k}": v for k, v in ev.items()}, **self._spectral_radius()})
        if do_ckpt:
            with self._timed("checkpoint_time_s"):
                self._send_with_checkpoint(step)
        elif do_log:
            self._send({"records": self.pending, "status": {"state": "running", "step": step}})
        if do_ckpt or do_log:
            self.pending = []

    def _train_line(self, step: int) -> dict:
        rec = self.stats.flush(self.device)
        self.last_loss = rec["loss"]
        rec.update(kind="train", step=step, elapsed_s=self._elapsed(), lr=float(self.engine.get_lr()[0]),
                   tokens_per_s=self.tokens_per_step / max(rec["step_time_s"], 1e-12))
        if self.peak:
            rec["peak_mem_bytes"] = self.peak
        _check_finite(rec, step)
        return rec

    # ---------------------------------------------------------------- the summary
    def finish(self) -> dict | None:
        """Final eval, the run's summary (reduced over ranks), the final message."""
        work, steps = self.work, self.cfg.steps
        inference = InferenceWindow(self.device)
        with self._timed("eval_time_s"):
            evals = {f"val_{k}": v for k, v in work.evaluate(self.engine, "valid", timings=inference.times).items()}
            inference.end()
            evals.update({f"test_{k}": v for k, v in work.evaluate(
                self.engine, "test", max_batches=self.cfg.test_batches or None).items()})
            radius = self._spectral_radius()
        wall = self._elapsed()
        self.phases["training_ended_at"] = time.time()
        summary = measure.reduce_summary({**self._figures(wall), **self.stats.summary(), **evals,
                                          **inference.figures(), **radius, **self.phases}, self.device)
        # ZeRO-3 partitions the parameters: the module then holds no full copy to compare
        if self.engine.zero_optimization_stage() < 3:
            summary["rank_param_sha"] = measure.gather_from_ranks(measure.param_fingerprint(self.engine.module),
                                                                  self.session.world_size)
        summary["rank_nodes"] = measure.gather_from_ranks(_node_name(), self.session.world_size)
        analysis = self.work.analysis(self.engine.module, step=steps) \
            if self.is_main and self.engine.zero_optimization_stage() < 3 else None
        self._send({"records": [{"kind": "eval", "step": steps, "elapsed_s": wall,
                                 **{k: v for k, v in evals.items() if k.startswith("val_")}, **radius}],
                    "summary": summary, "analysis": analysis,
                    "status": {"state": "finished", "step": steps, "reason": None, "rank": None}})
        log.info("finished: %s", {k: summary.get(k) for k in ("val_ppl", "test_ppl", "step_time_s")})
        return summary if self.is_main else None

    def _figures(self, wall: float) -> dict[str, Any]:
        """The summary's own figures (harness.records.schema), before the solver statistics."""
        spec, device, times = self.spec, self.device, self.times
        step_time = measure.median(times.step)
        return {
            "run_id": spec.run_id, "sweep": spec.sweep, "name": spec.name, "task": spec.task,
            "dataset": spec.data.dataset, "cell": spec.model.get("cell"), "strategy": spec.strategy or None,
            "depth": self.work.depth_size, "seed": self.cfg.seed, "world_size": self.session.world_size,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "params_total": self.counts["total"], "params_embedding": self.counts["embedding"],
            "params_non_embedding": self.counts["non_embedding"],
            "activation_bytes": self.activation_bytes, "activation_bytes_warmup": self.activation_bytes_warmup,
            "peak_mem_bytes": self.peak, "static_mem_bytes": measure.static_mem_bytes(self.engine.module,
                                                                                      self.optimizer),
            **times.figures(), "step_times_s": [round(t, 7) for t in times.step],
            "tokens_per_s": self.tokens_per_step / step_time if step_time > 0 else None,
            "wall_time_s": wall, "steps": self.cfg.steps, "train_loss": self.last_loss,
            "optimal_ppl": self.work.optimal_ppl, "unigram_ppl": self.work.unigram_ppl,
            "chance_acc": self.work.chance_acc,
        }

    def _spectral_radius(self) -> dict[str, float]:
        """``{"spectral_radius": rho}`` (mean over every rank's first validation batch) for a
        strategy with an equilibrium, else {}. Every rank takes part (one all-reduce)."""
        if self.engine.zero_optimization_stage() >= 3:  # partitioned weights: no cell to call
            return {}
        rho = self.work.spectral_radius(self.engine.module)
        if rho is None:
            return {}
        means, _ = measure.all_reduce_stats({"spectral_radius": rho}, {}, self.device)
        return {"spectral_radius": means["spectral_radius"]}

    # ---------------------------------------------------------------- messages
    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        t0 = measure.now(self.device)
        try:
            yield
        finally:
            self.phases[phase] += measure.now(self.device) - t0

    def _elapsed(self) -> float:
        return measure.now(self.device) - self.t_start

    def _send(self, message: dict) -> None:
        """Rank 0's message to the records (the other ranks send ``{}``: Ray Train wants
        every rank to report)."""
        self.session.send(message if self.is_main else {})

    def _send_with_checkpoint(self, step: int) -> None:
        with scratch_dir("deqbench-ckpt-") as tmp:
            self.engine.save_checkpoint(str(tmp), tag=CHECKPOINT_TAG, client_state={"step": step})
            message = {"records": self.pending, "status": {"state": "running", "step": step}}
            self.session.send(message if self.is_main else {}, checkpoint_dir=tmp)


def _setup_logging(run_dir: Path, rank: int) -> None:
    handler = RunRecord(run_dir).log_handler(rank)
    handler.setFormatter(logging.Formatter("%(asctime)s rank%(rank)s %(levelname)s %(message)s"))
    handler.addFilter(lambda r: setattr(r, "rank", rank) or True)
    for previous in log.handlers:  # a lane's worker trains one run after another: close the last one's log
        previous.close()
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _node_name() -> str:
    """This worker's Ray node id (or the host name outside Ray): where each rank ran."""
    ray = sys.modules.get("ray")  # never imported here on the path without Ray
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    import socket

    return socket.gethostname()


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _load_weights_only(engine) -> None:
    """Make DeepSpeed read checkpoints with :func:`load_checkpoint_file`.

    Its torch checkpoint engine unpickles arbitrary objects (``weights_only=False``); a
    checkpoint folder is data, and loading it must not run code."""
    engine.checkpoint_engine.load = load_checkpoint_file


def load_checkpoint_file(path: str | Path, map_location=None):
    """``torch.load(weights_only=True)`` of one file of a DeepSpeed checkpoint: tensors,
    containers, plain values and DeepSpeed's own plain-data classes load; anything else is
    refused with torch's error."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # DeepSpeed's own plain-data classes that its ZeRO checkpoints hold
    allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


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


def _check_finite(rec: dict, step: int) -> None:
    for key in ("loss", "fwd_abs_res", "fwd_rel_res"):
        value = rec.get(key)
        if value is not None and not math.isfinite(value):
            raise Diverged(f"non-finite {key} ({value}) at step {step}")
