"""Task heads: the last hidden sequence z (B, T, D) + targets (B, T) -> loss.

- ``SoftmaxLMHead`` ("softmax"): word-level LM, a full softmax over the vocabulary;
  the output matrix is tied to the token embedding when ``tie_weights`` is set.
- ``AdaptiveSoftmaxLMHead`` ("adaptive_softmax"): torch.nn.AdaptiveLogSoftmaxWithLoss
  for large vocabularies (Grave et al. 2017); gives no logits.
- ``CopyHead`` ("copy"): copy-memory classifier, ``n_classes`` logits per position,
  loss = mean cross-entropy over all positions.

The head is chosen by ``model.head`` (a name in ``models.build.HEADS``; a head added with
``register_head`` is selectable too), by default "copy" for task copy, "adaptive_softmax"
when ``adaptive_softmax`` is set, else "softmax". ``Head.check_config(cfg)`` rejects a
config the head cannot serve (as ``Cell.check_config`` does for cells).

Targets equal to ``IGNORE_INDEX`` (-100, PyTorch's convention) are left out of the
loss and of the token count. Each head returns a ``HeadOutput`` with the mean NLL
(``loss``, differentiable), its detached sum and the token count, so evaluation can add
sums over batches for an exact perplexity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

IGNORE_INDEX = -100


@dataclass
class HeadOutput:
    loss: torch.Tensor  # scalar, mean NLL over counted tokens (nats)
    nll_sum: torch.Tensor  # scalar, detached sum of NLL
    n_tokens: torch.Tensor  # scalar long, number of counted tokens
    logits: Optional[torch.Tensor]  # (B, T, C) or None


class Head(nn.Module):
    """Interface: ``forward(z (B, T, D), targets (B, T)) -> HeadOutput``."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        """Raise ValueError if ``cfg`` cannot build this head."""

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()

    def forward(self, z: torch.Tensor, targets: torch.Tensor) -> HeadOutput:
        raise NotImplementedError


def _cross_entropy_output(logits: torch.Tensor, targets: torch.Tensor) -> HeadOutput:
    nll_sum = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum",
                              ignore_index=IGNORE_INDEX)  # logits (B*T, C)
    n_tokens = (targets != IGNORE_INDEX).sum()
    loss = nll_sum / n_tokens.clamp(min=1)
    return HeadOutput(loss=loss, nll_sum=nll_sum.detach(), n_tokens=n_tokens, logits=logits)


class SoftmaxLMHead(Head):
    """Full softmax over the vocabulary; optionally tied to the token embedding."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        if cfg.tie_weights and cfg.output_size != cfg.vocab_size:
            raise ValueError(f"model.tie_weights: head 'softmax' ties its output matrix to the embedding, "
                             f"which needs as many classes ({cfg.output_size}) as tokens ({cfg.vocab_size}); "
                             f"set tie_weights: false")
        if cfg.adaptive_softmax is not None:
            raise ValueError("model.adaptive_softmax: only used by head 'adaptive_softmax', not 'softmax'")

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__(cfg, embedding)
        self.proj = nn.Linear(cfg.d_model, cfg.output_size)
        if cfg.tie_weights:
            self.proj.weight = embedding.weight

    def forward(self, z: torch.Tensor, targets: torch.Tensor) -> HeadOutput:
        return _cross_entropy_output(self.proj(z), targets)  # logits (B, T, V)


class CopyHead(Head):
    """Per-position classifier over ``n_classes`` (copy-memory task)."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        if cfg.adaptive_softmax is not None:
            raise ValueError("model.adaptive_softmax: only used by head 'adaptive_softmax', not 'copy'")

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__(cfg, embedding)
        self.proj = nn.Linear(cfg.d_model, cfg.output_size)

    def forward(self, z: torch.Tensor, targets: torch.Tensor) -> HeadOutput:
        return _cross_entropy_output(self.proj(z), targets)  # logits (B, T, C)


class AdaptiveSoftmaxLMHead(Head):
    """torch.nn.AdaptiveLogSoftmaxWithLoss; ``logits`` is None."""

    @staticmethod
    def check_config(cfg: ModelConfig) -> None:
        if cfg.adaptive_softmax is None:
            raise ValueError("model.head: head 'adaptive_softmax' needs model.adaptive_softmax "
                             "({cutoffs: [...], div_value: ...})")

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__(cfg, embedding)
        assert cfg.adaptive_softmax is not None
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
            cfg.d_model, cfg.output_size, cutoffs=list(cfg.adaptive_softmax.cutoffs),
            div_value=cfg.adaptive_softmax.div_value)

    def forward(self, z: torch.Tensor, targets: torch.Tensor) -> HeadOutput:
        flat_targets = targets.flatten()  # (B*T,)
        keep = flat_targets != IGNORE_INDEX
        hidden = z.flatten(0, 1)  # (B*T, D)
        if not bool(keep.all()):
            hidden, flat_targets = hidden[keep], flat_targets[keep]
        target_log_prob = self.adaptive(hidden, flat_targets).output  # (N,)
        nll_sum = -target_log_prob.sum()
        n_tokens = keep.sum()
        loss = nll_sum / n_tokens.clamp(min=1)
        if torch.is_grad_enabled():
            # torch skips a tail cluster no target of this batch falls in, so its weights get no
            # gradient on this rank: data-parallel ranks would then reduce different buckets
            # (ZeRO 1-2 over gloo aborts on the size mismatch). A zero-weighted term keeps every
            # weight in the graph on every rank; it changes no value and no gradient.
            loss = loss + 0.0 * sum(p.sum() for p in self.adaptive.tail.parameters())
        return HeadOutput(loss=loss, nll_sum=nll_sum.detach(), n_tokens=n_tokens, logits=None)
