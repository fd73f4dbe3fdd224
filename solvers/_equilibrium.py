"""``equilibrium``: a fixed point with gradients, the core of a DEQ layer.

Forward: a solver finds z* = f(z*) without building a graph (O(1) memory in the number
of iterations). Then f is applied once more, differentiably, to a detached copy of z*:
z_out = f(z*). That graph reaches the parameters f closes over and any input x it
captures; how the gradient of z_out is shaped depends on ``grad``:

* "ift" (default): implicit function theorem. With g = dL/dz_out, the backward pass solves
  the adjoint system y = y J_f(z*) + g with a solver, using vector-Jacobian products of
  the retained graph (torch.autograd.grad, retain_graph=True), never a dense Jacobian, and
  sends y through that graph instead of g: dL/dtheta = y df/dtheta = g (I - J)^{-1} df/dtheta.
  The solve runs in the backward of a small autograd.Function placed after z_out (the
  hook); it holds z_out, so no reference cycle between a tensor and its own hook exists.
* "phantom": Jacobian-free / phantom gradient (Geng et al., 2021; Fung et al., 2022):
  ``grad_steps`` damped steps z <- tau f(z) + (1 - tau) z from z*, differentiated by autograd.
* "unroll": ``grad_steps`` plain steps z <- f(z) from z*, differentiated by autograd.

``info`` is an :class:`EquilibriumInfo`: ``info.forward`` (a :class:`SolveStats`) at once,
``info.backward`` once the backward pass has run (for "ift" the same object is filled in by
it; for "phantom"/"unroll" it is set at once, with ``grad_steps`` and no residuals).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import SolverResult, check_damping, check_options, check_positive_int
from ._registry import SolverFn, get_solver

GRAD_MODES = ("ift", "phantom", "unroll")


@dataclass
class SolveStats:
    """What one solve of a DEQ layer did (the forward z = f(z), or the backward adjoint
    system); every (B,) field is per sample.

    solver: the registry name that ran ("phantom" / "unroll": no backward solve, the
        gradient took ``nstep`` differentiated steps instead, and the residuals are NaN).
    nstep: f (or vector-Jacobian product) evaluations made.
    abs_residual, rel_residual: (B,) ||f(z) - z|| and ||f(z) - z|| / (||f(z)|| + eps) of the
        returned iterate (the lowest one each sample reached).
    converged, nonfinite: (B,) bool.
    abs_trace, rel_trace: (B, nstep) residual of each iterate (None without a solve).
    time_s: wall-clock seconds of the solve, device synchronised (NaN without a solve).
    """

    solver: str
    nstep: int
    abs_residual: Tensor
    rel_residual: Tensor
    converged: Tensor
    nonfinite: Tensor
    abs_trace: Optional[Tensor]
    rel_trace: Optional[Tensor]
    time_s: float

    @classmethod
    def of(cls, solver: str, res: SolverResult, time_s: float) -> "SolveStats":
        return cls(solver, res.nstep, res.abs_residual, res.rel_residual, res.converged, res.nonfinite,
                   res.abs_trace, res.rel_trace, time_s)

    @classmethod
    def no_solve(cls, mode: str, steps: int, like: Tensor) -> "SolveStats":
        nan = torch.full((like.shape[0],), math.nan, dtype=like.dtype, device=like.device)
        no = torch.zeros(like.shape[0], dtype=torch.bool, device=like.device)
        return cls(mode, steps, nan, nan.clone(), no, no.clone(), None, None, math.nan)


@dataclass
class EquilibriumInfo:
    """``equilibrium``'s second result: the forward solve's statistics, and the backward
    one's once backward has run (None before, and when no graph was built)."""

    forward: SolveStats
    backward: Optional[SolveStats] = None


def equilibrium(f: Callable[[Tensor], Tensor], z0: Tensor, *, solver: str = "broyden",
                max_iter: int = 30, tol: float = 1e-3, stop_mode: str = "abs",
                solver_kwargs: dict[str, Any] | None = None,
                backward_solver: str = "broyden", backward_max_iter: int = 35,
                backward_tol: float = 1e-6, backward_stop_mode: str = "abs",
                backward_solver_kwargs: dict[str, Any] | None = None,
                grad: str = "ift", grad_steps: int = 5, tau: float = 1.0,
                ) -> tuple[Tensor, EquilibriumInfo]:
    """Solve z = f(z) per sample and return (z_star, info); see the module docstring.

    f: (B, ...) -> (B, ...), differentiable, closing over parameters and inputs.
    z0: (B, ...) initial guess (a warm start is just a better z0); never differentiated.
    solver / backward_solver: registry names; *_kwargs: their extra options (e.g. memory).
    grad: "ift", "phantom" or "unroll"; grad_steps and tau serve the latter two.
    Returns z_star (B, ...): f(z*) with the chosen gradient when grad mode is on, else the
    solver's z* (no extra f evaluation). info: an :class:`EquilibriumInfo` (``info.forward``;
    ``info.backward`` after backward for "ift", at once for "phantom"/"unroll", whose
    ``nstep`` is grad_steps and whose residuals and time are NaN: no solve happens).
    """
    forward_solver = get_solver(solver)
    adjoint_solver = get_solver(backward_solver)
    check_options("equilibrium", max_iter, tol, stop_mode)
    check_options("equilibrium (backward)", backward_max_iter, backward_tol, backward_stop_mode)
    if grad not in GRAD_MODES:
        raise ValueError(f"equilibrium: grad must be one of {GRAD_MODES}, got {grad!r}")
    check_positive_int("equilibrium", "grad_steps", grad_steps)
    check_damping("equilibrium", tau)
    for name, kwargs in (("solver_kwargs", solver_kwargs), ("backward_solver_kwargs", backward_solver_kwargs)):
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(f"equilibrium: {name} must be a dict or None, got {type(kwargs).__name__}")

    start = time.perf_counter()
    with torch.no_grad():
        res = forward_solver(f, z0.detach(), max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                             **(solver_kwargs or {}))
    _synchronize(res.z)
    info = EquilibriumInfo(SolveStats.of(solver, res, time.perf_counter() - start))
    z_star = res.z.detach()
    if not torch.is_grad_enabled():
        return z_star, info

    if grad == "ift":
        z_leaf = z_star.requires_grad_()
        z_out = f(z_leaf)  # requires grad (through z_leaf) even if nothing upstream does
        adjoint = _AdjointSpec(backward_solver, adjoint_solver, dict(max_iter=backward_max_iter, tol=backward_tol,
                                                    stop_mode=backward_stop_mode,
                                                    **(backward_solver_kwargs or {})), info)
        return _ImplicitGradient.apply(z_out, z_leaf, adjoint), info

    z = z_star
    for _ in range(grad_steps):
        z = f(z) if grad == "unroll" or tau == 1 else tau * f(z) + (1 - tau) * z
    info.backward = SolveStats.no_solve(grad, grad_steps, z_star)
    return z, info


class _AdjointSpec:
    """What the backward pass needs besides tensors: the solver, its options, the info."""

    def __init__(self, name: str, solver: SolverFn, options: dict[str, Any], info: EquilibriumInfo) -> None:
        self.name = name
        self.solver = solver
        self.options = options
        self.info = info


class _ImplicitGradient(torch.autograd.Function):
    """Identity on z_out = f(z_leaf) in forward; in backward, replaces dL/dz_out by the
    solution y of y = y J_f(z*) + dL/dz_out, which autograd then sends through f."""

    @staticmethod
    def forward(ctx: Any, z_out: Tensor, z_leaf: Tensor, adjoint: _AdjointSpec) -> Tensor:
        ctx.adjoint = adjoint
        ctx.save_for_backward(z_out, z_leaf)
        return z_out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        z_out, z_leaf = ctx.saved_tensors
        adjoint: _AdjointSpec = ctx.adjoint

        def adjoint_map(y: Tensor) -> Tensor:  # y -> y J + g, one vector-Jacobian product
            (vjp,) = torch.autograd.grad(z_out, z_leaf, y, retain_graph=True, allow_unused=True)
            return grad_out if vjp is None else vjp + grad_out

        start = time.perf_counter()
        res = adjoint.solver(adjoint_map, torch.zeros_like(grad_out), **adjoint.options)
        _synchronize(res.z)
        adjoint.info.backward = SolveStats.of(adjoint.name, res, time.perf_counter() - start)
        return res.z, None, None


def _synchronize(t: Tensor) -> None:
    """Wait for queued device work so wall-clock times mean something."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)
