"""Measurement shared by every model, so that figures are comparable (docs/design.md, Metrics;
the figures themselves are listed in harness.records.schema).

- time: device-synchronised wall clock around forward, backward and optimizer step, every
  step; median, 10th and 90th percentile over all steps after ``measure_warmup``;
- memory: ``activation_bytes`` comes from ``models.memory`` (saved-tensor hooks);
  ``peak_mem_bytes`` is ``torch.cuda.max_memory_allocated`` over the ``measure_steps``
  steps after the warm-up, after ``reset_peak_memory_stats``, on CUDA; not measured on a
  CPU (None: no allocator statistic there means what the label says);
  ``static_mem_bytes`` is parameters + gradients + optimizer state held by this rank;
- cross-rank aggregation: means are averaged over ranks, maxima take the maximum.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Iterable

import torch
import torch.distributed as dist


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """A timestamp taken after the device finished all queued work."""
    synchronize(device)
    return time.perf_counter()


class MemoryWindow:
    """Peak memory over a window of steps, measured the same way for every model.

    CUDA: ``torch.cuda.max_memory_allocated`` since the window began. On a CPU there is no
    allocator statistic worth the name (RSS growth reads 0 B for runs whose activations are
    megabytes: the allocator reuses freed pages), so the peak is not measured: None, a dash
    in the report. ``activation_bytes`` and ``static_mem_bytes`` are measured everywhere.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def begin(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def static_mem_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Parameters + gradients (one per parameter, at parameter precision) + optimizer state."""
    params = [p for p in module.parameters()]
    total = tensor_bytes(params) + tensor_bytes(p for p in params if p.requires_grad)
    if optimizer is not None:
        state = getattr(optimizer, "state", {}) or {}
        for entry in state.values():
            if isinstance(entry, dict):
                total += tensor_bytes(entry.values())
    return int(total)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1, linear interpolation between order statistics); NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def all_reduce_stats(means: dict[str, float], maxes: dict[str, float],
                     device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Average ``means`` and take the maximum of ``maxes`` over data-parallel ranks.

    NaN and inf survive (a non-finite value on any rank makes the result non-finite), so a
    diverging rank is seen by all ranks at once.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(means), dict(maxes)
    world = dist.get_world_size()
    kmean, kmax = sorted(means), sorted(maxes)
    if kmean:
        t = torch.tensor([means[k] for k in kmean], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        means = {k: float(v) / world for k, v in zip(kmean, t.tolist())}
    if kmax:
        t = torch.tensor([maxes[k] for k in kmax], dtype=torch.float64, device=device)
        # MAX drops NaN on some backends: carry a NaN flag through SUM as well
        nan_flag = torch.tensor([float(math.isnan(maxes[k])) for k in kmax], dtype=torch.float64,
                                device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        dist.all_reduce(nan_flag, op=dist.ReduceOp.SUM)
        maxes = {k: (float("nan") if f > 0 else float(v))
                 for k, v, f in zip(kmax, t.tolist(), nan_flag.tolist())}
    return means, maxes


class StatsWindow:
    """Running loss and model stats between two reports, and over the whole run."""

    def __init__(self) -> None:
        self.loss: list[float] = []
        self.window: dict[str, list[float]] = {}
        self.total: dict[str, list[float]] = {}

    def add(self, loss: float, stats: dict[str, float]) -> None:
        self.loss.append(loss)
        for k, v in stats.items():
            self.window.setdefault(k, []).append(float(v))
            self.total.setdefault(k, []).append(float(v))

    def flush(self, device: torch.device) -> dict[str, float]:
        means = {k: sum(v) / len(v) for k, v in self.window.items() if v}
        means["loss"] = sum(self.loss) / max(len(self.loss), 1)
        maxes = {k: max(v) for k, v in self.window.items() if v and k.endswith("_max")}
        means, maxes = all_reduce_stats(means, maxes, device)
        rec = {"loss": means["loss"], "nfe": means.get("nfe"), "step_time_s": means.get("step_time_s")}
        if "fwd_nstep" in means:
            rec.update(fwd_nstep=means["fwd_nstep"], fwd_abs_res=means.get("fwd_abs_res_mean"),
                       fwd_rel_res=means.get("fwd_rel_res_mean"))
        if "bwd_nstep" in means:
            rec.update(bwd_nstep=means["bwd_nstep"], bwd_res=means.get("bwd_res_mean"))
        self.loss, self.window = [], {}
        return rec

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"nfe": mean_or_none(self.total.get("nfe"))}
        for key in ("fwd_nstep", "bwd_nstep"):
            out[f"{key}_mean"] = mean_or_none(self.total.get(key))
            out[f"{key}_max"] = max(self.total[key]) if self.total.get(key) else None
        for key in ("fwd_abs_res", "fwd_rel_res", "bwd_res"):
            out[f"{key}_mean"] = mean_or_none(self.total.get(f"{key}_mean"))
            out[f"{key}_max"] = max(self.total[f"{key}_max"]) if self.total.get(f"{key}_max") else None
        for key in ("fwd", "bwd"):  # solver health: the share of solves that ended above tol
            converged = mean_or_none(self.total.get(f"{key}_converged_frac"))
            out[f"{key}_unconverged_frac"] = None if converged is None else 1.0 - converged
        return out


def mean_or_none(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def reduce_summary(summary: dict, device: torch.device) -> dict:
    """Average timing/solver means over ranks and take maxima of the maxima."""
    numeric = {k: v for k, v in summary.items()
               if isinstance(v, float) and not k.startswith(("val_", "test_"))}
    means = {k: v for k, v in numeric.items() if not k.endswith("_max")}
    maxes = {k: v for k, v in numeric.items() if k.endswith("_max")}
    peaks = [k for k in ("peak_mem_bytes", "infer_peak_mem_bytes") if summary.get(k) is not None]
    maxes.update({k: float(summary[k]) for k in peaks})  # the largest rank's peak
    means, maxes = all_reduce_stats(means, maxes, device)
    out = dict(summary)
    out.update(means)
    out.update(maxes)
    out.update({k: int(maxes[k]) for k in peaks})
    return out


def param_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal on ranks that hold equal weights."""
    import hashlib

    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def gather_from_ranks(value: Any, world_size: int) -> list:
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * world_size
    dist.all_gather_object(out, value)
    return out
