"""solvers: fixed-point root finding and implicit differentiation for DEQs.

Find z with z = f(z) for a batch of independent problems (z0 has shape (B, ...)), and
differentiate through the answer with the implicit function theorem.

    from solvers import broyden, anderson, fixed_point_iter, SolverResult, equilibrium
    res = broyden(f, z0, max_iter=40, tol=1e-3, stop_mode="rel")
    res.z, res.nstep, res.abs_residual, res.rel_residual, res.converged  # (B,) fields
    z_star, info = equilibrium(f, z0, solver="broyden", max_iter=30, tol=1e-3,
                               backward_solver="broyden", backward_max_iter=35,
                               backward_tol=1e-6, grad="ift")
    info.forward.nstep, info.forward.rel_residual   # a SolveStats; info.backward after backward

Solvers are also chosen by name: ``get_solver("anderson")``, ``register_solver(name, fn)``;
their extra options (``solver_kwargs``) can be checked before a call with ``option_problem``.
Diagnostics: ``jacobian_spectral_radius`` and ``jacobian_frobenius_loss``.
Benchmark: ``python -m solvers.bench``. Internals live in the private modules.
"""
from ._anderson import anderson
from ._broyden import broyden
from ._common import SolverResult
from ._equilibrium import EquilibriumInfo, SolveStats, equilibrium
from ._fixed_point import fixed_point_iter
from ._jacobian import jacobian_frobenius_loss, jacobian_spectral_radius
from ._registry import SOLVERS, get_solver, option_problem, register_solver

__all__ = [
    "SOLVERS", "EquilibriumInfo", "SolveStats", "SolverResult", "anderson", "broyden", "equilibrium", "fixed_point_iter",
    "get_solver", "jacobian_frobenius_loss", "jacobian_spectral_radius", "option_problem", "register_solver",
]
