"""Plain (optionally damped) fixed-point iteration, batched per sample.

z+ = z + tau (f(z) - z); with tau = 1 this is z+ = f(z). It converges when f is a
contraction near the fixed point and is the baseline the other solvers must beat.
Samples that converged or met non-finite values stay where they are.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ._common import (IterateTracker, SolverResult, check_damping, check_options, flatten_problem,
                      restore_dtype)


def fixed_point_iter(f: Callable[[Tensor], Tensor], z0: Tensor, *, max_iter: int = 50,
                     tol: float = 1e-3, stop_mode: str = "abs", tau: float = 1.0) -> SolverResult:
    """Find z = f(z) per sample by iterating z <- z + tau (f(z) - z); options as in ``broyden``."""
    check_options("fixed_point_iter", max_iter, tol, stop_mode)
    check_damping("fixed_point_iter", tau)
    f_flat, z = flatten_problem("fixed_point_iter", f, z0)
    with torch.no_grad():
        tracker = IterateTracker(z, tol, stop_mode)
        fz = f_flat(z)
        g = fz - z  # (B, D)
        tracker.observe(z, fz, g)
        while tracker.nstep < max_iter and tracker.any_active:
            stepped = fz if tau == 1 else torch.add(z, g, alpha=tau)
            z, fz, g = tracker.step(f_flat, stepped, z, g)
        return restore_dtype(tracker.result(z0.shape), z0.dtype)
