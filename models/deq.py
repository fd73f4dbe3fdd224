"""The "deq" depth strategy: a Deep Equilibrium Model (Bai, Kolter, Koltun 2019).

The output is the fixed point z* = cell(z*, injection), found from z0 = 0 by
``solvers.equilibrium`` (forward solve without a graph; gradient by the implicit
function theorem, or the cheaper phantom / unrolled estimates, see ``grad``). Memory
for backward is one cell's worth, whatever the number of solver iterations.

Options (keyword names follow torchdeq / solvers.equilibrium):
``solver``, ``max_iter``, ``tol``, ``stop_mode``; ``backward_solver``,
``backward_max_iter``, ``backward_tol``, ``backward_stop_mode`` (default: stop_mode);
``grad`` ("ift", "phantom", "unroll") with ``grad_steps`` and ``tau`` (phantom damping);
``pretrain_steps``/``pretrain_depth``: while the global step (``set_step``) is below
``pretrain_steps`` the model runs, in training and in eval, as a weight-tied stack of
``pretrain_depth`` cells (the DEQ paper's warm-up), then switches to the equilibrium;
``jac_reg``/``jac_reg_freq``: in training, every ``jac_reg_freq`` steps add
``jac_reg`` * (Hutchinson estimate of ||d cell / d z||_F^2 at z*) to the loss
(Bai, Koltun, Kolter 2021); this costs one extra cell evaluation, counted in nfe.

Statistics: ``nfe`` (forward cell evaluations: solver steps plus the evaluations
that build the differentiable output), ``fwd_nstep``, ``fwd_abs_res_mean/max``,
``fwd_rel_res_mean/max``, ``fwd_converged_frac``, ``fwd_solve_s``; during warm-up
only ``nfe`` and ``deq_pretrain`` = 1. ``backward_stats()`` after loss.backward():
``bwd_nstep``, ``bwd_res_mean/max`` (relative residual of the adjoint solve) and
``bwd_solve_s`` when a backward solve ran (grad "ift"), otherwise {}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from solvers import equilibrium, jacobian_frobenius_loss

from .config import MAX_ITER, MAX_LAYERS, MAX_STEPS, DepthOptions
from .depth import CellFactory, DepthResult, DepthStrategy, apply_cell_repeatedly

SOLVER_NAMES = ("broyden", "anderson", "fixed_point_iter")
GRAD_MODES = ("ift", "phantom", "unroll")
STOP_MODES = ("rel", "abs")


def _known_solvers() -> tuple[str, ...]:
    import solvers

    registry = getattr(solvers, "SOLVERS", None)
    return tuple(registry) if isinstance(registry, dict) else SOLVER_NAMES


@dataclass(frozen=True)
class DEQOptions(DepthOptions):
    solver: str = "broyden"
    max_iter: int = 30
    tol: float = 1e-3
    stop_mode: str = "rel"
    backward_solver: str = "broyden"
    backward_max_iter: int = 35
    backward_tol: float = 1e-6
    backward_stop_mode: Optional[str] = None  # None: same as stop_mode
    grad: str = "ift"
    grad_steps: int = 5
    tau: float = 1.0
    pretrain_steps: int = 0
    pretrain_depth: int = 2
    jac_reg: float = 0.0
    jac_reg_freq: int = 1

    def check(self) -> None:
        known = _known_solvers()
        for key in ("solver", "backward_solver"):
            if getattr(self, key) not in known:
                raise ValueError(f"model.depth.{key}: unknown solver {getattr(self, key)!r}; "
                                 f"allowed: {', '.join(known)}")
        if self.grad not in GRAD_MODES:
            raise ValueError(f"model.depth.grad: unknown mode {self.grad!r}; "
                             f"allowed: {', '.join(GRAD_MODES)}")
        for key in ("stop_mode", "backward_stop_mode"):
            mode = getattr(self, key)
            if mode is not None and mode not in STOP_MODES:
                raise ValueError(f"model.depth.{key}: unknown mode {mode!r}; "
                                 f"allowed: {', '.join(STOP_MODES)}")
        for key, top in (("max_iter", MAX_ITER), ("backward_max_iter", MAX_ITER), ("grad_steps", MAX_ITER),
                         ("pretrain_depth", MAX_LAYERS), ("jac_reg_freq", MAX_STEPS)):
            if getattr(self, key) < 1:
                raise ValueError(f"model.depth.{key}: must be >= 1, got {getattr(self, key)}")
            if getattr(self, key) > top:
                raise ValueError(f"model.depth.{key}: must be at most {top}, got {getattr(self, key)}")
        for key in ("tol", "backward_tol", "tau"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.depth.{key}: must be > 0, got {getattr(self, key)}")
        if not 0 <= self.pretrain_steps <= MAX_STEPS:
            raise ValueError(f"model.depth.pretrain_steps: must be in [0, {MAX_STEPS}], got {self.pretrain_steps}")
        if self.jac_reg < 0:
            raise ValueError(f"model.depth.jac_reg: must be >= 0, got {self.jac_reg}")


class DEQ(DepthStrategy):
    """z* = cell(z*, injection) by a root solver; one cell kept for the backward pass."""

    Options = DEQOptions

    def __init__(self, make_cell: CellFactory, options: DEQOptions) -> None:
        super().__init__(make_cell, options)
        self.cell = make_cell()

    @property
    def in_pretraining(self) -> bool:
        return self.step < self.options.pretrain_steps

    def forward(self, x: torch.Tensor) -> DepthResult:
        opts = self.options
        injection = self.cell.prepare_injection(x)  # (B, T, *)
        z0 = torch.zeros_like(x)  # (B, T, D)
        if self.in_pretraining:
            z = apply_cell_repeatedly(self.cell, z0, injection, opts.pretrain_depth)
            return DepthResult(z=z, stats={"nfe": float(opts.pretrain_depth), "deq_pretrain": 1.0})

        calls = [0]

        def f(z: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return self.cell(z, injection)

        z_star, info = equilibrium(
            f, z0, solver=opts.solver, max_iter=opts.max_iter, tol=opts.tol, stop_mode=opts.stop_mode,
            backward_solver=opts.backward_solver, backward_max_iter=opts.backward_max_iter,
            backward_tol=opts.backward_tol, backward_stop_mode=opts.backward_stop_mode or opts.stop_mode,
            grad=opts.grad, grad_steps=opts.grad_steps, tau=opts.tau)
        abs_res, rel_res = info["fwd_abs_res"].detach(), info["fwd_rel_res"].detach()
        stats = {
            "nfe": float(calls[0]),
            "fwd_nstep": float(info["fwd_nstep"]),
            "fwd_abs_res_mean": abs_res.mean().item(), "fwd_abs_res_max": abs_res.max().item(),
            "fwd_rel_res_mean": rel_res.mean().item(), "fwd_rel_res_max": rel_res.max().item(),
            "fwd_converged_frac": info["fwd_converged"].float().mean().item(),
            "fwd_solve_s": float(info["fwd_time_s"]),
        }
        aux_loss = None
        if (opts.jac_reg > 0 and self.training and torch.is_grad_enabled()
                and self.step % opts.jac_reg_freq == 0):
            z_in = z_star.detach().requires_grad_()
            jac_loss = jacobian_frobenius_loss(self.cell(z_in, injection), z_in, n_samples=1)
            aux_loss = opts.jac_reg * jac_loss
            stats["jac_loss"] = jac_loss.item()
            stats["nfe"] += 1.0

        def backward_stats() -> dict[str, float]:
            if opts.grad != "ift" or "bwd_nstep" not in info:
                return {}  # phantom / unroll: no adjoint solve, its cost is in the forward nfe
            rel = torch.as_tensor(info["bwd_rel_res"]).detach()
            return {"bwd_nstep": float(info["bwd_nstep"]), "bwd_res_mean": rel.mean().item(),
                    "bwd_res_max": rel.max().item(), "bwd_solve_s": float(info["bwd_time_s"])}

        return DepthResult(z=z_star, stats=stats, aux_loss=aux_loss, backward_stats=backward_stats)
