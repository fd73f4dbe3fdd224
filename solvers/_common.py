"""Shared pieces of the fixed-point solvers: the result record, option checks and
the per-sample bookkeeping every solver does the same way.

A solver looks for z with z = f(z). The state z0 has shape (B, ...); each of the B
samples is its own problem. Internally the solvers work on a flat (B, D) view, with
D the product of the non-batch dimensions, and call f on the original shape.

Bookkeeping (``IterateTracker``), shared so that all solvers measure alike:

* every f evaluation measures one iterate z: abs = ||f(z) - z||,
  rel = abs / (||f(z)|| + 1e-9), norms over all non-batch dimensions;
* per sample, the iterate with the lowest residual (in the stop mode) is kept;
* a sample is *active* until its residual is under ``tol`` (converged) or a
  non-finite value shows up (failed); inactive samples are frozen by the solvers,
  so a sample's answer does not depend on its batch mates;
* traces: the residual of each measured iterate, per sample (frozen samples repeat
  their last value), like torchdeq's info dict.
"""
from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

STOP_MODES = ("abs", "rel")
REL_EPS = 1e-9  # added to ||f(z)|| in the relative residual
LOW_PRECISION = (torch.float16, torch.bfloat16)
NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}  # the solvers' working dtypes


@dataclass
class SolverResult:
    """What a solver returns; every (B,) field is per sample.

    z: (B, ...) lowest-residual iterate of each sample.
    nstep: f evaluations made (the first one measures z0).
    abs_residual, rel_residual: (B,) residuals of ``z``; ``inf`` where the sample met
        a non-finite value.
    converged: (B,) bool, residual (in the stop mode) under ``tol`` and finite.
    nonfinite: (B,) bool, the sample met NaN or inf and was stopped there.
    abs_trace, rel_trace: (B, nstep) residual of each measured iterate.
    best_step: (B,) index into the traces of the iterate returned in ``z``.
    """

    z: Tensor
    nstep: int
    abs_residual: Tensor
    rel_residual: Tensor
    converged: Tensor
    nonfinite: Tensor
    abs_trace: Tensor
    rel_trace: Tensor
    best_step: Tensor


def check_options(solver: str, max_iter: int, tol: float, stop_mode: str) -> None:
    """Raise ValueError naming the option when a common solver option is bad."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{solver}: max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0 or math.isinf(tol):
        raise ValueError(f"{solver}: tol must be a finite number >= 0, got {tol!r}")
    if stop_mode not in STOP_MODES:
        raise ValueError(f"{solver}: stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")


def check_positive_int(solver: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{solver}: {name} must be an integer >= 1, got {value!r}")


def check_damping(solver: str, tau: float) -> None:
    """Raise ValueError unless 0 < tau <= 1."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1:
        raise ValueError(f"{solver}: tau must be a number in (0, 1], got {tau!r}")


def flatten_problem(solver: str, f: Callable[[Tensor], Tensor], z0: Tensor
                    ) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """Return (f_flat, z_flat): f on flat (B, D) states, and z0 as a fresh (B, D) tensor.

    float16/bfloat16 problems are solved in float32: f gets its input in z0's dtype and
    its output is promoted (the small per-sample solves need float32 at least).
    """
    if not isinstance(z0, Tensor):
        raise ValueError(f"{solver}: z0 must be a torch.Tensor of shape (B, ...), got {type(z0).__name__}")
    if z0.dim() < 1 or z0.numel() == 0:
        raise ValueError(f"{solver}: z0 must have shape (B, ...) with B >= 1 and no empty dims, "
                         f"got shape {tuple(z0.shape)}")
    if not z0.is_floating_point():
        raise ValueError(f"{solver}: z0 must have a floating dtype, got {z0.dtype}")
    if not callable(f):
        raise ValueError(f"{solver}: f must be callable, got {type(f).__name__}")
    shape, dtype = z0.shape, z0.dtype
    batch = shape[0]
    work = torch.float32 if dtype in LOW_PRECISION else dtype  # solver state: float32 at least

    cast_in = work != dtype  # once per f evaluation: skip the no-op casts (each a call into torch)

    def f_flat(z: Tensor) -> Tensor:
        fz = f(z.view(shape).to(dtype) if cast_in else z.view(shape))
        if not isinstance(fz, Tensor) or fz.shape != shape:
            got = tuple(fz.shape) if isinstance(fz, Tensor) else type(fz).__name__
            raise ValueError(f"{solver}: f must return a tensor shaped like z0 {tuple(shape)}, got {got}")
        flat = fz.reshape(batch, -1)  # (B, D)
        return flat if flat.dtype == work else flat.to(work)

    return f_flat, z0.detach().reshape(batch, -1).to(work, copy=True)  # (B, D)


def restore_dtype(res: SolverResult, dtype: torch.dtype) -> SolverResult:
    """Give ``res.z`` the dtype of z0 (float16/bfloat16 problems are solved in float32)."""
    if res.z.dtype != dtype:
        res.z = res.z.to(dtype)
    return res


_NO_CHANGE = contextlib.nullcontext()  # reusable: entered once per solver iteration on a CPU


class _HighestPrecision:
    """Full float32 products inside the block, the user's setting restored after; reusable."""

    def __init__(self) -> None:
        self._saved: list[str] = []

    def __enter__(self) -> None:
        self._saved.append(torch.get_float32_matmul_precision())
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc: object) -> None:
        torch.set_float32_matmul_precision(self._saved.pop())


def exact_products(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Full float32 matrix products on CUDA inside the block, even where the user allows TF32
    (``torch.set_float32_matmul_precision("high")``): the solvers' reductions give residual
    norms and secant products that need every bit; f, called outside such blocks, keeps the
    user's setting. Elsewhere a no-op. The returned manager is reusable, so a solver makes
    it once per solve and enters it at every product."""
    return _HighestPrecision() if device.type == "cuda" else _NO_CHANGE


class IterateTracker:
    """Per-sample residuals, lowest-residual iterate, stop masks and traces.

    ``observe`` is called once per f evaluation with the iterate and f of it (or ``record``
    with the two norms, or ``record_residuals`` with the residuals, when a solver has them
    already). The norms ||f(z) - z|| and
    ||f(z)|| are read to the host once (the one sync per iteration every solver needs for
    its stop test); the relative residuals, the traces and the per-sample decisions are
    made there, in plain Python floats: on a CPU, a dozen tiny torch ops cost more than a
    loop over B (and so, measured inside a solve, where the host's caches are cold after f,
    do a dozen NumPy ones), and on a GPU each would be a kernel launch. While every sample
    is active and improves (the common case) a measurement is a few passes over B floats.
    Inactive samples (converged or failed) are left untouched. The solvers' contract: a
    stopped sample's rows stay unchanged in every later iterate they record (zero steps, or
    ``freeze_inactive``), except that a sample that failed is rolled back to its last finite
    iterate. So while no sample has failed, a converged sample's rows in z are its best
    iterate, and the lowest-residual iterate is replaced by reference whenever every active
    sample improved; otherwise it is updated by rows.
    ``active`` (a (B,) bool array) is replaced, never changed in place, when a sample stops.
    """

    def __init__(self, z0: Tensor, tol: float, stop_mode: str) -> None:
        batch = self.batch = z0.shape[0]
        self.device = z0.device
        self.dtype = z0.dtype
        self.tol = tol
        self.use_rel = stop_mode == "rel"
        self.nstep = 0
        self.best_z = z0  # (B, D); replaced, or (when owned) updated by rows
        self._owns_best_z = False
        self.best_metric = [math.inf] * batch
        self._best_shared = False  # the best lists are trace rows (see record_residuals)
        self._any_failed = False  # some sample met a non-finite value (its z rows are not its best)
        self.best_abs = [math.inf] * batch
        self.best_rel = [math.inf] * batch
        self.best_step = [0] * batch
        self.active = np.ones(batch, bool)
        self.converged = [False] * batch
        self.nonfinite = [False] * batch
        self.stopped_after = [0] * batch  # iterates a stopped sample was measured while active
        self.n_active = batch
        self.failed_rows: list[int] = []  # samples that failed at the last observe
        # per measured iterate, per sample, on the host; the lists recorded are the tracker's own
        # from then on (``result`` fills in the entries of stopped samples)
        self.abs_trace: list[list[float]] = []
        self.rel_trace: list[list[float]] = []
        self._active_mask: Tensor | None = None

    def observe(self, z: Tensor, fz: Tensor, residual: Tensor) -> None:
        """Record iterate z (B, D) with f(z) = fz and residual = +-(f(z) - z)."""
        norms = torch.stack((torch.linalg.vector_norm(residual, dim=1),
                             torch.linalg.vector_norm(fz, dim=1)))  # (2, B)
        abs_host, fz_norm_host = norms.tolist()  # one host sync
        self.record(z, abs_host, fz_norm_host)

    def record(self, z: Tensor, abs_host: list[float], fz_norm_host: list[float]) -> None:
        """Record iterate z (B, D) from its norms, already on the host as lists of floats:
        abs_host[i] = ||f(z_i) - z_i||, fz_norm_host[i] = ||f(z_i)|| (a solver that gets them
        more cheaply than ``observe`` calls this directly)."""
        self.record_residuals(z, abs_host, [a / (n + REL_EPS) for a, n in zip(abs_host, fz_norm_host)])

    def record_residuals(self, z: Tensor, abs_host: list[float], rel_host: list[float],
                         all_improved: bool | None = None) -> None:
        """Record iterate z (B, D) from its residuals, on the host as lists of floats (the
        tracker's own from then on): abs_host[i] = ||f(z_i) - z_i||, rel_host[i] = abs_host[i]
        / (||f(z_i)|| + REL_EPS). all_improved: whether every sample is active, below its best
        residual so far (in the stop mode) and not under tol, when the caller knows it already
        (Broyden's compiled host work decides it); None: decided here."""
        self.abs_trace.append(abs_host)
        self.rel_trace.append(rel_host)
        metric = rel_host if self.use_rel else abs_host
        self.failed_rows = []
        if all_improved is None:
            all_improved = (self.n_active == self.batch and all(map(operator.lt, metric, self.best_metric))
                            and min(metric) >= self.tol)
        if all_improved:
            # Every sample active, improved (so finite: inf and NaN are never below the best)
            # and not converged: the common case, no per-sample decision and no copy of z. The
            # best lists become this iterate's trace rows, shared until the per-sample path
            # below changes them (it copies them first); ``result`` never changes those rows.
            self.best_metric, self.best_abs, self.best_rel = metric, abs_host, rel_host
            self._best_shared = True
            self.best_step = [self.nstep] * self.batch
            self.best_z = z
            self._owns_best_z = False
            self.nstep += 1
            return
        if self._best_shared:
            self.best_metric, self.best_abs, self.best_rel = (list(self.best_metric), list(self.best_abs),
                                                              list(self.best_rel))
            self._best_shared = False
        improved, failed = [], []
        # locals: this loop runs once per sample per iteration, on the solver's critical path
        active, best_metric, stopped_after = self.active.tolist(), self.best_metric, self.stopped_after
        use_rel, tol, nstep, isfinite = self.use_rel, self.tol, self.nstep, math.isfinite
        stopped, active_before = 0, self.n_active
        for i in range(self.batch):
            if not active[i]:
                continue
            a, r = abs_host[i], rel_host[i]
            if not isfinite(a):  # a NaN or inf anywhere in z or f(z) reaches ||f(z) - z||
                failed.append(i)
                self.nonfinite[i] = True
                active[i] = False
                stopped_after[i] = nstep + 1
                stopped += 1
                continue
            metric_i = r if use_rel else a
            if metric_i < best_metric[i]:
                improved.append(i)
                best_metric[i], self.best_abs[i], self.best_rel[i] = metric_i, a, r
                self.best_step[i] = nstep
            if metric_i < tol:
                self.converged[i] = True
                active[i] = False
                stopped_after[i] = nstep + 1
                stopped += 1
        if stopped:
            self.n_active -= stopped
            self.active = np.array(active)
            self._active_mask = None
        self.failed_rows = failed
        self._any_failed = self._any_failed or bool(failed)
        if len(improved) == self.batch or (len(improved) == active_before and not self._any_failed):
            # Every sample improved; or every active one did, and the others stopped converged on
            # their best iterate, which the solvers keep unchanged in z from then on (zero steps, or
            # ``freeze_inactive``): z holds every sample's best iterate, no copy at all.
            self.best_z = z
            self._owns_best_z = False
        elif improved:
            rows = self.rows(improved)
            if self._owns_best_z:
                self.best_z.index_copy_(0, rows, z.index_select(0, rows))
            else:
                self.best_z = self.best_z.index_copy(0, rows, z.index_select(0, rows))
                self._owns_best_z = True
        self.nstep += 1

    @property
    def any_active(self) -> bool:
        """Whether some sample still iterates (as of the last ``observe``)."""
        return self.n_active > 0

    @property
    def active_mask(self) -> Tensor:
        """(B,) bool tensor of the samples still iterating."""
        if self._active_mask is None:
            self._active_mask = torch.from_numpy(self.active).to(self.device)
        return self._active_mask

    def rows(self, indices: Sequence[int] | np.ndarray) -> Tensor:
        """Sample indices as an index tensor on the solver's device."""
        return torch.from_numpy(np.asarray(indices, dtype=np.int64)).to(self.device)

    def roll_back_failed(self, new: Tensor, old: Tensor) -> Tensor:
        """``new`` (B, D) with the rows of samples that just met a non-finite value taken from
        ``old`` (their last finite iterate); those samples are frozen from now on."""
        if not self.failed_rows:
            return new
        rows = self.rows(self.failed_rows)
        return new.index_copy(0, rows, old.index_select(0, rows))

    def freeze_inactive(self, new: Tensor, old: Tensor) -> Tensor:
        """``new`` (B, D) with the rows of inactive samples taken from ``old``."""
        if self.n_active == self.batch:
            return new
        rows = self.rows(np.flatnonzero(~self.active))
        return new.index_copy(0, rows, old.index_select(0, rows))

    def step(self, f_flat: Callable[[Tensor], Tensor], proposed: Tensor, z: Tensor, g: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One iteration's shared part for solvers that keep (z, g = f(z) - z): move to
        ``proposed`` (B, D) except for inactive samples, evaluate f there and observe it; samples
        that met a non-finite value go back to their last finite iterate. Returns
        (z_next, f(z_next), g_next)."""
        z_next = self.freeze_inactive(proposed, z)
        fz = f_flat(z_next)
        g_next = fz - z_next
        self.observe(z_next, fz, g_next)
        return self.roll_back_failed(z_next, z), fz, self.roll_back_failed(g_next, g)

    def result(self, shape: torch.Size) -> SolverResult:
        """Package the bookkeeping; residuals of samples that met non-finite values are inf.
        Built on the host, in few NumPy calls (they run right after f, with cold caches), and
        moved to the device once per field."""
        batch, nstep = self.batch, self.nstep
        real = NUMPY_DTYPES[self.dtype]
        abs_trace, rel_trace = self.abs_trace, self.rel_trace
        if self.n_active < batch:  # entries measured after a sample stopped repeat its last value
            for i in np.flatnonzero(~self.active).tolist():
                measured = self.stopped_after[i]  # iterates measured while active, >= 1
                a, r = abs_trace[measured - 1][i], rel_trace[measured - 1][i]
                for step in range(measured, nstep):
                    abs_trace[step][i], rel_trace[step][i] = a, r
        traces = np.array((abs_trace, rel_trace), dtype=real).reshape(2, nstep, batch)  # (2, N, B)
        traces = np.ascontiguousarray(traces.transpose(0, 2, 1))  # (2, B, N)
        nonfinite = np.array(self.nonfinite)
        best = np.array((self.best_abs, self.best_rel), dtype=real)  # (2, B)
        best[:, nonfinite] = math.inf
        on_device = (lambda values: torch.from_numpy(values).to(self.device)) if self.device.type != "cpu" \
            else torch.from_numpy
        best_t, traces_t = on_device(best), on_device(traces)
        return SolverResult(
            z=self.best_z.reshape(shape),
            nstep=nstep,
            abs_residual=best_t[0],
            rel_residual=best_t[1],
            converged=on_device(np.array(self.converged)),
            nonfinite=on_device(nonfinite),
            abs_trace=traces_t[0],
            rel_trace=traces_t[1],
            best_step=on_device(np.array(self.best_step, np.int64)),
        )
