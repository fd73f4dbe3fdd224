"""Solvers chosen by name: a plain dict and two functions, as in torchdiffeq/torchdeq.

A solver is a callable ``solver(f, z0, *, max_iter, tol, stop_mode, **options) ->
SolverResult``. ``equilibrium`` looks its forward and backward solvers up here, so a
solver registered under a new name can be chosen from a job file.

``option_problem(name, option, value)`` tells, before any call, whether an extra option
of a built-in solver (Broyden's ``memory``, Anderson's ``m``, ...) is out of its range,
so that a job file fails when it is checked rather than in the middle of a run; the
solvers check again when called. Options of other solvers pass (they check their own).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

from ._anderson import anderson
from ._broyden import MEMORY_POLICIES, broyden
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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Value ranges of the built-in solvers' extra options, keyed by solver function (an alias
# of a built-in solver shares them; a replacement registered under its name does not):
# option -> (test, what the range is). The solvers themselves check the same ranges.
_OPTION_RANGES: dict[SolverFn, dict[str, tuple[Callable[[Any], bool], str]]] = {
    broyden: {
        "memory": (lambda v: v is None or _positive_int(v), "an integer >= 1 or null (keep every update)"),
        "memory_policy": (lambda v: v in MEMORY_POLICIES, f"one of {', '.join(MEMORY_POLICIES)}"),
    },
    anderson: {
        "m": (_positive_int, "an integer >= 1"),
        "lam": (lambda v: _number(v) and v >= 0, "a number >= 0"),
        "tau": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    },
    fixed_point_iter: {
        "tau": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    },
}


def option_problem(name: str, option: str, value: Any) -> Optional[str]:
    """What is wrong with ``value`` for extra option ``option`` of the solver registered as
    ``name`` ("must be an integer >= 1, got 0"), or None if nothing known is."""
    test, allowed = _OPTION_RANGES.get(SOLVERS.get(name), {}).get(option, (None, ""))
    if test is None or test(value):
        return None
    return f"must be {allowed}, got {value!r}"
