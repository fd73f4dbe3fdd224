"""Small solver test problems shared by several test files (``from solver_problems import ...``)."""
from __future__ import annotations

import torch


def skew_and_contraction() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, c, z0) of f(z) = a_i z + c_i for 2 samples in 2 dimensions, float64.

    Sample 0: F(z) = J z - c with J nearly skew (f(z) = (I - J) z + c), so s^T J s is about
    1e-10 s^T s and every Broyden update's denominator 1 - beta_n s_n^T direction is about
    1e-10, under sqrt(eps): each update must be skipped. Sample 1 is a contraction beside it.
    """
    skew = torch.tensor([[1e-10, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    a = torch.stack([torch.eye(2, dtype=torch.float64) - skew,
                     0.3 * torch.randn(2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)])
    c = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    return a, c, torch.zeros(2, 2, dtype=torch.float64)
