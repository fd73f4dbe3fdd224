"""Broyden's method ("good" Broyden on the inverse Jacobian), batched per sample.

We solve F(z) = z - f(z) = 0. Broyden keeps an estimate H of the inverse Jacobian of F
and steps s = -H F(z). Starting from H0 = I (so the first step is z1 = f(z0)), the
"good" update H+ = H + (s - H y) s^T H / (s^T H y), with y the change in F, is exactly
what the DEQ paper (Bai et al., 2019) and torchdeq use, there stored as H = -(-I + U V^T)
with U, V^T two (B, D, m) tensors.

Here the same matrices are stored more cheaply (Kelley, "Iterative Methods for Linear
and Nonlinear Equations", 1995, Alg. brsol): without line search the update can be
written as a product of rank-one factors of the steps alone,

    H_n = E_{n-1} ... E_0,   E_j = I + beta_j s_{j+1} s_j^T,   beta_j = 1 / ||s_j||^2,

and s_{n+1} = z / (1 - beta_n s_n^T z) with z = -H_n F_{n+1}. In matrix form
H_n F = F + W (I - L)^{-1} S^T F, with S the left steps, W the right steps times beta
and L strictly lower triangular, L_ij = beta_j s_i^T s_{j+1}. One iteration therefore
makes two passes over the stored steps, two batched matrix products: a reduction
(s_i^T F and s_i^T s_n) and a combination that writes s_{n+1} straight into its row;
the U V^T form needs four, and twice the memory. With full memory the iterates are
torchdeq's (tested).

Per sample: its own steps, small matrices and factors; samples that converged (or met
non-finite values) take zero steps from then on. Limited memory: ``memory=m`` keeps the
last m factors (the oldest one is dropped, as in L-BFGS), i.e. m + 1 steps in a ring
buffer. An update whose denominator 1 - beta_n s_n^T z is under sqrt(machine eps) in
size is skipped (beta_n = 0, E_n = I); a non-finite one makes the sample fail (its next
residual is non-finite), and it is frozen on its last finite iterate.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ._common import (IterateTracker, SolverResult, check_options, check_positive_int,
                      flatten_problem, restore_dtype)


def broyden(f: Callable[[Tensor], Tensor], z0: Tensor, *, max_iter: int = 50, tol: float = 1e-3,
            stop_mode: str = "abs", memory: int | None = None) -> SolverResult:
    """Find z = f(z) per sample with Broyden's method; see the module docstring.

    f: maps (B, ...) to (B, ...), sample by sample. z0: (B, ...) initial guess.
    max_iter: f evaluations allowed (the first one measures z0). tol, stop_mode: a sample
    stops once its "abs" or "rel" residual is under tol. memory: rank-one updates kept
    (None: all, at most max_iter - 2 are ever made). Runs without building a graph.
    """
    check_options("broyden", max_iter, tol, stop_mode)
    if memory is not None:
        check_positive_int("broyden", "memory", memory)
    f_flat, z = flatten_problem("broyden", f, z0)
    with torch.no_grad():
        res = _broyden_flat(f_flat, z, z0.shape, max_iter, tol, stop_mode, memory)
    return restore_dtype(res, z0.dtype)


def _broyden_flat(f_flat: Callable[[Tensor], Tensor], z: Tensor, shape: torch.Size, max_iter: int,
                  tol: float, stop_mode: str, memory: int | None) -> SolverResult:
    batch, dim = z.shape
    tracker = IterateTracker(z, tol, stop_mode)
    capacity = max_iter - 1 if memory is None else min(memory + 1, max_iter - 1)  # steps kept
    # Row 0: F(z) = z - f(z) of the current iterate; rows 1..C: ring buffer of the steps.
    # [F, s_last] is then a strided view, and F sits next to the steps, so one batched
    # product over rows 0..n+1 writes the next step straight into row n+2. Rows first,
    # (C + 1, B, D): each row is contiguous (a strided output makes bmm copy on CPU).
    buf = z.new_empty(capacity + 1, batch, dim)  # (C + 1, B, D)
    F = buf[0]
    fz = f_flat(z)
    torch.sub(z, fz, out=F)
    tracker.observe(z, fz, F)
    if max_iter == 1 or not tracker.any_active:
        return tracker.result(shape)
    if tracker.failed_rows:  # non-finite already at z0: F = 0 keeps those rows finite
        F.index_fill_(0, tracker.rows(tracker.failed_rows), 0.0)

    # Per-sample small matrices, chronological (index 0: oldest step kept). Row i of
    # `system` holds -L_ij = -beta_j s_i^T s_{j+1} (j < i); the triangular solve reads only
    # that strict lower part (unit diagonal implied), so nothing else is ever written.
    system = z.new_empty(batch, capacity, capacity)  # (B, C, C)
    beta = z.new_empty(batch, capacity)  # (B, C) beta_j of factor j
    ones = z.new_ones(batch)
    f_coef = torch.stack((ones, torch.zeros_like(ones)), dim=1)  # (B, 2) weights of F and s_0
    skip_below = torch.finfo(z.dtype).eps ** 0.5
    tiny = torch.finfo(z.dtype).tiny
    neg_active, seen_active = -tracker.active_mask.to(z.dtype), tracker.n_active
    buf[1] = F * neg_active[:, None]  # s_0 = -H0 F = f(z0) - z0 (zero for converged samples)
    order = [1]  # rows of the steps, chronological
    wrapped = False

    while True:
        newest = len(order) - 1  # chronological index n of the newest step; n factors exist
        last = order[-1]
        z_next = z + buf[last]
        fz = f_flat(z_next)
        torch.sub(z_next, fz, out=F)
        tracker.observe(z_next, fz, F)
        if tracker.nstep >= max_iter or not tracker.any_active:
            break
        if tracker.failed_rows:  # back to the last finite iterate, frozen; F = 0 keeps it finite
            z_next = tracker.roll_back_failed(z_next, z)
            F.index_fill_(0, tracker.rows(tracker.failed_rows), 0.0)
        if tracker.n_active != seen_active:
            neg_active, seen_active = -tracker.active_mask.to(z.dtype), tracker.n_active
        z = z_next

        # Reduction pass over the stored steps: s_i^T F and s_i^T s_n, chronological.
        stored = (buf[1:] if wrapped else buf[1:newest + 2]).transpose(0, 1)  # (B, q, D)
        pair = buf[0:last + 1:last].transpose(0, 1)  # (B, 2, D) rows F and s_n: a view
        prods = torch.bmm(pair, stored.transpose(1, 2))  # (B, 2, q); faster than stored @ pair^T on CPU
        if wrapped:
            prods = prods[:, :, torch.tensor(order, device=z.device) - 1]
        s_dot_F, s_dot_last = prods[:, 0], prods[:, 1]  # (B, n + 1)
        beta_last = (s_dot_last[:, newest] + tiny).reciprocal_()  # 1 / ||s_n||^2, finite

        # direction = -H_n F = -F - sum_j beta_j y_j s_{j+1}, (I - L) y = S^T F over the n factors.
        if newest > 0:
            y = torch.linalg.solve_triangular(system[:, :newest, :newest], s_dot_F[:, :newest, None],
                                              upper=False, unitriangular=True)  # (B, n, 1)
            coef = beta[:, :newest] * y[:, :, 0]  # (B, n) weights of the steps s_1..s_n
            minus_dot = torch.linalg.vecdot(coef, s_dot_last[:, 1:]).add_(s_dot_F[:, newest])  # -s_n^T dir
        else:
            coef = s_dot_F[:, :0]
            minus_dot = s_dot_F[:, 0]
        # Row n of the system, used from the next iteration on (factor n exists then).
        torch.mul(s_dot_last[:, 1:], beta[:, :newest], out=system[:, newest, :newest]).neg_()

        # New factor E_n = I + beta_n s_{n+1} s_n^T, so s_{n+1} = direction / (1 - beta_n s_n^T direction).
        denom = (beta_last * minus_dot).add_(1.0)
        usable = denom.abs() > skip_below  # else the update is skipped: E_n = I, s_{n+1} = direction
        torch.mul(beta_last, usable, out=beta[:, newest])
        minus_scale = torch.where(usable, denom, ones).reciprocal_().mul_(neg_active)  # 0 when frozen

        # Combination pass: s_{n+1} = -scale (F + sum_j coef_j s_{j+1}) over rows [F, s_0, ..., s_n].
        weights = torch.cat((f_coef, coef), dim=1).mul_(minus_scale[:, None])  # (B, n + 2)
        if not wrapped and len(order) < capacity:
            torch.bmm(weights[:, None], buf[:newest + 2].transpose(0, 1), out=buf[newest + 2, :, None])
            order.append(newest + 2)
            continue
        if wrapped:  # weights by row; the oldest step (row order[0]) has weight 0
            by_row = weights.new_zeros(batch, capacity + 1)
            by_row[:, torch.tensor([0] + order, device=z.device)] = weights
            weights = by_row
        step = torch.bmm(weights[:, None], buf.transpose(0, 1))  # (B, 1, D)
        # Ring full: the new step replaces the oldest one, whose factor is dropped.
        row = order.pop(0)
        buf[row] = step[:, 0]
        order.append(row)
        wrapped = True
        system[:, :-1, :-1] = system[:, 1:, 1:].clone()
        beta[:, :-1] = beta[:, 1:].clone()
    return tracker.result(shape)
