"""Cells: the function f(z, injection) -> z' that every depth strategy applies.

A cell maps a hidden sequence z of shape (B, T, D) to a new one of the same shape,
given an input injection computed once per forward from the embedded tokens x::

    injection = cell.prepare_injection(x)   # once, outside any loop / solver
    z_next = cell(z, injection)             # many times: layers, solver steps, ODE evals

Cells are causal in time: z'[:, t] depends only on z[:, :t+1] and x[:, :t+1].

- ``TransformerCell``: DEQ-Transformer style block (Bai et al. 2019): causal
  multi-head self-attention with a learned relative-position bias per head, a GELU
  feed-forward, input injection added to z, a final LayerNorm. Attention and
  feed-forward outputs are scaled down at initialisation, which makes the cell
  contractive at init (the final LayerNorm divides the identity path by the norm of
  z + injection), so fixed-point solvers converge from the first step.
- ``TrellisNetCell``: TrellisNet style (Bai et al. 2019b): a causal temporal
  convolution over [z, injection] (the injection part is convolved once) followed by
  a gated activation, GLU (tanh * sigmoid) or LSTM-like (z = [h, c] halves, c carried
  from time t-1 as in TrellisNet).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import VariationalDropout, apply_weight_norm, causal_conv1d

# Output projections of the attention and feed-forward branches start this much smaller
# than PyTorch's default init, so the cell is contractive at initialisation.
_BRANCH_INIT_SCALE = 0.1


class Cell(nn.Module):
    """Interface of a cell: subclasses implement ``prepare_injection`` and ``forward``."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        """Raise ValueError if ``cfg`` cannot build this cell."""

    def prepare_injection(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens (B, T, D) -> injection tensor (B, T, *) used by every call."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TransformerCell(Cell):
    """z' = LN(h + FF(LN(h))), h = u + Attn(LN(u)), u = z + inject(LN(x)); causal attention."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        if cfg.d_model % cfg.n_head != 0:
            raise ValueError(f"model.n_head: d_model={cfg.d_model} must be divisible by "
                             f"n_head={cfg.n_head}")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, self.n_head = cfg.d_model, cfg.n_head
        self.max_rel_distance = cfg.max_rel_distance
        self.inject_norm = nn.LayerNorm(d)
        self.inject = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        # rel_bias[h, k]: score bias of head h for a key k positions back (k clipped).
        self.rel_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.max_rel_distance + 1))
        self.ff_norm = nn.LayerNorm(d)
        self.ff_in = nn.Linear(d, cfg.d_inner)
        self.ff_out = nn.Linear(cfg.d_inner, d)
        self.out_norm = nn.LayerNorm(d)
        self.attn_drop = VariationalDropout(cfg.dropout)
        self.ff_drop = VariationalDropout(cfg.dropout)
        with torch.no_grad():
            self.attn_out.weight.mul_(_BRANCH_INIT_SCALE)
            self.ff_out.weight.mul_(_BRANCH_INIT_SCALE)
            self.attn_out.bias.zero_()
            self.ff_out.bias.zero_()
        self._index_cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        if cfg.weight_norm:
            apply_weight_norm(self)

    def _relative_index(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached (T, T) index into rel_bias (distance i - j clipped) and (T, T) future mask."""
        key = (seq_len, str(device))
        cached = self._index_cache.get(key)
        if cached is None:
            pos = torch.arange(seq_len, device=device)
            dist = pos[:, None] - pos[None, :]  # (T, T)
            cached = (dist.clamp(min=0, max=self.max_rel_distance), dist < 0)
            self._index_cache = {key: cached}  # keep only the latest length
        return cached

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq_len, d = x.shape
        head_dim = d // self.n_head
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, T, D)
        q = q.view(batch, seq_len, self.n_head, head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(batch, seq_len, self.n_head, head_dim).transpose(1, 2)
        v = v.view(batch, seq_len, self.n_head, head_dim).transpose(1, 2)
        index, future = self._relative_index(seq_len, x.device)
        bias = self.rel_bias[:, index].masked_fill(future, float("-inf"))  # (H, T, T)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim)) + bias  # (B, H, T, T)
        probs = torch.softmax(scores, dim=-1)
        y = probs @ v  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(batch, seq_len, d)  # (B, T, D)
        return self.attn_out(y)

    def prepare_injection(self, x: torch.Tensor) -> torch.Tensor:
        return self.inject(self.inject_norm(x))  # (B, T, D)

    def forward(self, z: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        u = z + injection  # (B, T, D)
        h = u + self.attn_drop(self._attention(self.attn_norm(u)))
        ff = self.ff_out(F.gelu(self.ff_in(self.ff_norm(h))))  # (B, T, d_inner) -> (B, T, D)
        h = h + self.ff_drop(ff)
        return self.out_norm(h)


class TrellisNetCell(Cell):
    """Gated causal convolution over [z, x]: z' = gate(conv(z) + conv(x)); kernel ``kernel_size``."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        if cfg.gate == "lstm" and cfg.d_model % 2 != 0:
            raise ValueError(f"model.d_model: gate 'lstm' splits z into [h, c] and needs an even "
                             f"d_model, got {cfg.d_model}")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, self.gate = cfg.d_model, cfg.gate
        # GLU: 2 chunks of D (value, gate); LSTM: 4 gates of D/2 over the hidden half h.
        hidden_in = d if self.gate == "glu" else d // 2
        self.inject_conv = nn.Conv1d(d, 2 * d, cfg.kernel_size)
        self.hidden_conv = nn.Conv1d(hidden_in, 2 * d, cfg.kernel_size, bias=False)
        self.drop = VariationalDropout(cfg.dropout)
        if cfg.weight_norm:
            apply_weight_norm(self)

    def prepare_injection(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv1d(self.inject_conv, x)  # (B, T, 2D)

    def forward(self, z: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        if self.gate == "glu":
            pre = causal_conv1d(self.hidden_conv, self.drop(z)) + injection  # (B, T, 2D)
            value, gate = pre.chunk(2, dim=-1)  # 2 x (B, T, D)
            return torch.tanh(value) * torch.sigmoid(gate)
        h, c = z.chunk(2, dim=-1)  # 2 x (B, T, D/2)
        pre = causal_conv1d(self.hidden_conv, self.drop(h)) + injection  # (B, T, 2D)
        in_gate, forget_gate, out_gate, cand = pre.chunk(4, dim=-1)  # 4 x (B, T, D/2)
        c_prev = F.pad(c, (0, 0, 1, 0))[:, :-1]  # c at time t-1, zeros at t = 0
        c_new = torch.sigmoid(forget_gate) * c_prev + torch.sigmoid(in_gate) * torch.tanh(cand)
        h_new = torch.sigmoid(out_gate) * torch.tanh(c_new)
        return torch.cat([h_new, c_new], dim=-1)  # (B, T, D)
