"""Benchmark of the solvers on a DEQ-sized problem: ``python -m solvers.bench``.

The problem: f is a DEQ-Transformer-like layer with fixed random weights on a state of
shape (B, T, D) (default 16 x 64 x 128), input injection x ~ N(0, 1):

    h = LayerNorm(z + Attention(z + x) + x)        causal multi-head self-attention
    f(z) = LayerNorm(h + W2 gelu(W1 h))            MLP with 4 D hidden units

weights ~ N(0, init_std^2) (default 0.05, between GPT's 0.02 and LeCun's 1/sqrt(D)); the
spectral radius of J_f at the fixed point is printed (it is < 1, so the fixed point is
attracting). z0 = 0.

Per solver (broyden, broyden with limited memory, anderson, fixed_point_iter, and
torchdeq's Broyden side by side when torchdeq is installed): f evaluations, final
residuals (recomputed from the returned z: abs and rel, mean and max over the batch),
median wall time over ``--repeats`` runs, and the overhead ratio
solve time / (f evaluations x time of one f evaluation). Each repeat round first times
f along a chain z <- f(z) (as a solver calls it), then runs every solver once, so load
changes on a shared machine hit all alike; the ratio is the median over rounds. Broyden
and the 'broyden passes only' row run back to back in each round, in turns first, since
target (2) is their ratio, and each of the two is timed in its steady state, right after
an untimed run of itself: measured cold, whichever of them ran first after the f chain (and
the previous round's torchdeq solve) ran 2-10% slower than the one after it (2026-12-01),
more than the effect measured. Against what is left of such effects the '/ floor' figures
take the rounds in pairs, one of each order: time summed over the pair / the floor row's
time summed over the same pair, median over the pairs; the (2) line also prints the
median ratio of each order alone, so a reader sees whether the order still matters.
fixed_point_iter's ratio is the floor set by the residual bookkeeping every solver does.

Targets printed with PASS/FAIL (SKIP where they cannot be measured here):

1. limited memory: on an ill-conditioned affine contraction (n = 200, float64, spectral
   radius 0.99, ``ill_conditioned_affine``), Broyden with ``memory`` m in {5, 10, 15, 20, 30}
   (Kelley's restart) brings every sample's absolute residual under 1e-6 within 200 f
   evaluations;
2. CPU floor: Broyden's time over the 'broyden passes only' row (its large memory passes
   alone, at its f evaluations), both timed back to back in each round, each after an
   untimed run of itself, over pairs of rounds (one in each order): <= 1.05;
3. GPU launch bound (CUDA only): Broyden's overhead ratio <= 2.0 at the default size
   (B=16, T=64, D=128) and <= 1.48 at B=32, T=256, D=512;
4. torchdeq: at the same f, z0, max_iter, tol and stop mode, our Broyden uses no more f
   evaluations and no more wall time than torchdeq's (when torchdeq is installed; it is a
   benchmark-only extra, imported here only).

The overhead ratio against f alone (the ``overhead`` column; 1.15 was the retired CPU
target) stays in the table: it is what a solve costs beyond its f evaluations.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._anderson import anderson
from ._broyden import broyden, pair_products, reduction_chunks
from ._fixed_point import fixed_point_iter
from ._jacobian import jacobian_spectral_radius
from ._native import backend as native_backend
from ._native import choice as native_choice

FLOOR_TARGET = 1.05  # (2) Broyden time / its memory passes alone, on a CPU
GPU_TARGETS = {(16, 64, 128): 2.0, (32, 256, 512): 1.48}  # (3) (B, T, D) -> overhead ratio on CUDA
MEMORY_SIZES = (5, 10, 15, 20, 30)  # (1) limited-memory Broyden on the ill-conditioned case
MEMORY_TOL, MEMORY_BUDGET = 1e-6, 200
F_CHAIN = 10  # f evaluations per timed chain, about a solve's worth


@dataclass
class BenchConfig:
    """Problem size, solver options and measurement settings of one benchmark run."""

    batch: int = 16
    seq: int = 64
    dim: int = 128
    heads: int = 4
    init_std: float = 0.05
    device: str = "cpu"
    dtype: str = "float32"
    repeats: int = 22  # an even number: the '/ floor' figures pair the rounds
    max_iter: int = 40
    tol: float = 1e-4
    stop_mode: str = "rel"
    memory: int = 8
    seed: int = 0


class TransformerCell:
    """A fixed random DEQ-Transformer layer f(z) with input injection x; see the module docstring."""

    def __init__(self, cfg: BenchConfig, device: torch.device, dtype: torch.dtype) -> None:
        if cfg.dim % cfg.heads:
            raise ValueError(f"bench: --dim must be divisible by --heads, got {cfg.dim} and {cfg.heads}")
        gen = torch.Generator().manual_seed(cfg.seed)

        def weight(rows: int, cols: int) -> Tensor:
            return (torch.randn(rows, cols, generator=gen) * cfg.init_std).to(device, dtype)

        d = cfg.dim
        self.w_qkv, self.w_out = weight(3 * d, d), weight(d, d)
        self.w_in, self.w_mlp_out = weight(4 * d, d), weight(d, 4 * d)
        self.x = torch.randn(cfg.batch, cfg.seq, d, generator=gen).to(device, dtype)  # (B, T, D)
        self.heads = cfg.heads

    def __call__(self, z: Tensor) -> Tensor:
        batch, seq, dim = z.shape
        qkv = F.linear(z + self.x, self.w_qkv)  # (B, T, 3D)
        q, k, v = qkv.view(batch, seq, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, D/H)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D/H)
        att = att.transpose(1, 2).reshape(batch, seq, dim)  # (B, T, D)
        h = F.layer_norm(z + F.linear(att, self.w_out) + self.x, (dim,))
        return F.layer_norm(h + F.linear(F.gelu(F.linear(h, self.w_in)), self.w_mlp_out), (dim,))


@dataclass
class SolverRun:
    """Measured figures of one solver on the problem."""

    name: str
    nfe: int
    time_s: float
    abs_mean: float
    abs_max: float
    rel_mean: float
    rel_max: float
    overhead: float
    over_floor: float  # median over pairs of rounds of time / the passes-only row's time (see _paired)
    over_floor_spread: tuple[float, float] = (math.nan, math.nan)  # its quartiles over the pairs
    over_floor_by_order: tuple[float, float] = (math.nan, math.nan)  # median per-round ratio: broyden first, floor first


def ill_conditioned_affine(n: int = 200, batch: int = 4, radius: float = 0.99, seed: int = 0):
    """f(z) = A z + b per sample: A = Q diag(linspace(0, radius)) Q^T with Q a random orthogonal
    matrix (spectral radius ``radius``, I - A of condition number 1 / (1 - radius)), one
    b ~ N(0, I) per sample, float64; returns (f, A, b). Target (1)'s problem: the case where
    dropping the oldest update stalled limited-memory Broyden."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0.0, radius, n, dtype=torch.float64)) @ q.T
    b = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    return (lambda z: z @ a.T + b), a, b


def limited_memory_evaluations(memories: Sequence[int] = MEMORY_SIZES, policy: str = "restart",
                               budget: int = MEMORY_BUDGET) -> dict[int, int | None]:
    """Target (1): per memory size, the f evaluations Broyden needs until every sample's
    absolute residual is under ``MEMORY_TOL`` on ``ill_conditioned_affine`` (None: not
    within ``budget``)."""
    f, _, _ = ill_conditioned_affine()
    z0 = torch.zeros(4, 200, dtype=torch.float64)
    out: dict[int, int | None] = {}
    for memory in memories:
        res = broyden(f, z0, max_iter=budget, tol=MEMORY_TOL, stop_mode="abs", memory=memory,
                      memory_policy=policy)
        out[memory] = res.nstep if bool(res.converged.all()) else None
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_f(f: Callable[[Tensor], Tensor], z: Tensor, n: int) -> float:
    """Seconds per f evaluation, from the wall time of a chain z <- f(z) of n evaluations (no graph).

    A chain, as in a solver: each input is a fresh tensor, so allocation and cache behaviour
    match what the solvers see. The chain is timed whole, like a solve, so that the ratio
    compares a sum with a sum: a median of single calls would leave out the slow calls
    (on a shared machine, a few percent) that every solve pays for.
    """
    with torch.no_grad():
        _sync(z.device)
        start = time.perf_counter()
        for _ in range(n):
            z = f(z)
        _sync(z.device)
        return (time.perf_counter() - start) / n


def _torchdeq_broyden() -> Callable | None:
    try:
        from torchdeq.solver.broyden import broyden_solver
    except ImportError:
        return None
    return broyden_solver


PASSES_ONLY = "broyden passes only"


def broyden_passes_only(f: Callable[[Tensor], Tensor], z0: Tensor, nfe: int) -> Tensor:
    """The large memory passes of ``nfe`` f evaluations of our Broyden, and nothing else.

    Per iteration: z + s, z - f(z) into the buffer, ||f(z)||, the reduction over the
    stored steps and F, the combination into a new row, and one small host read; no
    per-sample work and no bookkeeping. The combination weights are fixed (s = -F, so the
    iterates are those of fixed-point iteration). Its overhead ratio is the floor, on this
    machine, of a Broyden that reads each stored step twice per iteration (once to reduce,
    once to combine, as any method storing only its steps must) with unfused torch operations.
    """
    batch = z0.shape[0]
    z = z0.reshape(batch, -1)
    buf = z.new_zeros(nfe + 1, batch, z.shape[1])  # rows as in solvers._broyden: s_0, F, s_1, ...
    F = buf[1]
    fz = f(z.view_as(z0)).reshape(batch, -1)
    torch.sub(z, fz, out=F)
    torch.neg(F, out=buf[0])
    weights = z.new_zeros(batch, 1, nfe)
    weights[:, 0, 0] = -1.0
    chunks = reduction_chunks(z.shape[1], z.device)
    last = 0
    for n in range(nfe - 1):
        z = z + buf[last]
        fz = f(z.view_as(z0)).reshape(batch, -1)
        torch.sub(z, fz, out=F)
        norm = torch.linalg.vector_norm(fz, dim=1)
        pair = buf[1:last + 1:last - 1] if last > 1 else buf[0:2]
        prods = pair_products(pair, buf[:n + 2], chunks)
        torch.cat((prods.reshape(-1), norm)).tolist()
        if n + 2 <= nfe - 1:
            torch.bmm(weights[:, :, :n + 1], buf[1:n + 2].transpose(0, 1), out=buf[n + 2, :, None])
            last = n + 2
    return z.view_as(z0)


def _make_runners(cfg: BenchConfig) -> dict[str, Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]]:
    """name -> run(f, z0) returning the solver's z, all with the same max_iter/tol/stop_mode."""
    common = dict(max_iter=cfg.max_iter, tol=cfg.tol, stop_mode=cfg.stop_mode)
    runners = {
        "broyden": lambda f, z0: broyden(f, z0, **common).z,
        f"broyden(memory={cfg.memory})": lambda f, z0: broyden(f, z0, memory=cfg.memory, **common).z,
        "anderson": lambda f, z0: anderson(f, z0, **common).z,
        "fixed_point_iter": lambda f, z0: fixed_point_iter(f, z0, **common).z,
    }
    theirs = _torchdeq_broyden()
    if theirs is not None:  # full memory (LBFGS_thres=None), no line search: torchdeq's defaults
        runners["torchdeq broyden"] = lambda f, z0: theirs(f, z0, **common)[0]
    return runners


def run_benchmark(cfg: BenchConfig) -> tuple[list[SolverRun], float, Tensor]:
    """Measure every solver; returns (runs, seconds per f evaluation, spectral radius (B,)).

    Each repeat round times f (a chain of ``F_CHAIN`` evaluations) and then every solver once,
    so a change in machine load hits all of them alike; a solver's overhead is the median
    over rounds of time / (nfe x that round's f time).
    """
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)
    cell = TransformerCell(cfg, device, dtype)
    z0 = torch.zeros(cfg.batch, cfg.seq, cfg.dim, device=device, dtype=dtype)  # (B, T, D)
    runners = _make_runners(cfg)

    calls = [0]

    def counted(z: Tensor) -> Tensor:
        calls[0] += 1
        return cell(z)

    times: dict[str, list[float]] = {name: [] for name in runners}
    ratios: dict[str, list[float]] = {name: [] for name in runners}
    answers: dict[str, tuple[Tensor, int]] = {}
    f_times = []
    with torch.no_grad():
        _time_f(cell, z0, n=3)  # warm-up
        for name, run in runners.items():  # warm-up, and f evaluations counted the same way for all
            calls[0] = 0
            answers[name] = (run(counted, z0), calls[0])
        nfe = answers["broyden"][1]
        runners[PASSES_ONLY] = lambda f, z: broyden_passes_only(f, z, nfe)
        answers[PASSES_ONLY] = (runners[PASSES_ONLY](cell, z0), nfe)
        times[PASSES_ONLY], ratios[PASSES_ONLY] = [], []
        others = [name for name in runners if name not in ("broyden", PASSES_ONLY)]
        for round_index in range(cfg.repeats):
            f_time = _time_f(cell, z0, n=F_CHAIN)
            f_times.append(f_time)
            # broyden and its floor back to back, in turns first: target (2) is their ratio, and a
            # change of load between two runs further apart (or the cache state a preceding run
            # leaves) moved it by several percent
            pair = ["broyden", PASSES_ONLY] if round_index % 2 == 0 else [PASSES_ONLY, "broyden"]
            for name in pair + others:
                run = runners[name]
                if name in pair:  # the pair in its steady state: right after an untimed run of itself
                    run(cell, z0)
                _sync(device)
                start = time.perf_counter()
                run(cell, z0)
                _sync(device)
                elapsed = time.perf_counter() - start
                times[name].append(elapsed)
                ratios[name].append(elapsed / (answers[name][1] * f_time))
        runs = []
        for name, (z, nfe) in answers.items():
            fz = cell(z)
            abs_res = torch.linalg.vector_norm((fz - z).flatten(1), dim=1)
            rel_res = abs_res / (torch.linalg.vector_norm(fz.flatten(1), dim=1) + 1e-9)
            if name == PASSES_ONLY:  # its iterates are not a solver's: no residuals
                abs_res = rel_res = torch.full_like(abs_res, math.nan)
            runs.append(SolverRun(name, nfe, statistics.median(times[name]), abs_res.mean().item(),
                                  abs_res.max().item(), rel_res.mean().item(), rel_res.max().item(),
                                  statistics.median(ratios[name]), *_paired(times[name], times[PASSES_ONLY]),
                                  _by_order(times[name], times[PASSES_ONLY])))
    z_star = broyden(cell, z0, max_iter=100, tol=1e-6, stop_mode="rel").z
    radius = jacobian_spectral_radius(cell, z_star, n_iter=30,
                                      generator=torch.Generator(device=device).manual_seed(cfg.seed))
    return runs, statistics.median(f_times), radius


def _paired(times: Sequence[float], floor: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """(median, quartiles) over pairs of rounds (2k, 2k + 1) of sum(times) / sum(floor): each
    pair has broyden first once and the floor first once, so what is left of a penalty for
    going first cancels. With a single round, that round's ratio."""
    if len(times) < 2:
        values = [t / f for t, f in zip(times, floor)]
    else:
        values = [(times[i] + times[i + 1]) / (floor[i] + floor[i + 1]) for i in range(0, len(times) - 1, 2)]
    return statistics.median(values), _quartiles(values)


def _by_order(times: Sequence[float], floor: Sequence[float]) -> tuple[float, float]:
    """Median per-round time / floor time of the rounds with broyden first (even rounds) and
    with the floor first (odd rounds); NaN for an order that never ran."""
    ratios = [t / f for t, f in zip(times, floor)]
    first, second = ratios[0::2], ratios[1::2]
    return (statistics.median(first) if first else math.nan, statistics.median(second) if second else math.nan)


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartile (the middle half of the rounds); NaN with fewer than 2 values."""
    if len(values) < 2:
        return math.nan, math.nan
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")  # within the values, even for a few
    return q1, q3


def _spread(quartiles: tuple[float, float]) -> str:
    q1, q3 = quartiles
    return f"{q1:.3f}-{q3:.3f}" if math.isfinite(q1) and math.isfinite(q3) else "-"


def _memory_lines(table: dict[int, int | None] | None) -> list[str]:
    if table is None:
        return ["[SKIP] (1) limited memory: not run"]
    found = ", ".join(f"m={m}: {n if n is not None else f'not within {MEMORY_BUDGET}'}" for m, n in table.items())
    ok = all(n is not None and n <= MEMORY_BUDGET for n in table.values())
    return [f"[{'PASS' if ok else 'FAIL'}] (1) limited memory: f evaluations until every |f(z) - z| < "
            f"{MEMORY_TOL:g} on the ill-conditioned affine case (n=200, float64, radius 0.99), {found}; "
            f"target <= {MEMORY_BUDGET} at every m"]


def format_report(cfg: BenchConfig, runs: list[SolverRun], f_time: float, radius: Tensor,
                  memory_table: dict[int, int | None] | None = None) -> str:
    """The table, the comparison notes and the PASS/FAIL lines."""
    lines = [
        f"solvers.bench: DEQ-Transformer-like f, state (B={cfg.batch}, T={cfg.seq}, D={cfg.dim}), "
        f"{cfg.heads} heads, init_std={cfg.init_std}, {cfg.device}/{cfg.dtype}, "
        f"torch threads={torch.get_num_threads()}; Broyden's small math: {native_backend()}",
        f"spectral radius of J_f at z*: mean {radius.mean().item():.3f}, max {radius.max().item():.3f}; "
        f"one f evaluation: {f_time * 1e3:.2f} ms (a chain of {F_CHAIN}, timed whole; median over rounds)",
        f"stop: {cfg.stop_mode} residual < {cfg.tol:g}, max_iter={cfg.max_iter}; "
        f"median of {cfg.repeats} repeats",
        "",
        f"{'solver':<22}{'nfe':>5}{'abs mean':>11}{'abs max':>11}{'rel mean':>11}{'rel max':>11}"
        f"{'time ms':>10}{'overhead':>10}{'/ floor':>9}",
    ]
    for r in runs:
        res = (f"{r.abs_mean:>11.3e}{r.abs_max:>11.3e}{r.rel_mean:>11.3e}{r.rel_max:>11.3e}"
               if math.isfinite(r.abs_mean) else f"{'-':>11}" * 4)
        lines.append(f"{r.name:<22}{r.nfe:>5}{res}{r.time_s * 1e3:>10.2f}{r.overhead:>10.3f}{r.over_floor:>9.3f}")
    by_name = {r.name: r for r in runs}
    ours = by_name["broyden"]
    lines += ["", "nfe = f evaluations, counted by wrapping f (the first one measures z0, for every "
              "solver); residuals recomputed from each returned z.",
              "overhead = median over rounds of time / (nfe x f time measured in the same round); "
              "fixed_point_iter's is the floor of the residual bookkeeping shared by all solvers; "
              f"'/ floor' = median over pairs of rounds (one with broyden first, one with the floor first) "
              f"of time / the '{PASSES_ONLY}' row's time in the same rounds; broyden and that row are each "
              "timed right after an untimed run of themselves.",
              f"'{PASSES_ONLY}': broyden's large memory passes alone (z + s, z - f(z), ||f(z)||, reduction "
              "and combination over the stored steps) at its nfe, no per-sample work: the floor of a "
              "Broyden that reads its stored steps twice per iteration with unfused torch operations."]
    lines += _memory_lines(memory_table)
    floor = by_name[PASSES_ONLY]
    if cfg.device == "cpu":
        ok = ours.over_floor <= FLOOR_TARGET
        pairs = cfg.repeats // 2
        span = (f"median over {pairs} pair{'s' if pairs > 1 else ''} of rounds, one in each order"
                if pairs else "a single round, broyden first")
        first, second = ours.over_floor_by_order
        lines.append(f"[{'PASS' if ok else 'FAIL'}] (2) CPU floor: broyden time / '{PASSES_ONLY}' time "
                     f"{ours.over_floor:.3f} <= {FLOOR_TARGET} ({span}; middle half "
                     f"{_spread(ours.over_floor_spread)}; rounds with broyden first "
                     f"{first:.3f}, with the floor first {second:.3f}; overhead against f: "
                     f"broyden {ours.overhead:.3f}, its memory passes alone {floor.overhead:.3f})")
    else:
        lines.append(f"[SKIP] (2) CPU floor: a CPU target (here broyden / '{PASSES_ONLY}' = "
                     f"{ours.over_floor:.3f} on {cfg.device})")
    size = (cfg.batch, cfg.seq, cfg.dim)
    if cfg.device == "cpu":
        lines.append("[SKIP] (3) GPU launch bound: needs CUDA (--device cuda; targets: overhead <= 2.0 at "
                     "B=16, T=64, D=128 and <= 1.48 at B=32, T=256, D=512)")
    elif size in GPU_TARGETS and cfg.dtype == "float32":
        target = GPU_TARGETS[size]
        lines.append(f"[{'PASS' if ours.overhead <= target else 'FAIL'}] (3) GPU launch bound: broyden "
                     f"overhead ratio {ours.overhead:.3f} <= {target} at B={size[0]}, T={size[1]}, D={size[2]}")
    else:
        lines.append(f"[SKIP] (3) GPU launch bound: no target at B={size[0]}, T={size[1]}, D={size[2]} "
                     f"{cfg.dtype} (targets at {', '.join('x'.join(map(str, k)) for k in GPU_TARGETS)}, "
                     f"float32); broyden overhead here {ours.overhead:.3f}")
    theirs = by_name.get("torchdeq broyden")
    if theirs is None:
        lines.append("[SKIP] (4) torchdeq is not installed (pip install torchdeq): no side-by-side comparison")
    else:
        lines += [
            "compared with torchdeq.solver.broyden_solver(f, z0, max_iter, tol, stop_mode) (full memory, "
            "no line search), same f and z0:",
            "  torchdeq stops when the batch max residual is under tol (batch level; it also stops on "
            "stalls after 30 steps) and keeps updating samples that are already under tol; ours stops "
            "each sample when it is under tol and freezes it, and ends when all are: the same moment "
            "for the last sample.",
        ]
        ok_nfe, ok_time = ours.nfe <= theirs.nfe, ours.time_s <= theirs.time_s
        lines.append(f"[{'PASS' if ok_nfe and ok_time else 'FAIL'}] (4) broyden vs torchdeq: nfe "
                     f"{ours.nfe} vs {theirs.nfe}, time {ours.time_s * 1e3:.2f} vs {theirs.time_s * 1e3:.2f} ms")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    """Command line -> BenchConfig; bad values exit with a one-line message (argparse)."""
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="python -m solvers.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=d.device, help="cpu or cuda[:i]")
    p.add_argument("--dtype", default=d.dtype, choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--seq", type=int, default=d.seq)
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--init-std", type=float, default=d.init_std)
    p.add_argument("--max-iter", type=int, default=d.max_iter)
    p.add_argument("--tol", type=float, default=d.tol)
    p.add_argument("--stop-mode", default=d.stop_mode, choices=("abs", "rel"))
    p.add_argument("--memory", type=int, default=d.memory, help="memory of the limited-memory Broyden row")
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    for name in ("repeats", "batch", "seq", "dim", "heads", "max_iter", "memory"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if not a.tol > 0 or not a.init_std > 0 or math.isinf(a.tol):
        p.error(f"--tol and --init-std must be positive numbers, got {a.tol} and {a.init_std}")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {a.device}: CUDA is not available here")
    try:
        native_choice()
    except ValueError as exc:
        p.error(str(exc))
    return BenchConfig(batch=a.batch, seq=a.seq, dim=a.dim, heads=a.heads, init_std=a.init_std,
                       device=a.device, dtype=a.dtype, repeats=a.repeats, max_iter=a.max_iter,
                       tol=a.tol, stop_mode=a.stop_mode, memory=a.memory, seed=a.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its report; returns 0 (targets are reported, not enforced)."""
    cfg = parse_args(argv)
    runs, f_time, radius = run_benchmark(cfg)
    print(format_report(cfg, runs, f_time, radius, limited_memory_evaluations()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
