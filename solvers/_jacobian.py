"""Jacobian diagnostics of f at a fixed point, from vector-Jacobian products only.

* ``jacobian_spectral_radius``: power iteration v <- v J / ||v J|| per sample. The
  growth ||v J|| / ||v|| tends to the spectral radius rho(J_f(z*)); when the dominant
  eigenvalues are a complex pair the growth oscillates, so the estimate is the geometric
  mean of the growth over the second half of the iterations. rho < 1 means the fixed
  point is locally attracting for plain iteration; near or above 1 the solvers struggle.
* ``jacobian_frobenius_loss``: Hutchinson's estimate E_eps ||eps^T J||^2 = ||J||_F^2 with
  eps ~ N(0, I), divided by the state size; differentiable, so it can be added to the
  training loss as the Jacobian regulariser of Bai, Koltun and Kolter (ICML 2021,
  "Stabilizing Equilibrium Models by Jacobian Regularization").
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def jacobian_spectral_radius(f: Callable[[Tensor], Tensor], z_star: Tensor, *, n_iter: int = 50,
                             generator: torch.Generator | None = None) -> Tensor:
    """Estimate rho(J_f(z_star)) per sample, shape (B,), by power iteration with VJPs."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 2:
        raise ValueError(f"jacobian_spectral_radius: n_iter must be an integer >= 2, got {n_iter!r}")
    batch = z_star.shape[0]
    with torch.enable_grad():
        z = z_star.detach().requires_grad_()
        fz = f(z)
        v = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
        v = v / torch.linalg.vector_norm(v.reshape(batch, -1), dim=1).reshape(-1, *[1] * (z.dim() - 1))
        log_growth = []
        for i in range(n_iter):
            (vjp,) = torch.autograd.grad(fz, z, v, retain_graph=i < n_iter - 1, allow_unused=True)
            if vjp is None:  # f does not depend on z
                return torch.zeros(batch, dtype=z.dtype, device=z.device)
            norm = torch.linalg.vector_norm(vjp.reshape(batch, -1), dim=1)  # (B,) since ||v|| = 1
            log_growth.append(torch.log(norm))
            safe = torch.where(norm > 0, norm, 1.0).reshape(-1, *[1] * (z.dim() - 1))
            v = vjp / safe
    tail = torch.stack(log_growth[n_iter // 2:], dim=1)  # (B, n_iter - n_iter // 2)
    return torch.exp(tail.mean(dim=1)).detach()


def jacobian_frobenius_loss(f_z: Tensor, z: Tensor, n_samples: int = 1, *,
                            create_graph: bool = True) -> Tensor:
    """Hutchinson estimate of ||J_f(z)||_F^2 / (state size), a scalar.

    f_z must have been computed from z with grad enabled (z.requires_grad). The result is
    averaged over the batch (divided by z.numel()) and over ``n_samples`` probe vectors.
    With create_graph=True (default) it can be backpropagated as a regulariser.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"jacobian_frobenius_loss: n_samples must be an integer >= 1, got {n_samples!r}")
    if not (isinstance(z, Tensor) and z.requires_grad and isinstance(f_z, Tensor) and f_z.requires_grad):
        raise ValueError("jacobian_frobenius_loss: f_z must be computed from z with grad "
                         "(z.requires_grad and f_z.requires_grad must both be True)")
    total = f_z.new_zeros(())
    for i in range(n_samples):
        probe = torch.randn_like(f_z)
        (vjp,) = torch.autograd.grad(f_z, z, probe, retain_graph=True, create_graph=create_graph)
        total = total + vjp.pow(2).sum()
    return total / (n_samples * z.numel())
