"""Anderson acceleration (type II, Walker and Ni 2011), batched per sample.

With the last n <= m iterates x_i and residuals g_i = f(x_i) - x_i of a sample, the next
iterate is the mixture

    x+ = sum_i alpha_i (x_i + tau g_i),   alpha = argmin ||sum_i alpha_i g_i||^2, sum alpha = 1,

solved through the regularised Gram matrix (G G^T + reg I) w = 1, alpha = w / sum(w).
``tau`` is the damping of torchdeq (1: mix the f(x_i)). The regulariser is relative,
reg = lam * mean(diag(G G^T)), so it does not depend on the scale of the residuals
(torchdeq adds lam * I); the backward pass solves systems whose residuals are tiny.

The Gram matrix is updated by one row per iteration (one batched matrix-vector product
over the stored residuals) instead of being rebuilt. Every sample has its own history
and mixing weights; samples that converged or met non-finite values stay where they are.

As in ``broyden``, the small per-sample work (the Gram matrix, the regularised solve, the
mixing weights) is done on the host in float64 NumPy, from one read of the new Gram row per
iteration: on a CPU a dozen tiny torch operations cost more, and on a GPU each would be a
kernel launch. The two large passes (the Gram row and the mixture) stay on the device.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ._common import (IterateTracker, SolverResult, check_damping, check_options,
                      check_positive_int, exact_products, flatten_problem, restore_dtype)


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, *, max_iter: int = 50, tol: float = 1e-3,
             stop_mode: str = "abs", m: int = 6, lam: float = 1e-4, tau: float = 1.0) -> SolverResult:
    """Find z = f(z) per sample with Anderson acceleration; see the module docstring.

    m: history length; lam: relative Tikhonov regulariser of the mixing problem;
    tau: damping in (0, 1]. Other options as in ``broyden``.
    """
    check_options("anderson", max_iter, tol, stop_mode)
    check_positive_int("anderson", "m", m)
    check_damping("anderson", tau)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
        raise ValueError(f"anderson: lam must be a number >= 0, got {lam!r}")
    f_flat, x = flatten_problem("anderson", f, z0)
    with torch.no_grad():
        res = _anderson_flat(f_flat, x, z0.shape, max_iter, tol, stop_mode, m, float(lam), float(tau))
    return restore_dtype(res, z0.dtype)


def _solve(system: np.ndarray, rhs: np.ndarray, newest: int) -> np.ndarray:
    """(B, n): per sample, the solution w of system (B, n, n) w = rhs (B, n, 1). A sample
    whose system is exactly singular (possible only with ``lam=0``, once its residuals vanish
    or repeat) takes the least-squares solution of smallest norm, and where even that has no
    usable sum, all its weight on the newest iterate (slot ``newest``): a plain step from
    where it is."""
    try:
        return np.linalg.solve(system, rhs)[:, :, 0]
    except np.linalg.LinAlgError:  # some sample singular: solve one by one
        out = np.zeros(rhs.shape[:2])
        for i in range(system.shape[0]):
            try:
                out[i] = np.linalg.solve(system[i], rhs[i])[:, 0]
            except np.linalg.LinAlgError:
                w = np.linalg.pinv(system[i]) @ rhs[i, :, 0]
                if np.isfinite(w).all() and abs(w.sum()) > 0:
                    out[i] = w
                else:
                    out[i, newest] = 1.0
        return out


def _anderson_flat(f_flat: Callable[[Tensor], Tensor], x: Tensor, shape: torch.Size, max_iter: int,
                   tol: float, stop_mode: str, m: int, lam: float, tau: float) -> SolverResult:
    batch, dim = x.shape
    tracker = IterateTracker(x, tol, stop_mode)
    fx = f_flat(x)
    g = fx - x  # (B, D) residual
    tracker.observe(x, fx, g)
    m = min(m, max_iter)
    # History rows, interleaved and rows first: row 2i = x_i, row 2i + 1 = g_i (each row a
    # contiguous (B, D)), so one batched product over rows 0..2n-1 mixes them.
    history = x.new_empty(2 * m, batch, dim)  # (2m, B, D)
    gram = np.zeros((batch, m, m))  # (B, m, m) g_i^T g_j by slot, float64 on the host
    tiny = float(torch.finfo(x.dtype).tiny)
    eye = np.eye(m)
    ones = np.ones((batch, m, 1))
    mix_dtype = np.float64 if x.dtype == torch.float64 else np.float32
    mix = np.empty((batch, 1, 2 * m), mix_dtype)  # (B, 1, 2n): alpha_i and alpha_i tau, interleaved
    on_cpu = x.device.type == "cpu"
    exact = exact_products(x.device)
    slot, count = 0, 0
    with np.errstate(all="ignore"):  # a sample that met inf/NaN is frozen; its weights are never used
        while tracker.nstep < max_iter and tracker.any_active:
            history[2 * slot] = x
            history[2 * slot + 1] = g
            count = min(count + 1, m)
            residuals = history[1:2 * count:2].transpose(0, 1)  # (B, n, D)
            with exact:
                dots = torch.bmm(g[:, None], residuals.transpose(1, 2))[:, 0]  # (B, n)
            dots = (dots if on_cpu else dots.cpu()).numpy().astype(np.float64)
            gram[:, slot, :count] = dots
            gram[:, :count, slot] = dots
            system = gram[:, :count, :count]  # (B, n, n)
            reg = np.einsum("bii->b", system) / count * lam + tiny  # (B,) lam x mean of the diagonal
            weights = _solve(system + reg[:, None, None] * eye[:count, :count], ones[:, :count], slot)  # (B, n)
            alpha = weights / weights.sum(axis=1, keepdims=True)
            mix[:, 0, 0:2 * count:2] = alpha
            mix[:, 0, 1:2 * count:2] = alpha * tau
            weights_t = torch.from_numpy(mix[:, :, :2 * count])
            with exact:
                mixed = torch.bmm(weights_t if on_cpu else weights_t.to(x.device),
                                  history[:2 * count].transpose(0, 1))[:, 0]  # sum alpha_i (x_i + tau g_i)
            x, _, g = tracker.step(f_flat, mixed, x, g)
            slot = (slot + 1) % m
    return tracker.result(shape)
