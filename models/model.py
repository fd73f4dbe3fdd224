"""DepthModel: token embedding -> depth strategy (cell) -> task head.

    tokens (B, T) --embedding * sqrt(D)--> x (B, T, D) --strategy--> z (B, T, D)
                  --head(z, targets)--> loss, logits

The embedding is initialised with std 1/sqrt(D) and scaled by sqrt(D), so x has unit
scale while a tied output matrix starts with logits of order one. Dropout on x and z
(``emb_dropout``) is ordinary dropout outside the depth loop; dropout inside the cell is
variational (see ``models.layers``); its masks are reset at each forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .config import ModelConfig
from .depth import DepthStrategy
from .heads import Head
from .layers import reset_variational_dropout


@dataclass
class ModelOutput:
    """Result of one forward. ``loss`` includes auxiliary losses (DEQ Jacobian regulariser)."""

    loss: torch.Tensor  # scalar with grad: mean token NLL (nats) [+ aux loss in training]
    nll_sum: float  # detached sum of token NLL (no aux loss)
    n_tokens: int  # tokens counted in nll_sum
    logits: Optional[torch.Tensor]  # (B, T, C); None for adaptive softmax
    stats: dict[str, float]  # forward statistics, always with "nfe"
    _backward_stats: Callable[[], dict[str, float]] = field(default=lambda: {}, repr=False)

    def backward_stats(self) -> dict[str, float]:
        """Statistics of the backward pass; call after loss.backward() ({} if none)."""
        return self._backward_stats()


class DepthModel(nn.Module):
    """A cell wrapped by a depth strategy, between a token embedding and a task head."""

    def __init__(self, cfg: ModelConfig, strategy: DepthStrategy, make_head: Callable[..., Head]) -> None:
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embedding.weight, std=1.0 / math.sqrt(cfg.d_model))
        self.emb_scale = math.sqrt(cfg.d_model)
        self.emb_drop = nn.Dropout(cfg.head_dropout)
        self.strategy = strategy
        self.out_drop = nn.Dropout(cfg.head_dropout)
        self.head = make_head(cfg, self.embedding)

    def set_step(self, step: int) -> None:
        """Tell the model the global training step (DEQ warm-up, Jacobian-reg. frequency)."""
        self.strategy.set_step(step)

    def param_counts(self) -> dict[str, int]:
        """Parameter counts: {"total", "embedding", "non_embedding"}.

        ``embedding`` = token embedding + the output head (full-softmax matrix and bias,
        adaptive-softmax head and tail clusters, or the copy classifier); a matrix tied
        to the embedding is counted once. ``non_embedding`` = everything in the depth
        strategy: the cell(s), with their injection layers and relative-position biases.
        """
        def unique_count(params) -> int:
            seen: dict[int, int] = {}
            for p in params:
                seen[id(p)] = p.numel()
            return sum(seen.values())

        total = unique_count(self.parameters())
        embedding = unique_count([*self.embedding.parameters(), *self.head.parameters()])
        return {"total": total, "embedding": embedding, "non_embedding": total - embedding}

    @property
    def has_equilibrium(self) -> bool:
        """Whether the strategy has a fixed point to analyse (``spectral_radius`` not None)."""
        return type(self.strategy).spectral_radius is not DepthStrategy.spectral_radius

    @torch.no_grad()
    def analysis(self, tokens: torch.Tensor) -> Optional[dict]:
        """The strategy's equilibrium analysis for ``tokens`` (B, T), dropout off: a DEQ's
        solvers' residual against iteration (``rel_residual``: solver -> list), a stack's
        layer differences ||z[i+1] - z[i]|| / ||z[i+1]|| (``layer_diff``); None otherwise."""
        was_training = self.training
        self.eval()
        try:
            return self.strategy.analysis(self.embedding(tokens) * self.emb_scale)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def spectral_radius(self, tokens: torch.Tensor, n_iter: int = 20) -> Optional[torch.Tensor]:
        """The strategy's rho(J_f(z*)) per sample (B,) for ``tokens`` (B, T), or None for a
        strategy without an equilibrium. Dropout is off for it whatever the mode."""
        was_training = self.training
        self.eval()
        try:
            x = self.embedding(tokens) * self.emb_scale  # (B, T, D)
            return self.strategy.spectral_radius(x, n_iter=n_iter)
        finally:
            self.train(was_training)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> ModelOutput:
        if tokens.dim() != 2 or targets.shape != tokens.shape:
            raise ValueError(f"tokens and targets: expected two (B, T) tensors of the same shape, got "
                             f"{tuple(tokens.shape)} and {tuple(targets.shape)}")
        reset_variational_dropout(self)
        x = self.emb_drop(self.embedding(tokens) * self.emb_scale)  # (B, T, D)
        depth = self.strategy(x)
        z = self.out_drop(depth.z)  # (B, T, D)
        head = self.head(z, targets)
        loss = head.loss if depth.aux_loss is None else head.loss + depth.aux_loss
        return ModelOutput(loss=loss, nll_sum=float(head.nll_sum), n_tokens=int(head.n_tokens),
                           logits=head.logits, stats=depth.stats, _backward_stats=depth.backward_stats)
