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
"""
from __future__ import annotations

from typing import Callable

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
    gram = x.new_empty(batch, m, m)  # (B, m, m) g_i^T g_j by slot
    tiny = torch.finfo(x.dtype).tiny
    eye = torch.eye(m, dtype=x.dtype, device=x.device)
    ones = x.new_ones(batch, m, 1)
    slot, count = 0, 0
    while tracker.nstep < max_iter and tracker.any_active:
        history[2 * slot] = x
        history[2 * slot + 1] = g
        count = min(count + 1, m)
        residuals = history[1:2 * count:2].transpose(0, 1)  # (B, n, D)
        with exact_products(x.device):
            dots = torch.bmm(g[:, None], residuals.transpose(1, 2))[:, 0]  # (B, n)
        gram[:, slot, :count] = dots
        gram[:, :count, slot] = dots
        system = gram[:, :count, :count]  # (B, n, n)
        reg = torch.diagonal(system, dim1=1, dim2=2).mean(dim=1).mul_(lam).add_(tiny)  # (B,)
        system = torch.addcmul(system, reg[:, None, None], eye[:count, :count])
        weights = torch.linalg.solve_ex(system, ones[:, :count], check_errors=False)[0][:, :, 0]  # (B, n)
        alpha = weights / weights.sum(dim=1, keepdim=True)
        mix = torch.stack((alpha, alpha * tau), dim=2).reshape(batch, 1, 2 * count)  # (B, 1, 2n)
        with exact_products(x.device):
            mixed = torch.bmm(mix, history[:2 * count].transpose(0, 1))[:, 0]  # sum alpha_i (x_i + tau g_i)
        x, _, g = tracker.step(f_flat, mixed, x, g)
        slot = (slot + 1) % m
    return tracker.result(shape)
