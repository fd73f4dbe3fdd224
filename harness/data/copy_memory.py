"""The copy-memory task (Hochreiter & Schmidhuber 1997; as set up in the TCN and DEQ papers).

A sequence of length ``blank_len + 2 * n_digits`` over 10 symbols (0 blank, 1-8 digits,
9 delimiter), for the default ``n_digits = 10``::

    inputs : d1 .. d10 | 0 x (blank_len - 1) | 9 | 0 x 10
    targets: 0 x (blank_len + 10)                 | d1 .. d10

with the digits drawn uniformly from 1-8. The model must recall the digits after
``blank_len`` steps of nothing; predicting blanks everywhere and uniform digits gives
the baseline loss ``10 * ln 8 / (blank_len + 20)``.

Batches are generated, not stored: batch ``index`` on ``rank`` of ``world_size`` comes
from a ``torch.Generator`` seeded by ``(seed, index * world_size + rank)``. So ranks draw
from different seeds at every step, and a run on W workers sees the same global
sequence of batches as one worker stepping through ``index * W + rank``.
"""
from __future__ import annotations

import math
import operator

import torch

BLANK, DELIMITER, N_SYMBOLS = 0, 9, 10
N_DIGIT_SYMBOLS = 8  # digits are drawn uniformly from 1..8
CHANCE_ACC = 1.0 / N_DIGIT_SYMBOLS  # recall accuracy of a model that guesses (12.5%)
_MASK64 = (1 << 64) - 1


def _mix_seed(seed: int, stream: int) -> int:
    """A 63-bit generator seed from (seed, stream) via splitmix64 (nearby inputs -> unrelated seeds)."""
    z = (seed * 0x9E3779B97F4A7C15 + stream + 1) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = ((z ^ (z >> shift)) * mult) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class CopyMemory:
    """Copy-memory batches; ``vocab_size == 10``, ``seq_len == blank_len + 2 * n_digits``."""

    vocab_size = N_SYMBOLS

    def __init__(self, blank_len: int, *, n_digits: int = 10, seed: int = 0) -> None:
        if not isinstance(blank_len, int) or blank_len < 1:
            raise ValueError(f"blank_len={blank_len!r} is invalid; allowed: an integer >= 1")
        if not isinstance(n_digits, int) or n_digits < 1:
            raise ValueError(f"n_digits={n_digits!r} is invalid; allowed: an integer >= 1")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid; allowed: an integer >= 0")
        self.blank_len, self.n_digits, self.seed = blank_len, n_digits, seed
        self.seq_len = blank_len + 2 * n_digits

    def batch(self, batch_size: int, index: int, *, rank: int = 0,
              world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (batch_size, seq_len) int64; deterministic in its arguments."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an integer >= 1")
        try:
            position = operator.index(index)
        except TypeError:
            position = -1
        if position < 0:
            raise ValueError(f"index={index!r} is invalid; allowed: an integer >= 0")
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size={world_size!r} is invalid; allowed: an integer >= 1")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} is invalid; allowed: an integer in [0, world_size={world_size})")
        gen = torch.Generator().manual_seed(_mix_seed(self.seed, position * world_size + rank))
        n, length = self.n_digits, self.seq_len
        digits = torch.randint(1, N_DIGIT_SYMBOLS + 1, (batch_size, n), generator=gen)  # (B, n) in 1..8
        inputs = torch.full((batch_size, length), BLANK, dtype=torch.long)  # (B, L)
        inputs[:, :n] = digits
        inputs[:, length - n - 1] = DELIMITER  # after n digits and blank_len - 1 blanks
        targets = torch.full((batch_size, length), BLANK, dtype=torch.long)  # (B, L)
        targets[:, length - n:] = digits
        return inputs, targets

    def baseline_loss(self) -> float:
        """Mean per-position loss of the memoryless strategy: blanks right, digits uniform."""
        return self.n_digits * math.log(8) / self.seq_len

    def __repr__(self) -> str:
        return f"CopyMemory(blank_len={self.blank_len}, n_digits={self.n_digits}, seed={self.seed})"
