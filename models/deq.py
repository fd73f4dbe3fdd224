"""The "deq" depth strategy: a Deep Equilibrium Model (Bai, Kolter, Koltun 2019).

The output is the fixed point z* = cell(z*, injection), found from z0 = 0 by
``solvers.equilibrium`` (forward solve without a graph; gradient by the implicit
function theorem, or the cheaper phantom / unrolled estimates, see ``grad``). Memory
for backward is one cell's worth, whatever the number of solver iterations.

Options (keyword names follow torchdeq / solvers.equilibrium):
``solver``, ``max_iter``, ``tol``, ``stop_mode``; ``backward_solver``,
``backward_max_iter``, ``backward_tol``, ``backward_stop_mode`` (default: stop_mode);
``solver_options`` / ``backward_solver_options``: the extra keyword options of the forward
/ backward (adjoint) solver, e.g. ``{memory: 8, memory_policy: restart}`` for Broyden or
``{m: 5, lam: 1e-4}`` for Anderson (``solver_kwargs`` / ``backward_solver_kwargs`` of
``equilibrium``); ``grad`` ("ift", "phantom", "unroll") with ``grad_steps`` and ``tau``
(phantom damping; not the solvers' own ``tau``, which goes in ``solver_options``);
``pretrain_steps``/``pretrain_depth``: while the global step (``set_step``) is below
``pretrain_steps`` the model runs, in training and in eval, as a weight-tied stack of
``pretrain_depth`` cells (the DEQ paper's warm-up), then switches to the equilibrium;
``jac_reg``/``jac_reg_freq``: in training, every ``jac_reg_freq`` steps add
``jac_reg`` * (Hutchinson estimate of ||d cell / d z||_F^2 at z*) to the loss
(Bai, Koltun, Kolter 2021); this costs one extra cell evaluation, counted in nfe.

Solver names are those of ``solvers.SOLVERS`` (a solver registered there is selectable).
The solver options are checked against the chosen solver's signature: unknown names
(with a close match suggested), names the DEQ sets itself (f, z0, max_iter, tol,
stop_mode: use the depth block's own keys), types (from the annotation, else the
default's type) and, for the built-in solvers, value ranges (``solvers.option_problem``).
A solver taking ``**kwargs`` accepts any name. The options are stored as
``FrozenOptions`` (a read-only dict), so ``DEQOptions`` stays hashable.

Statistics: ``nfe`` (forward cell evaluations: solver steps plus the evaluations
that build the differentiable output), ``fwd_nstep``, ``fwd_abs_res_mean/max``,
``fwd_rel_res_mean/max``, ``fwd_converged_frac``, ``solver_time_s``; during warm-up
only ``nfe`` and ``deq_pretrain`` = 1. ``backward_stats()`` after loss.backward():
``bwd_nstep``, ``bwd_res_mean/max`` (relative residual of the adjoint solve),
``bwd_converged_frac`` and ``bwd_solver_time_s`` when a backward solve ran (grad "ift"), otherwise {}.
"""
from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import torch

from solvers import SOLVERS, equilibrium, jacobian_frobenius_loss, jacobian_spectral_radius, option_problem

from .config import MAX_ITER, MAX_LAYERS, MAX_STEPS, DepthOptions, FrozenOptions, coerce_value
from .depth import CellFactory, DepthResult, DepthStrategy, apply_cell_repeatedly

GRAD_MODES = ("ift", "phantom", "unroll")
STOP_MODES = ("rel", "abs")
SET_BY_DEPTH_BLOCK = ("max_iter", "tol", "stop_mode")  # equilibrium passes these to every solve
SET_BY_DEQ = ("f", "z0", "x0")  # the map and the start (z0 = 0), passed positionally
_PLAIN_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class DEQOptions(DepthOptions):
    size_key: ClassVar[Optional[str]] = "max_iter"
    solver: str = "broyden"
    max_iter: int = 30
    tol: float = 1e-3
    stop_mode: str = "rel"
    solver_options: FrozenOptions = field(default_factory=FrozenOptions)
    backward_solver: str = "broyden"
    backward_max_iter: int = 35
    backward_tol: float = 1e-6
    backward_stop_mode: Optional[str] = None  # None: same as stop_mode
    backward_solver_options: FrozenOptions = field(default_factory=FrozenOptions)
    grad: str = "ift"
    grad_steps: int = 5
    tau: float = 1.0
    pretrain_steps: int = 0
    pretrain_depth: int = 2
    jac_reg: float = 0.0
    jac_reg_freq: int = 1

    def __post_init__(self) -> None:
        for key in ("solver_options", "backward_solver_options"):  # a plain dict given directly
            value = getattr(self, key)
            if isinstance(value, Mapping) and not isinstance(value, FrozenOptions):
                object.__setattr__(self, key, FrozenOptions(value))

    def check(self) -> None:
        known = tuple(SOLVERS)
        for key in ("solver", "backward_solver"):
            if getattr(self, key) not in known:
                raise ValueError(f"model.depth.{key}: unknown solver {getattr(self, key)!r}; "
                                 f"allowed: {', '.join(known)}")
        check_solver_options("solver_options", self.solver, self.solver_options, "")
        check_solver_options("backward_solver_options", self.backward_solver,
                             self.backward_solver_options, "backward_")
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


@dataclass(frozen=True)
class SolverOptionSpec:
    """What a solver accepts besides (f, z0) and the options the DEQ sets: option name ->
    inspect.Parameter, the positional names, and whether it takes any name (**kwargs)."""

    options: dict[str, inspect.Parameter]
    positional: tuple[str, ...]
    any_name: bool


def solver_option_spec(fn: Callable[..., Any]) -> SolverOptionSpec:
    """The extra options of solver ``fn``, read from its signature (an unreadable signature
    accepts anything)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return SolverOptionSpec({}, (), True)
    positional_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = tuple(p.name for p in params if p.kind in positional_kinds)[:2]  # solver(f, z0, ...)
    options = {p.name: p for p in params
               if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
               and p.name not in positional and p.name not in SET_BY_DEPTH_BLOCK}
    any_name = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return SolverOptionSpec(options, positional, any_name)


def _option_type(fn: Callable[..., Any], param: inspect.Parameter) -> Any:
    """The annotation of ``param`` (resolved), else the type of its default, else None."""
    try:
        hint = typing.get_type_hints(fn).get(param.name)
    except Exception:  # unresolvable annotations, callables without __annotations__
        hint = None
    if hint is not None and hint is not Any:
        return hint
    default = param.default
    return type(default) if type(default) in _PLAIN_TYPES else None


def _check_option_value(where: str, solver: str, fn: Callable[..., Any], param: inspect.Parameter,
                        value: Any) -> None:
    tp = _option_type(fn, param)
    if tp is not None:
        try:
            coerce_value(value, tp, where)
        except TypeError:  # an annotation the config coercer does not handle: try the default's type
            default_tp = type(param.default)
            if default_tp in _PLAIN_TYPES:
                coerce_value(value, default_tp, where)
    problem = option_problem(solver, param.name, value)
    if problem:
        raise ValueError(f"{where}: {problem} (solver {solver!r})")


def check_solver_options(key: str, solver: str, options: Any, prefix: str) -> None:
    """Check ``model.depth.<key>`` (the extra options of ``solver``, a name in SOLVERS) against
    the solver's signature; ``prefix`` ("" or "backward_") names the depth keys of that solve."""
    where = f"model.depth.{key}"
    options = coerce_value(options, FrozenOptions, where)  # a mapping of names to scalars
    fn = SOLVERS[solver]
    spec = solver_option_spec(fn)
    for name, value in options.items():
        if name in SET_BY_DEPTH_BLOCK:
            raise ValueError(f"{where}: option {name!r} is set by the depth block; "
                             f"use model.depth.{prefix}{name} instead")
        if name in SET_BY_DEQ or name in spec.positional:
            raise ValueError(f"{where}: option {name!r} is set by the DEQ itself (the cell map and "
                             f"the start z0 = 0); it cannot be given")
        if name in spec.options:
            _check_option_value(f"{where}.{name}", solver, fn, spec.options[name], value)
        elif not spec.any_name:
            close = difflib.get_close_matches(name, list(spec.options), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown option {name!r} for solver {solver!r}{hint}; "
                             f"allowed: {', '.join(spec.options) or '(none)'}")
    missing = [name for name, p in spec.options.items()
               if p.default is inspect.Parameter.empty and name not in options]
    if missing:
        raise ValueError(f"{where}: solver {solver!r} needs option {missing[0]!r}")


class DEQ(DepthStrategy):
    """z* = cell(z*, injection) by a root solver; one cell kept for the backward pass."""

    Options = DEQOptions

    def __init__(self, make_cell: CellFactory, options: DEQOptions) -> None:
        super().__init__(make_cell, options)
        self.cell = make_cell()

    @property
    def in_pretraining(self) -> bool:
        return self.step < self.options.pretrain_steps

    def _cell_map(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """z -> cell(z, injection(x)): the map whose fixed point the DEQ is."""
        injection = self.cell.prepare_injection(x)
        return lambda z: self.cell(z, injection)

    def analysis(self, x: torch.Tensor, solvers: tuple[str, ...] = ("broyden", "anderson", "fixed_point_iter"),
                 min_iter: int = 32) -> dict:
        """Residual against iteration of several solvers on the trained cell's equilibrium for
        ``x``: the lowest relative residual reached so far, mean over the batch, for each of
        ``max(max_iter, min_iter)`` iterations with no early stop (the DEQ slide "Broyden finds
        the equilibrium more reliably than plain iteration")."""
        opts = self.options
        f = self._cell_map(x)
        n = max(opts.max_iter, min_iter)
        traces = {}
        with torch.no_grad():
            for name in solvers:
                if name not in SOLVERS:
                    continue
                extra = dict(opts.solver_options) if name == opts.solver else {}
                res = SOLVERS[name](f, torch.zeros_like(x), max_iter=n, tol=0.0, stop_mode="rel", **extra)
                best = torch.cummin(res.rel_trace.nan_to_num(nan=float("inf")), dim=1).values  # (B, nstep)
                traces[name] = [float(v) for v in best.mean(0)]
        return {"kind": "deq", "solver": opts.solver, "max_iter": n, "rel_residual": traces}

    def spectral_radius(self, x: torch.Tensor, n_iter: int = 20) -> torch.Tensor:
        """rho(J_f(z*)) per sample (B,): the spectral radius of the cell's Jacobian at the
        equilibrium the forward solver finds for input ``x`` (B, T, D), by power iteration
        with vector-Jacobian products. Below 1: z* is an attracting fixed point (plain
        iteration converges near it); the DEQ literature watches it grow during training
        (Bai, Koltun, Kolter 2021)."""
        opts = self.options
        f = self._cell_map(x)
        with torch.no_grad():
            res = SOLVERS[opts.solver](f, torch.zeros_like(x), max_iter=opts.max_iter, tol=opts.tol,
                                       stop_mode=opts.stop_mode, **dict(opts.solver_options))
        return jacobian_spectral_radius(f, res.z, n_iter=n_iter)

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
            solver_kwargs=dict(opts.solver_options),
            backward_solver=opts.backward_solver, backward_max_iter=opts.backward_max_iter,
            backward_tol=opts.backward_tol, backward_stop_mode=opts.backward_stop_mode or opts.stop_mode,
            backward_solver_kwargs=dict(opts.backward_solver_options),
            grad=opts.grad, grad_steps=opts.grad_steps, tau=opts.tau)
        fwd = info.forward
        abs_res, rel_res = fwd.abs_residual.detach(), fwd.rel_residual.detach()
        stats = {
            "nfe": float(calls[0]),
            "fwd_nstep": float(fwd.nstep),
            "fwd_abs_res_mean": abs_res.mean().item(), "fwd_abs_res_max": abs_res.max().item(),
            "fwd_rel_res_mean": rel_res.mean().item(), "fwd_rel_res_max": rel_res.max().item(),
            "fwd_converged_frac": fwd.converged.float().mean().item(),
            "solver_time_s": float(fwd.time_s),
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
            bwd = info.backward
            if opts.grad != "ift" or bwd is None:
                return {}  # phantom / unroll: no adjoint solve, its cost is in the forward nfe
            rel = bwd.rel_residual.detach()
            return {"bwd_nstep": float(bwd.nstep), "bwd_res_mean": rel.mean().item(),
                    "bwd_res_max": rel.max().item(), "bwd_solver_time_s": float(bwd.time_s),
                    "bwd_converged_frac": bwd.converged.float().mean().item()}

        return DepthResult(z=z_star, stats=stats, aux_loss=aux_loss, backward_stats=backward_stats)
