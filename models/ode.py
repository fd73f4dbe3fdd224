"""The "neural_ode" depth strategy: continuous depth with torchdiffeq.

The hidden sequence follows dz/dt = cell(z, injection) - z from z(0) = 0 to z(t1); its
fixed point is the DEQ's equilibrium, and Euler with step 1 is the weight-tied stack.
Options: ``method`` (a torchdiffeq method; fixed-step ones take ``steps`` equal steps,
adaptive ones ``rtol``/``atol``), ``t1`` and ``adjoint``.

With ``adjoint: true`` the gradient comes from torchdiffeq.odeint_adjoint, which
integrates the adjoint ODE backwards in time instead of storing the forward graph, so
activation memory is flat in the number of steps. odeint_adjoint only differentiates
with respect to the initial state and ``adjoint_params``; the injection (which depends
on the embedding and the cell's injection layer) therefore rides along in the state as
a second component with zero derivative, and the cell's parameters are passed as
``adjoint_params``.

``stats["nfe"]`` counts function (cell) evaluations of the forward solve;
``backward_stats()`` gives ``bwd_nfe`` for the adjoint (evaluations during backward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torchdiffeq
from torch import nn

from .cells import Cell
from .config import MAX_ITER, MAX_STEPS, DepthOptions
from .depth import CellFactory, DepthResult, DepthStrategy

FIXED_STEP_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


@dataclass(frozen=True)
class NeuralODEOptions(DepthOptions):
    size_key: ClassVar[Optional[str]] = "steps"
    method: str = "rk4"
    steps: int = 4  # fixed-step methods: equal steps over [0, t1]
    t1: float = 1.0
    rtol: float = 1e-3  # adaptive methods
    atol: float = 1e-4
    adjoint: bool = True
    max_num_steps: Optional[int] = None  # adaptive methods: give up after this many steps

    def check(self) -> None:
        methods = FIXED_STEP_METHODS + ADAPTIVE_METHODS
        if self.method not in methods:
            raise ValueError(f"model.depth.method: unknown method {self.method!r}; allowed: "
                             f"{', '.join(methods)}")
        if not 1 <= self.steps <= MAX_ITER:
            raise ValueError(f"model.depth.steps: must be in [1, {MAX_ITER}], got {self.steps}")
        if self.t1 <= 0:
            raise ValueError(f"model.depth.t1: must be > 0, got {self.t1}")
        if self.rtol <= 0 or self.atol <= 0:
            raise ValueError(f"model.depth.rtol/atol: must be > 0, got {self.rtol}/{self.atol}")
        if self.max_num_steps is not None and not 1 <= self.max_num_steps <= MAX_STEPS:
            raise ValueError(f"model.depth.max_num_steps: must be in [1, {MAX_STEPS}], "
                             f"got {self.max_num_steps}")


class _CellDynamics(nn.Module):
    """dz/dt = cell(z, injection) - z, counting evaluations.

    ``injection`` given: the state is z alone. ``injection`` None: the state is the
    tuple (z, injection) and the injection's derivative is zero (adjoint mode).
    """

    def __init__(self, cell: Cell, injection: Optional[torch.Tensor]) -> None:
        super().__init__()
        self.cell = cell
        self.injection = injection
        self.nfe = 0

    def forward(self, t: torch.Tensor, state):
        self.nfe += 1
        if self.injection is not None:
            z = state
            return self.cell(z, self.injection) - z
        z, injection = state
        return self.cell(z, injection) - z, torch.zeros_like(injection)


class NeuralODE(DepthStrategy):
    """Integrate dz/dt = cell(z, x) - z over [0, t1] with torchdiffeq."""

    Options = NeuralODEOptions

    def __init__(self, make_cell: CellFactory, options: NeuralODEOptions) -> None:
        super().__init__(make_cell, options)
        self.cell = make_cell()

    def _solver_kwargs(self) -> dict:
        opts = self.options
        if opts.method in FIXED_STEP_METHODS:
            steps = opts.steps

            def grid(func, y0, t):  # exactly `steps` equal steps (step_size can round up)
                return torch.linspace(float(t[0]), float(t[-1]), steps + 1, dtype=t.dtype, device=t.device)

            return {"method": opts.method, "options": {"grid_constructor": grid}}
        kwargs = {"method": opts.method, "rtol": opts.rtol, "atol": opts.atol}
        if opts.max_num_steps is not None:
            kwargs["options"] = {"max_num_steps": opts.max_num_steps}
        return kwargs

    def forward(self, x: torch.Tensor) -> DepthResult:
        opts = self.options
        injection = self.cell.prepare_injection(x)  # (B, T, *)
        z0 = torch.zeros_like(x)  # (B, T, D)
        t = torch.tensor([0.0, opts.t1], dtype=x.dtype, device=x.device)
        use_adjoint = opts.adjoint and torch.is_grad_enabled()
        if use_adjoint:
            dynamics = _CellDynamics(self.cell, None)
            z_path, _ = torchdiffeq.odeint_adjoint(
                dynamics, (z0, injection), t, adjoint_params=tuple(self.cell.parameters()),
                **self._solver_kwargs())  # (2, B, T, D), (2, B, T, *)
        else:
            dynamics = _CellDynamics(self.cell, injection)
            z_path = torchdiffeq.odeint(dynamics, z0, t, **self._solver_kwargs())  # (2, B, T, D)
        fwd_nfe = dynamics.nfe

        def backward_stats() -> dict[str, float]:
            if not use_adjoint:
                return {}  # plain autograd through the solver: no function evaluations
            return {"bwd_nfe": float(dynamics.nfe - fwd_nfe)}

        return DepthResult(z=z_path[-1], stats={"nfe": float(fwd_nfe)}, backward_stats=backward_stats)
