"""Realistic sweep records for tests, written with harness.records' own writers.

``write_fixture_sweep(root)`` lays out ``root/<name>/`` exactly as a real sweep would
(docs/records.md): sweep.json, job.yaml and per run spec/status/metrics/summary/env.
The numbers follow the shapes a real benchmark shows (activation memory O(L) for
explicit and weight-tied depth, O(sqrt L) checkpointed, O(1) for DEQ and the adjoint
Neural ODE; DEQ slower per step; perplexity approaching the synthetic corpus' optimum)
with a small per-seed jitter, all deterministic.

The returned :class:`FixtureSweep` keeps every summary and spec written, so a test can
compute expected table values independently of harness.report.

Usable by any test: ``from tests.fixtures_records import write_fixture_sweep`` (or
``from fixtures_records import ...`` inside tests/).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harness.records import SweepStore

STRATEGIES = ("explicit", "weight_tied", "checkpointed", "neural_ode", "deq")
FAILED_REASON = "FloatingPointError: non-finite loss at step 12 (rank 1)"
ENV = {"git_commit": "3f9c2d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e", "git_dirty": False,
       "python": "3.11.2", "torch": "2.13.0", "ray": "2.60.0", "deepspeed": "0.19.8",
       "platform": "Linux-6.1.0-x86_64-with-glibc2.36", "hostname": "bench-node-1",
       "devices": ["cpu"], "device_count": 1, "seeds": [0, 1],
       "started": "2025-01-15T10:00:00+00:00", "ended": "2025-01-15T10:42:00+00:00"}
OPTIMAL_PPL = 18.5
UNIGRAM_PPL = 150.0  # the context-free reference every fixture model beats
B, T, D, D_INNER, VOCAB = 8, 32, 64, 256, 1000
DATASETS = {"lm": "synthetic", "copy": "copy_memory"}


@dataclass
class FixtureSweep:
    """What was written: the sweep folder and every spec/summary/status by run_id."""

    dir: Path
    specs: dict[str, dict] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)   # finished runs only
    states: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def finished(self, strategy: str | None = None, depth: int | None = None, task: str | None = None) -> list[dict]:
        """Summaries of finished runs, optionally of one strategy, depth and task."""
        return [s for s in self.summaries.values()
                if (strategy is None or s["strategy"] == strategy) and (depth is None or s["depth"] == depth)
                and (task is None or s["task"] == task)]

    def run_id_of(self, strategy: str, depth: int, seed: int, task: str | None = None) -> str:
        """The run_id of one grid point (``task`` only needed in a sweep with several tasks)."""
        for run_id, spec in self.specs.items():
            if ((spec["model"]["depth"]["kind"], _depth_of(spec), spec["train"]["seed"]) == (strategy, depth, seed)
                    and task in (None, spec["task"])):
                return run_id
        raise KeyError((strategy, depth, seed, task))


def _depth_of(spec: dict) -> int:
    depth = spec["model"]["depth"]
    return next(depth[k] for k in ("layers", "max_iter", "steps") if k in depth)


def _depth_config(strategy: str, depth: int) -> dict:
    if strategy == "deq":
        return {"kind": "deq", "solver": "broyden", "max_iter": depth, "tol": 1e-3,
                "backward_solver": "broyden", "backward_max_iter": depth + 4, "backward_tol": 1e-6}
    if strategy == "neural_ode":
        return {"kind": "neural_ode", "method": "rk4", "steps": depth, "adjoint": True}
    if strategy == "checkpointed":
        return {"kind": "checkpointed", "layers": depth, "segments": max(1, round(math.sqrt(depth)))}
    return {"kind": strategy, "layers": depth}


def _figures(strategy: str, depth: int, seed: int, task: str) -> dict:
    """Final summary numbers of one run (deterministic per strategy/depth/seed)."""
    rng = random.Random(f"{strategy}-{depth}-{seed}")
    jitter = lambda spread=0.03: 1.0 + rng.uniform(-spread, spread)  # noqa: E731
    per_cell = 4 * D * D + 2 * D * D_INNER + 6 * D
    layer_bytes = B * T * D * 4 * 10
    head_bytes = B * T * VOCAB * 4
    cells = depth if strategy == "explicit" else 1
    params_non_emb = cells * per_cell + D * 2
    t_cell = 0.0021
    out: dict = {"params_non_embedding": params_non_emb, "params_embedding": VOCAB * D,
                 "params_total": params_non_emb + VOCAB * D}
    solver_time = None
    if strategy in ("explicit", "weight_tied", "checkpointed"):
        segments = max(1, round(math.sqrt(depth)))
        saved = depth if strategy != "checkpointed" else depth / segments + segments
        act = saved * layer_bytes + head_bytes
        nfe = depth
        fwd = depth * t_cell
        bwd = (3.0 if strategy == "checkpointed" else 2.0) * depth * t_cell
        ppl = OPTIMAL_PPL + (30.0 if strategy == "explicit" else 36.0) / math.sqrt(depth)
    elif strategy == "neural_ode":
        act = 1.2 * layer_bytes + head_bytes
        nfe = 4 * depth
        fwd = nfe * t_cell
        bwd = 2.2 * nfe * t_cell
        ppl = OPTIMAL_PPL + 45.0 / math.sqrt(depth)
    else:  # deq
        act = 1.5 * layer_bytes + head_bytes
        fwd_nstep = min(depth, 0.8 * depth + 1) * jitter(0.05)
        bwd_nstep = min(depth + 4, 0.9 * depth + 2) * jitter(0.05)
        nfe = fwd_nstep + 2
        solver_time = fwd_nstep * t_cell * 1.1
        fwd = solver_time + 2 * t_cell
        bwd = bwd_nstep * t_cell * 1.2
        ppl = OPTIMAL_PPL + 32.0 / math.sqrt(depth)
        res = 1e-3 * (8.0 / depth) * jitter(0.2)
        out.update({"fwd_nstep_mean": fwd_nstep, "fwd_nstep_max": math.ceil(fwd_nstep * 1.15),
                    "fwd_abs_res_mean": res * 4.0, "fwd_abs_res_max": res * 9.0,
                    "fwd_rel_res_mean": res, "fwd_rel_res_max": res * 2.5,
                    "bwd_nstep_mean": bwd_nstep, "bwd_nstep_max": math.ceil(bwd_nstep * 1.1),
                    "bwd_res_mean": 2e-6 * jitter(0.2), "bwd_res_max": 7e-6 * jitter(0.2)})
    fwd, bwd = fwd * jitter(), bwd * jitter()
    step = fwd + bwd + 0.0031 * jitter()
    static = out["params_total"] * 4 * 4
    out.update({"activation_bytes": int(act), "static_mem_bytes": static,
                "peak_mem_bytes": int(static + 1.3 * act + 2 * 2**20 * jitter()),
                "step_time_s": step, "fwd_time_s": fwd, "bwd_time_s": bwd, "solver_time_s": solver_time,
                "tokens_per_s": B * T / step, "nfe": nfe})
    if task == "copy":
        acc = min(0.99, 0.55 + 0.1 * math.log2(depth)) * jitter(0.02)
        loss = -math.log(max(acc, 1e-3)) * 1.3
        out.update({"train_loss": loss * 0.95, "val_loss": loss, "test_loss": loss * 1.01,
                    "val_acc": acc, "test_acc": acc * 0.99, "chance_acc": 0.125, "val_tokens": 640,
                    "test_tokens": 1280})
    else:
        val_ppl = ppl * jitter(0.02)
        out.update({"train_loss": math.log(val_ppl) - 0.05, "val_loss": math.log(val_ppl), "val_ppl": val_ppl,
                    "test_loss": math.log(val_ppl * 1.02), "test_ppl": val_ppl * 1.02,
                    "optimal_ppl": OPTIMAL_PPL, "unigram_ppl": UNIGRAM_PPL, "val_tokens": 4096,
                    "test_tokens": 8192})
    return out


def _curves(fig: dict, strategy: str, steps: int, task: str, last_step: int | None = None) -> list[dict]:
    """Per-step train records every 10 steps and eval records every 20 steps."""
    records = []
    end = steps if last_step is None else last_step
    final_loss = fig.get("val_loss", 1.0)
    start_loss = math.log(VOCAB) if task == "lm" else 2.3
    for step in range(10, end + 1, 10):
        frac = step / steps
        loss = final_loss + (start_loss - final_loss) * math.exp(-4.0 * frac)
        rec = {"kind": "train", "step": step, "elapsed_s": step * fig["step_time_s"] * 1.05,
               "loss": loss, "lr": 1e-3, "step_time_s": fig["step_time_s"], "tokens_per_s": fig["tokens_per_s"],
               "nfe": fig["nfe"]}
        if strategy == "deq":
            rec.update({"fwd_nstep": fig["fwd_nstep_mean"] * (0.7 + 0.3 * frac),
                        "fwd_abs_res": fig["fwd_abs_res_mean"] * (2.0 - frac),
                        "fwd_rel_res": fig["fwd_rel_res_mean"] * (2.0 - frac),
                        "bwd_nstep": fig["bwd_nstep_mean"] * (0.6 + 0.4 * frac),
                        "bwd_res": fig["bwd_res_mean"] * (1.5 - 0.5 * frac)})
        records.append(rec)
        if step % 20 == 0:
            val_loss = loss + 0.04
            ev = {"kind": "eval", "step": step, "elapsed_s": rec["elapsed_s"] + 0.5, "val_loss": val_loss}
            if task == "lm":
                ev["val_ppl"] = math.exp(val_loss)
            else:
                ev["val_acc"] = min(1.0, fig["val_acc"] * (0.6 + 0.4 * frac))
            records.append(ev)
    return records


def _analysis(strategy: str, depth: int, seed: int) -> dict | None:
    """analysis.json as a finished run writes it: residual traces (DEQ), layer differences (stacks)."""
    if strategy == "deq":
        n = max(depth, 32)
        rates = {"broyden": 0.55, "anderson": 0.7, "fixed_point_iter": 0.9}
        return {"kind": "deq", "solver": "broyden", "max_iter": n, "batch": "fixture",
                "rel_residual": {s: [(r + 0.01 * seed) ** i for i in range(n)] for s, r in rates.items()}}
    if strategy in ("weight_tied", "checkpointed", "explicit"):
        n = max(depth, 32) if strategy != "explicit" else depth
        return {"kind": "layers", "trained_layers": depth, "batch": "fixture",
                "layer_diff": [0.8 ** i * (1 + 0.05 * seed) for i in range(n)]}
    return None


def _job_text(name: str, strategies: Sequence[str], depths: Sequence[int], seeds: Sequence[int],
              tasks: Sequence[str]) -> str:
    cases = "".join(f"    - {{label: {t}, task: {t}, data.dataset: {DATASETS[t]}}}\n" for t in tasks)
    depth_axis = "".join(f"    - {json.dumps(_depth_config(s, d))}\n" for s in strategies for d in depths)
    return (f"# deqbench job file (fixture) <{name}> & co\nname: {name}\ntask: {tasks[0]}\n"
            f"data: {{dataset: {DATASETS[tasks[0]]}, data_dir: data/synthetic, seq_len: {T}}}\n"
            f"model: {{cell: transformer, d_model: {D}, n_head: 4, d_inner: {D_INNER}}}\n"
            "grid:\n" + (f"  cases:\n{cases}" if len(tasks) > 1 else "")
            + f"  model.depth:\n{depth_axis}  seed: {list(seeds)}\n"
            "train: {steps: 60, batch_size: 8, lr: 0.001, eval_interval: 20}\n"
            "resources: {workers: 1, cpus_per_worker: 1}\ndeepspeed: {zero_optimization: {stage: 0}}\n")


def write_fixture_sweep(root: str | Path, *, name: str = "fixture", strategies: Sequence[str] = STRATEGIES,
                        depths: Sequence[int] = (4, 8, 16), seeds: Sequence[int] = (0, 1), task: str = "lm",
                        tasks: Sequence[str] | None = None, steps: int = 60,
                        failed: Sequence[tuple[str, int, int]] = (("deq", 16, 1),),
                        failed_reason: str = FAILED_REASON, running: Sequence[tuple[str, int, int]] = (),
                        pending: Sequence[tuple[str, int, int]] = (), drop: Sequence[str] = ()) -> FixtureSweep:
    """Write a sweep of ``tasks x strategies x depths x seeds`` under ``root/name``.

    The grid is what harness.sweep.config writes: a ``model.depth`` axis of depth blocks, a ``seed``
    axis and, with several ``tasks`` (e.g. ``("lm", "copy")`` like jobs/quickstart.yaml), a
    ``cases`` axis. ``failed``/``running``/``pending`` name (strategy, depth, seed) runs that did
    not finish (in every task); ``drop`` lists summary fields to leave out (e.g.
    ``("peak_mem_bytes",)``) to mimic a sweep that measured less.
    """
    tasks = tuple(tasks or (task,))
    store = SweepStore(Path(root) / name)
    out = FixtureSweep(dir=store.dir)
    run_ids = []
    for task, strategy, depth, seed in itertools.product(tasks, strategies, depths, seeds):
        dataset = DATASETS[task]
        model = {"task": task, "vocab_size": VOCAB if task == "lm" else 12, "cell": "transformer",
                 "d_model": D, "n_head": 4, "d_inner": D_INNER, "depth": _depth_config(strategy, depth)}
        grid = {"model.depth": _depth_config(strategy, depth), "seed": seed}
        if len(tasks) > 1:
            grid = {"cases": {"label": task, "task": task, "data.dataset": dataset}, **grid}
        spec = {"sweep": name, "name": "_".join(([task] if len(tasks) > 1 else []) + [f"{strategy}{depth}", f"s{seed}"]),
                "task": task, "grid": grid,
                "data": {"dataset": dataset, "data_dir": "data/synthetic", "seq_len": T},
                "model": model,
                "train": {"steps": steps, "batch_size": B, "lr": 1e-3, "warmup_steps": 5,
                          "eval_interval": 20, "measure_steps": 5, "seed": seed},
                "resources": {"workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
                "deepspeed": {"train_micro_batch_size_per_gpu": B, "zero_optimization": {"stage": 0}}}
        run_id = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        spec["run_id"] = run_id
        run_ids.append(run_id)
        rec = store.run(run_id)
        rec.write_spec(spec)
        out.specs[run_id] = spec
        key = (strategy, depth, seed)
        fig = _figures(strategy, depth, seed, task)
        if key in pending:
            out.states[run_id] = "pending"
            rec.set_status("pending", attempt=0)
            continue
        rec.write_env({**ENV, "seeds": [seed]})
        rec.set_status("running", attempt=1, step=0)
        if key in failed or key in running:
            rec.append_metrics(_curves(fig, strategy, steps, task, last_step=20))
            if key in failed:
                rec.set_status("failed", reason=failed_reason, rank=1, step=12)
                out.reasons[run_id] = failed_reason
            out.states[run_id] = "failed" if key in failed else "running"
            continue
        rec.append_metrics(_curves(fig, strategy, steps, task))
        summary = {"run_id": run_id, "sweep": name, "name": spec["name"], "task": task, "dataset": dataset,
                   "cell": "transformer", "strategy": strategy, "depth": depth, "seed": seed, "world_size": 1,
                   "device": "cpu", "wall_time_s": steps * fig["step_time_s"] * 1.1, "steps": steps, **fig}
        for key_name in drop:
            summary.pop(key_name, None)
        rec.write_summary(summary)
        analysis = _analysis(strategy, depth, seed)
        if analysis is not None:
            rec.write_analysis(analysis)
        rec.set_status("finished", step=steps)
        out.summaries[run_id] = json.loads(json.dumps(summary))
        out.states[run_id] = "finished"
    store.write_meta({"name": name, "job_file": f"jobs/{name}.yaml", "created": "2025-01-15T09:59:00+00:00",
                      "env": {**ENV, "seeds": list(seeds)}, "run_ids": run_ids})
    (store.dir / "job.yaml").write_text(_job_text(name, strategies, depths, seeds, tasks), encoding="utf-8")
    return out
