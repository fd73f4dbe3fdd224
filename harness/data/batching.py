"""Ordered language-model batches, sharded across data-parallel ranks.

As in the Transformer-XL / DEQ training code, the token stream is cut into contiguous
streams that are read side by side, ``seq_len`` tokens at a time, so a model with memory
(or a DEQ carrying state) sees each stream in order. With ``S = batch_size * world_size``
streams over ``N`` tokens and ``L = (N - 1) // S`` steps per stream:

* stream ``s`` holds inputs ``ids[s*L : (s+1)*L]`` and targets ``ids[s*L+1 : (s+1)*L+1]``
  (targets are the inputs shifted by one, so consecutive streams overlap by one token);
* rank ``r`` owns streams ``r*B .. r*B+B-1``: a contiguous slice, disjoint from every other
  rank's, and together the ranks predict every target ``ids[1 : S*L+1]`` exactly once;
* dropped: ``ids[0]`` is never a target (it has no context), and the last
  ``(N - 1) - S*L`` tokens (fewer than ``S``) are never targets (``dropped_tokens``);
* batch ``i`` is columns ``[i*seq_len, (i+1)*seq_len)`` of every stream of the rank; the
  last batch is shorter when ``seq_len`` does not divide ``L``, unless ``drop_last=True``,
  which also drops those ``L % seq_len`` steps of every stream.

Every rank gets the same ``len(batches)``, so data-parallel steps stay in lockstep.
"""
from __future__ import annotations

import operator
from collections.abc import Iterator

import torch


class LMBatches:
    """``batches[i] -> (tokens, targets)``, both (batch_size, T) int64, T = seq_len (or less for the last)."""

    def __init__(self, ids: torch.Tensor, *, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False) -> None:
        integer = isinstance(ids, torch.Tensor) and not ids.dtype.is_floating_point and ids.dtype != torch.bool
        if not integer or ids.dim() != 1:
            raise ValueError(f"ids must be a 1-D integer tensor, got {type(ids).__name__} "
                             f"{getattr(ids, 'dtype', '')} {tuple(getattr(ids, 'shape', ()))}")
        for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 1), ("world_size", world_size, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is invalid; allowed: an integer >= {low}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} is invalid; allowed: an integer in [0, world_size={world_size})")
        n_streams = batch_size * world_size
        stream_len = (len(ids) - 1) // n_streams
        if stream_len < 1 or (drop_last and stream_len < seq_len):
            need = n_streams * (seq_len if drop_last else 1) + 1
            raise ValueError(f"ids has {len(ids)} tokens, too few for batch_size={batch_size} x "
                             f"world_size={world_size} streams (need at least {need})")
        self.batch_size, self.seq_len, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.drop_last = drop_last
        self.stream_len = stream_len  # L: input positions per stream
        self.dropped_tokens = (len(ids) - 1) - n_streams * stream_len
        first = rank * batch_size * stream_len
        region = ids[first: first + batch_size * stream_len + 1]
        self._inputs = region[:-1].view(batch_size, stream_len)  # (B, L), a view: no copy
        self._targets = region[1:].view(batch_size, stream_len)  # (B, L)
        usable = stream_len - stream_len % seq_len if drop_last else stream_len
        self._usable = usable
        self._n_batches = -(-usable // seq_len)

    def __len__(self) -> int:
        return self._n_batches

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = operator.index(index)
        if index < 0:
            index += self._n_batches
        if not 0 <= index < self._n_batches:
            raise IndexError(f"batch index out of range [0, {self._n_batches})")
        start = index * self.seq_len
        stop = min(start + self.seq_len, self._usable)
        tokens = self._inputs[:, start:stop].to(torch.long).contiguous()  # (B, T)
        targets = self._targets[:, start:stop].to(torch.long).contiguous()  # (B, T)
        return tokens, targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in range(self._n_batches):
            yield self[index]

    @property
    def n_target_tokens(self) -> int:
        """Targets this rank predicts over one pass (batch_size * usable steps)."""
        return self.batch_size * self._usable

    def __repr__(self) -> str:
        return (f"LMBatches({len(self)} batches of ({self.batch_size}, {self.seq_len}), rank {self.rank}/"
                f"{self.world_size}, stream_len={self.stream_len}, dropped_tokens={self.dropped_tokens})")
