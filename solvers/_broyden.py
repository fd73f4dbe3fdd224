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

Cost per iteration outside f: the large passes z + s, z - f(z) (into the buffer),
||f(z)||, the reduction (it also yields F^T F, whose root is the residual norm) and the
combination; ``python -m solvers.bench`` times them alone as the floor. The work on the
small per-sample matrices is done on the host, in float64, from one read of the
reduction's result per iteration (the one host sync the stop test needs anyway; on a GPU
one small copy each way): a dozen tiny torch operations would cost more on a CPU, and as
many kernel launches on a GPU. diag(beta) (I - L)^{-1} is kept whole, with its columns
placed by the buffer row of their step, and grown by one row per factor, so
beta * (I - L)^{-1} S^T F, whose entries are the combination's weights, is one small
matrix product with the reduction's result as it comes. On a CPU that host work is what
the solve costs beyond the floor, and it costs more than it does alone: after f, whose
kernels have run through the caches, each NumPy call was measured at 3-12 us instead of
about 1, and a dozen of them (50-75 us) between two f evaluations made the next f 10-80
us slower (the same work in torch: 120-165 us, and f 10-330 us slower; both ranges
varied with the machine's state over a day; studies/solver_host_work). So the host work
is one call per iteration into a small C extension (``solvers._native``, built on first
use), which also gives the residual norms and the stop test's common case; where it cannot
be built, a few NumPy calls (two small products and the writes around them) with the
per-sample scalar steps in plain Python over the B samples, the same iterates (bitwise in
float32; tests/test_native.py). On the bench's problem (target (2), 2026-12-01) Broyden
measured 1.02-1.04 times its floor with the compiled call (1.03-1.10 while the machine was
noisy), 1.06 with the NumPy code, and 1.06-1.08 before this round. The host arrays are set
up before the first f evaluation, while the caches are warm. On CUDA the reduction splits
each sample into chunks (``reduction_chunks``), and both products run in full float32 even
where the user allows TF32 for f (``exact_products``).

Per sample: its own steps, small matrices and factors; samples that converged (or met
non-finite values) take zero steps from then on. An update whose denominator
1 - beta_n s_n^T z is under sqrt(machine eps) in size is skipped (beta_n = 0, E_n = I); a
non-finite one makes the sample fail (its next residual is non-finite), and it is frozen
on its last finite iterate.

Limited memory, ``memory=m``: m + 1 steps are stored, so a step is made with at most
m + 1 factors; what happens once they are all in use is ``memory_policy``:

* "restart" (the default): Kelley's restart (C. T. Kelley, "Iterative Methods for Linear
  and Nonlinear Equations", SIAM 1995, ch. 7, brsol, and ch. 8, brsola; "Solving Nonlinear
  Equations with Newton's Method", SIAM 2003, ch. 4, brsola: "out of room, time to
  restart"). When the memory is full, the stored factors are cleared and the iteration
  starts again from the current iterate with H = I: after the steps s_0 (= -F), s_1, ...,
  s_{m+1} the next step is -F again, at no extra f evaluation, and the next cycle makes its
  own m + 1 updates. Its iterates are those of a fresh solve from that iterate, and until
  the first restart they are the full-memory ones.
* "drop_oldest": the oldest factor is dropped (as in L-BFGS) and the new step takes its
  row in a ring buffer. The factors left no longer come from one Broyden solve, and on
  ill-conditioned problems the iteration can stall: on f(z) = A z + b, n = 200, A symmetric
  with eigenvalues spread over [0, 0.99], its residual was still above 1e-3 after 300
  evaluations at every m from 5 to 30, where the restart gets under 1e-6 within 110-170
  (tests/test_broyden_memory.py).

All samples fill their memory at the same iteration (a stopped sample's steps are zero),
so a restart happens for all of them at once, and a sample's iterates do not depend on its
batch mates. With ``memory=None`` (or m + 1 >= max_iter - 1) the memory never fills and
the policy plays no part.
"""
from __future__ import annotations

from math import sqrt
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ._common import (REL_EPS, IterateTracker, SolverResult, check_options, check_positive_int, exact_products,
                      flatten_problem, restore_dtype)
from ._native import native


CHUNK_TARGET = 8192  # on CUDA: reduction chunks of at least this many elements per sample
MEMORY_POLICIES = ("restart", "drop_oldest")


def reduction_chunks(dim: int, device: torch.device) -> int:
    """How many chunks to split each sample's D elements into for the reduction: 1 on a CPU;
    on CUDA the largest power of two that leaves chunks of at least ``CHUNK_TARGET``. A batched
    product over B samples of length D gives cuBLAS only B blocks of work, about 0.6 ms at
    B=32, D=131072 on an H200 whatever the number of steps; B x chunks shorter products,
    summed, take 0.07-0.18 ms. On a CPU the plain product is as fast or faster."""
    chunks = 1
    if device.type == "cuda":
        while dim % (2 * chunks) == 0 and dim // (2 * chunks) >= CHUNK_TARGET:
            chunks *= 2
    return chunks


def pair_products(pair: Tensor, stored: Tensor, chunks: int = 1) -> Tensor:
    """(B, 2, r): per sample, the dot products of rows ``pair`` (2, B, D) with rows ``stored``
    (r, B, D), both views of row-first buffers; each sample's D split into ``chunks``."""
    rows, batch, dim = stored.shape
    if chunks == 1:
        return torch.bmm(pair.transpose(0, 1), stored.permute(1, 2, 0))  # (B, 2, D) @ (B, D, r)
    part = dim // chunks
    left = pair.view(2, batch, chunks, part).permute(1, 2, 0, 3).reshape(batch * chunks, 2, part)  # a view
    right = stored.view(rows, batch, chunks, part).permute(1, 2, 3, 0).reshape(batch * chunks, part, rows)
    return torch.bmm(left, right).view(batch, chunks, 2, rows).sum(dim=1)


def _first_step(out: Tensor, F: Tensor, tracker: IterateTracker) -> None:
    """out = -F (the step of H = I) for the active samples, 0 for the others."""
    if tracker.n_active == tracker.batch:
        torch.neg(F, out=out)
    else:
        torch.mul(F, -tracker.active_mask.to(F.dtype)[:, None], out=out)


def broyden(f: Callable[[Tensor], Tensor], z0: Tensor, *, max_iter: int = 50, tol: float = 1e-3,
            stop_mode: str = "abs", memory: int | None = None, memory_policy: str = "restart") -> SolverResult:
    """Find z = f(z) per sample with Broyden's method; see the module docstring.

    f: maps (B, ...) to (B, ...), sample by sample. z0: (B, ...) initial guess.
    max_iter: f evaluations allowed (the first one measures z0). tol, stop_mode: a sample
    stops once its "abs" or "rel" residual is under tol. memory: rank-one updates kept
    (None: all, at most max_iter - 2 are ever made). memory_policy: what a full memory does,
    "restart" (Kelley's restart: clear the updates, start again from the current iterate) or
    "drop_oldest" (drop the oldest update). Runs without building a graph.
    """
    check_options("broyden", max_iter, tol, stop_mode)
    if memory is not None:
        check_positive_int("broyden", "memory", memory)
    if not isinstance(memory_policy, str) or memory_policy not in MEMORY_POLICIES:
        raise ValueError(f"broyden: memory_policy must be one of {MEMORY_POLICIES}, got {memory_policy!r}")
    f_flat, z = flatten_problem("broyden", f, z0)
    with torch.no_grad():
        res = _broyden_flat(f_flat, z, z0.shape, max_iter, tol, stop_mode, memory, memory_policy == "restart")
    return restore_dtype(res, z0.dtype)


def _broyden_flat(f_flat: Callable[[Tensor], Tensor], z: Tensor, shape: torch.Size, max_iter: int,
                  tol: float, stop_mode: str, memory: int | None, restart: bool) -> SolverResult:
    batch, dim = z.shape
    tracker = IterateTracker(z, tol, stop_mode)
    capacity = max_iter - 1 if memory is None else min(memory + 1, max_iter - 1)  # steps kept
    # The small per-sample matrices live on the host, in float64 (see the module docstring). They
    # are set up before the first f evaluation, while the host's caches are still warm:
    # scaled = diag(beta) (I - L)^{-1}, L_ij = beta_j s_i^T s_{j+1} (j < i), rows chronological
    # (row 0: oldest factor kept), columns placed by the buffer row of their step (column 0: s_0,
    # column k + 1: s_k; column 1, F's row, all zero). Then u = scaled S^T F = beta * y, with
    # y = (I - L)^{-1} S^T F, is one product with the reduction's row of F as it comes (F^T F
    # meets the zero column), and gives the combination's weights as they are. (I - L) M = I gives
    # row n of M as e_n + L_n M, so row n of scaled is beta_n (e_n + sum_j (s_n^T s_{j+1}) scaled_j):
    # it grows by one row per factor, written whole before it is read (a restart needs no reset);
    # dropping the oldest factor keeps the trailing rows and clears the column of its step's row.
    scaled = np.zeros((batch, capacity, capacity + 1))  # (B, C, C + 1)
    u_after_one = np.ones((batch, capacity + 1))  # (B, C + 1): 1, then u (written each iteration)
    skip_below = float(torch.finfo(z.dtype).eps) ** 0.5
    tiny = float(torch.finfo(z.dtype).tiny)
    on_cpu = z.device.type == "cpu"
    # The combination weights, by buffer row: on a CPU written in place through a NumPy view of
    # the tensor the product reads; elsewhere copied to the device each iteration.
    mix = torch.zeros(batch, 1, capacity + 1, dtype=z.dtype)  # (B, 1, C + 1)
    weights = mix.numpy()
    if not on_cpu:
        mix_device = torch.empty_like(mix, device=z.device)
    chunks = reduction_chunks(dim, z.device)
    exact = exact_products(z.device)  # full float32 products on CUDA; a no-op on a CPU
    # The compiled small math (solvers._native), when it builds: one call per iteration does
    # what the NumPy code below does, and the residual norms. None: the NumPy code.
    lib = native()
    kernel = lib.small_math if lib is not None else None
    if kernel is not None:
        is_f64 = z.dtype == torch.float64
        later_rows = np.arange(2, capacity + 2, dtype=np.int64)  # buffer rows of s_1..s_n (ring not full)
        weight_cols = np.arange(capacity + 1, dtype=np.int64)  # weights of F, s_1..s_n (ring not full)
        scratch = np.empty(2 * batch)  # the kernel's residuals, before they become lists
        rows_pointers = (later_rows.ctypes.data, weight_cols.ctypes.data)
        state_pointers = (scaled.ctypes.data, u_after_one.ctypes.data, weights.ctypes.data)
        scratch_pointer = scratch.ctypes.data
        active_seen, active_pointer = None, 0
    # Rows first, (C + 1, B, D), each row contiguous: row 1 holds F = z - f(z) of the current
    # iterate, the others the steps: s_0 in row 0, then s_k in row k + 1 until the ring is
    # full (after that, "drop_oldest": a new step takes the row of the oldest one; "restart":
    # s_{m+1} takes row 0, and the next iteration starts again with s_0 = -F in row 0). So
    # [F, s_1, ..., s_n], what the combination reads, are the contiguous rows 1..n+1, it writes
    # s_{n+1} straight into row n + 2, and the reduction reads rows 0..n+1: the steps and F
    # (F^T F is the residual).
    buf = z.new_empty(max(capacity, 1) + 1, batch, dim)  # (C + 1, B, D)
    F = buf[1]
    fz = f_flat(z)
    torch.sub(z, fz, out=F)
    tracker.observe(z, fz, F)
    if max_iter == 1 or not tracker.any_active:
        return tracker.result(shape)
    if tracker.failed_rows:  # non-finite already at z0: F = 0 keeps those rows finite
        F.index_fill_(0, tracker.rows(tracker.failed_rows), 0.0)
    _first_step(buf[0], F, tracker)  # s_0 = -H0 F = f(z0) - z0 (zero for converged samples)
    order = [0]  # rows of the steps, chronological
    wrapped = False  # "drop_oldest" only: the ring is full
    restarting = False  # "restart" only: this iteration starts a new cycle (its step is -F)

    with np.errstate(all="ignore"):  # stopped samples may carry inf/NaN in the small math; never used
        while True:
            newest = len(order) - 1  # chronological index n of the newest step; n factors exist
            last = order[-1]
            z_next = z + buf[last]
            fz = f_flat(z_next)
            torch.sub(z_next, fz, out=F)
            fz_norm = torch.linalg.vector_norm(fz, dim=1)  # (B,)
            # Reduction pass: rows [F, s_n] against rows 0..n+1 (all rows once the ring is full).
            cols = capacity + 1 if wrapped else newest + 2  # buffer rows in use
            # rows F and s_n, a strided view; with s_n in row 0, rows [s_n, F], read back swapped
            pair = buf[1:last + 1:last - 1] if last > 1 else buf[0:2]  # (2, B, D)
            with exact:
                prods = pair_products(pair, buf[:cols], chunks)  # (B, 2, cols)
            if on_cpu:
                host, fz_host = prods, fz_norm
            else:  # one copy to the host per iteration
                packed = torch.cat((prods.reshape(-1), fz_norm)).cpu().numpy()
                host, fz_host = packed[:prods.numel()].reshape(prods.shape), packed[prods.numel():]
            if kernel is not None:
                # Compiled: the residual norms, and (unless this iteration restarts) the small math
                # of the samples active so far, done before the stop test: a sample that stops here
                # gets its weights cleared below, and its small math is never read again.
                if tracker.active is not active_seen:  # replaced, never changed in place
                    active_seen, active_pointer = tracker.active, tracker.active.ctypes.data
                if wrapped:
                    later, placed = np.array(order[1:], np.int64), np.array([1, *order[1:]], np.int64)
                    pointers = (later.ctypes.data, placed.ctypes.data)
                else:
                    pointers = rows_pointers
                if on_cpu:
                    prods_pointer, fz_pointer = host.data_ptr(), fz_host.data_ptr()
                else:
                    prods_pointer = host.ctypes.data
                    fz_pointer = prods_pointer + host.nbytes
                n_active = tracker.n_active
                tracker.record_residuals(z_next, *kernel(
                    is_f64, batch, capacity, cols, newest, last, last <= 1, prods_pointer, *pointers, wrapped,
                    active_pointer, *state_pointers, fz_pointer, REL_EPS, tiny, skip_below, not restarting,
                    scratch_pointer, tracker.best_metric, tracker.tol, tracker.use_rel))
                if tracker.nstep >= max_iter or not tracker.any_active:
                    break
                if tracker.n_active != n_active:  # stopped just now: no more steps
                    weights[~tracker.active] = 0.0
            else:
                host = (host.numpy() if on_cpu else host).astype(np.float64, copy=False)  # (B, 2, cols), by buffer row
                F_dot, last_dot = (host[:, 0], host[:, 1]) if last > 1 else (host[:, 1], host[:, 0])
                tracker.record(z_next, [sqrt(x) for x in F_dot[:, 1].tolist()], fz_host.tolist())
                if tracker.nstep >= max_iter or not tracker.any_active:
                    break
            if tracker.failed_rows:  # back to the last finite iterate, frozen; F = 0 keeps it finite
                z_next = tracker.roll_back_failed(z_next, z)
                F.index_fill_(0, tracker.rows(tracker.failed_rows), 0.0)
            z = z_next
            if restarting:  # Kelley's restart: no factors, s_0 = -F at this iterate (row 0)
                _first_step(buf[0], F, tracker)
                restarting = False
                continue

            if kernel is None:  # the NumPy code the compiled call replaces
                all_active = tracker.n_active == batch
                # Row n of scaled; u = beta * y, chronological. With direction = -H_n F
                # = -F - sum_{j<n} u_j s_{j+1}, y_n = u_n / beta_n is -s_n^T direction.
                later = last_dot[:, order[1:]] if wrapped else last_dot[:, 2:cols]  # s_n^T s_1..s_n
                row = np.matmul(later[:, None], scaled[:, :newest, :cols])  # (B, 1, cols)
                row[:, 0, last] = 1.0
                # per sample, in Python floats (cheaper here than a chain of tiny NumPy operations)
                beta_last = [1.0 / (x + tiny) for x in last_dot[:, last].tolist()]  # 1 / ||s_n||^2
                np.multiply(row, np.array(beta_last)[:, None, None], out=scaled[:, newest:newest + 1, :cols])
                u = u_after_one[:, 1:newest + 2]  # (B, n + 1)
                np.matmul(scaled[:, :newest + 1, :cols], F_dot[:, :, None], out=u[:, :, None])

                # New factor E_n = I + beta_n s_{n+1} s_n^T, so s_{n+1} = direction / (1 - beta_n s_n^T direction),
                # with 1 - beta_n s_n^T direction = 1 + u_n. Where that is under sqrt(eps) in size, the update
                # is skipped (E_n = I, s_{n+1} = direction, beta_n = 0).
                minus_scale, skipped = [], []
                for i, x in enumerate(u[:, newest].tolist()):
                    if abs(x + 1.0) > skip_below:
                        minus_scale.append(-1.0 / (x + 1.0))
                    else:
                        minus_scale.append(-1.0)
                        skipped.append(i)
                if skipped:  # beta_n = 0 (a stopped sample's small math is never used: its weights are 0)
                    scaled[skipped, newest] = 0.0
                minus_scale = np.array(minus_scale)

                # Combination pass: s_{n+1} = -scale (F + sum_j u_j s_{j+1}), weights by buffer row.
                if wrapped:  # every row; the oldest step (row order[0]) has weight 0
                    weights.fill(0.0)
                    weights[:, 0, order[1:]] = u[:, :newest] * minus_scale[:, None]
                    weights[:, 0, 1] = minus_scale
                    if not all_active:
                        weights[~tracker.active] = 0.0
                else:  # rows 1..n+1: F, then s_1..s_n
                    used = weights[:, 0, :newest + 1]  # [1, u_0, ..., u_{n-1}] times -scale
                    np.multiply(u_after_one[:, :newest + 1], minus_scale[:, None], out=used)
                    if not all_active:
                        used[~tracker.active] = 0.0
            if wrapped:  # every row; the oldest step (row order[0]) has weight 0
                mixed, rows = mix, buf
            else:  # rows 1..n+1: F, then s_1..s_n
                mixed, rows = mix[:, :, :newest + 1], buf[1:newest + 2]
            if not on_cpu:
                mix_device.copy_(mix)
                mixed = mix_device[:, :, :mixed.shape[2]]
            if not wrapped and len(order) < capacity:
                with exact:
                    torch.bmm(mixed, rows.transpose(0, 1), out=buf[newest + 2, :, None])
                order.append(newest + 2)
                continue
            if restart:  # memory full: s_{m+1} takes row 0 (the combination does not read s_0), then restart
                with exact:
                    torch.bmm(mixed, rows.transpose(0, 1), out=buf[0, :, None])
                order = [0]
                restarting = True
                continue
            with exact:
                step = torch.bmm(mixed, rows.transpose(0, 1))  # (B, 1, D)
            # Ring full: the new step replaces the oldest one, whose factor is dropped.
            row_id = order.pop(0)
            buf[row_id] = step[:, 0]
            order.append(row_id)
            wrapped = True
            scaled[:, :-1] = scaled[:, 1:].copy()
            scaled[:, :, row_id] = 0.0
    return tracker.result(shape)
