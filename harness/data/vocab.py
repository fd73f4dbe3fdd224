"""Word vocabulary shared by every word-level corpus (WikiText-103, Penn Treebank, synthetic).

A :class:`Vocab` maps words to integer ids and back. It is built from the word counts
of a training split, in the order the adaptive softmax wants: ``<eos>`` first (id 0,
as in the Transformer-XL / DEQ loaders), then every other word by falling frequency,
ties broken by the word itself (so the order never depends on file order or hashing).
``<unk>`` keeps its place by frequency when the training split contains it (WikiText-103
and PTB do); otherwise it is appended last with count 0, so ``unk_id`` always exists and
out-of-vocabulary words in valid/test map to it.

This module also holds :class:`DataError`, the one error type of ``harness.data``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

EOS = "<eos>"
UNK = "<unk>"


class DataError(ValueError):
    """A corpus or data directory that cannot be used; the message is one line."""


class _LookupWithDefault(dict):
    """word -> id dict whose misses return a default id without inserting it."""

    def __init__(self, mapping: Mapping[str, int], default: int) -> None:
        super().__init__(mapping)
        self.default = default

    def __missing__(self, key: str) -> int:
        return self.default


class Vocab:
    """An ordered word list with ``encode``/``decode``; ``counts`` are training frequencies."""

    def __init__(self, words: Sequence[str], counts: Sequence[int] | None = None) -> None:
        words = list(words)
        if len(set(words)) != len(words):
            raise DataError("vocabulary words must be unique; got duplicates")
        for special in (EOS, UNK):
            if special not in words:
                raise DataError(f"vocabulary must contain {special!r}")
        if counts is not None and len(counts) != len(words):
            raise DataError(f"vocabulary counts has {len(counts)} entries for {len(words)} words")
        self.words: list[str] = words
        self.counts: list[int] | None = None if counts is None else [int(c) for c in counts]
        self.stoi: dict[str, int] = {word: i for i, word in enumerate(words)}
        self.eos_id: int = self.stoi[EOS]
        self.unk_id: int = self.stoi[UNK]
        self._lookup = _LookupWithDefault(self.stoi, self.unk_id)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], extra_words: Iterable[str] = ()) -> "Vocab":
        """Build from training counts: <eos>, then by (-count, word); extra words get count 0."""
        merged = dict(counts)
        for word in extra_words:
            merged.setdefault(word, 0)
        eos_count = merged.pop(EOS, 0)
        unk_present = UNK in merged
        ordered = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
        words = [EOS] + [word for word, _ in ordered]
        freqs = [eos_count] + [count for _, count in ordered]
        if not unk_present:
            words.append(UNK)
            freqs.append(0)
        return cls(words, freqs)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.words == other.words

    def __repr__(self) -> str:
        head = ", ".join(self.words[:5])
        return f"Vocab({len(self)} words: {head}, ...)"

    def encode(self, words: Iterable[str], *, as_tensor: bool = False) -> list[int] | torch.Tensor:
        """Words -> ids (unknown words -> ``unk_id``); ``as_tensor`` gives a 1-D LongTensor."""
        ids = list(map(self._lookup.__getitem__, words))
        return torch.tensor(ids, dtype=torch.long) if as_tensor else ids

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Ids -> words; raises DataError naming the first id outside [0, len)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        words = self.words
        out = []
        for i in ids:
            if not 0 <= i < len(words):
                raise DataError(f"token id {i} is outside the vocabulary [0, {len(words)})")
            out.append(words[i])
        return out

    def lookup_table(self) -> dict[str, int]:
        """The word -> id dict used by the streaming encoder (misses give ``unk_id``)."""
        return self._lookup
