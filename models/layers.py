"""Small building blocks shared by the cells: variational dropout, weight norm, causal conv.

Variational dropout (Gal & Ghahramani 2016) draws ONE mask per sequence and feature,
shared across time steps and across every call of the cell during one model forward:
the solver iterations of a DEQ, the layers of a weight-tied stack, the function
evaluations of a Neural ODE and the recomputation of a checkpointed segment all see
the same mask, so the cell stays one fixed function and a fixed point exists. The mask
is drawn lazily at the first call after ``reset_variational_dropout`` (called by the
model at the start of each forward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class VariationalDropout(nn.Module):
    """Dropout on (B, T, D) tensors with a (B, 1, D) mask kept until ``reset()``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {p}")
        self.p = p
        self.mask: torch.Tensor | None = None  # per-forward state, not a buffer

    def reset(self) -> None:
        self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        batch, _, features = x.shape
        mask = self.mask
        if (mask is None or mask.shape != (batch, 1, features)
                or mask.device != x.device or mask.dtype != x.dtype):
            keep = 1.0 - self.p
            mask = x.new_empty(batch, 1, features).bernoulli_(keep).div_(keep)  # (B, 1, D)
            self.mask = mask
        return x * mask


def reset_variational_dropout(module: nn.Module) -> None:
    """Forget the masks of every VariationalDropout inside ``module`` (next call draws new ones)."""
    for sub in module.modules():
        if isinstance(sub, VariationalDropout):
            sub.reset()


def apply_weight_norm(module: nn.Module) -> nn.Module:
    """Weight-normalise (w = g v / ||v||) every Linear and Conv1d inside ``module``, in place."""
    for sub in list(module.modules()):
        if isinstance(sub, (nn.Linear, nn.Conv1d)):
            weight_norm(sub, name="weight", dim=0)
    return module


def causal_conv1d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Apply ``conv`` over time with left padding only; (B, T, C_in) -> (B, T, C_out).

    Output at position t depends on inputs at t - k + 1 .. t (k = kernel size).
    """
    (kernel,) = conv.kernel_size
    (dilation,) = conv.dilation
    x = x.transpose(1, 2)  # (B, C_in, T)
    x = F.pad(x, ((kernel - 1) * dilation, 0))  # (B, C_in, T + pad)
    return conv(x).transpose(1, 2)  # (B, T, C_out)
