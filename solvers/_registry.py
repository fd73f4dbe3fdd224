"""Solvers chosen by name: a plain dict and two functions, as in torchdiffeq/torchdeq.

A solver is a callable ``solver(f, z0, *, max_iter, tol, stop_mode, **options) ->
SolverResult``. ``equilibrium`` looks its forward and backward solvers up here, so a
solver registered under a new name can be chosen from a job file.
"""
from __future__ import annotations

from typing import Callable

from ._anderson import anderson
from ._broyden import broyden
from ._common import SolverResult
from ._fixed_point import fixed_point_iter

SolverFn = Callable[..., SolverResult]

SOLVERS: dict[str, SolverFn] = {
    "broyden": broyden,
    "anderson": anderson,
    "fixed_point_iter": fixed_point_iter,
}


def register_solver(name: str, solver: SolverFn, *, overwrite: bool = False) -> None:
    """Make ``solver`` available as ``name``; replacing an existing name needs overwrite=True."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_solver: name must be a non-empty string, got {name!r}")
    if not callable(solver):
        raise ValueError(f"register_solver: solver must be callable, got {type(solver).__name__}")
    if name in SOLVERS and not overwrite:
        raise ValueError(f"register_solver: name {name!r} is taken; pass overwrite=True to replace it")
    SOLVERS[name] = solver


def get_solver(name: str) -> SolverFn:
    """The solver registered as ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver: unknown name {name!r}; allowed: {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name]
