"""Streaming word-level tokenisation of the standard text layouts.

A token file is read in blocks of a few MiB, never whole and never as one Python list:

* every line is split on whitespace (``str.split()``) and ends with ``<eos>``. As in the
  Transformer-XL / DEQ loaders (``line.strip().split() + ['<eos>']``), a blank line still
  counts, as a lone ``<eos>``; ``skip_blank_lines=True`` drops blank lines instead.
  (WikiText-103 has a blank line between paragraphs, so the choice changes token counts
  and perplexities; the default matches published numbers.)
* :func:`index_file` reads a file once: each token is looked up once in a dict that
  hands out provisional ids in first-seen order (int32 arrays per block), and word counts
  come from ``np.bincount``. Once the vocabulary is fixed, :func:`encode_indexed` looks
  each *distinct* word up once and remaps the blocks into one preallocated int64 tensor.
  100M tokens cost 400 MB of int32 blocks plus the 800 MB result at the peak, never a
  list of 100M Python ints.

Files are opened as UTF-8 text with universal newlines, exactly like ``for line in open()``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .vocab import EOS, DataError

BLOCK_CHARS = 1 << 22  # characters per read: ~4 MiB of text, ~0.7M tokens


def _block_tokens(text: str, skip_blank_lines: bool) -> list[str]:
    """Tokens of complete lines (``text`` ends with a newline), one <eos> per line."""
    if not skip_blank_lines:
        return text.replace("\n", f" {EOS} ").split()
    lines = [line for line in text.split("\n") if line and not line.isspace()]
    if not lines:
        return []
    tokens = f" {EOS} ".join(lines).split()
    tokens.append(EOS)
    return tokens


def iter_token_blocks(path: str | Path, *, skip_blank_lines: bool = False,
                      block_chars: int = BLOCK_CHARS) -> Iterator[list[str]]:
    """Yield the file's tokens block by block; a block always ends at a line end."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read corpus file {path}: {exc.strerror}") from None
    with handle:
        carry = ""
        while True:
            try:
                block = handle.read(block_chars)
            except UnicodeDecodeError as exc:
                raise DataError(f"corpus file {path} is not UTF-8 text ({exc.reason})") from None
            if not block:
                break
            block = carry + block
            cut = block.rfind("\n") + 1
            carry = block[cut:]
            if cut:
                yield _block_tokens(block[:cut], skip_blank_lines)
        if carry:  # last line without a trailing newline still ends with <eos>
            yield _block_tokens(carry + "\n", skip_blank_lines)


class _FirstSeenIds(dict):
    """word -> provisional id in order of first appearance; a miss assigns the next id."""

    def __missing__(self, word: str) -> int:
        new_id = self[word] = len(self)
        return new_id


@dataclass
class IndexedText:
    """One pass over a file: distinct ``words`` (first-seen order), their ``counts`` (int64),
    and the token stream as provisional ids (int32 arrays, one per block)."""

    words: list[str]
    counts: np.ndarray
    blocks: list[np.ndarray]
    n_tokens: int


def index_file(path: str | Path, *, skip_blank_lines: bool = False) -> IndexedText:
    """Tokenise once: every token is hashed once, counts come from ``np.bincount``."""
    first_seen = _FirstSeenIds()
    get = first_seen.__getitem__
    blocks: list[np.ndarray] = []
    counts = np.zeros(0, dtype=np.int64)
    for tokens in iter_token_blocks(path, skip_blank_lines=skip_blank_lines):
        block = np.fromiter(map(get, tokens), dtype=np.int32, count=len(tokens))  # (n_block,)
        block_counts = np.bincount(block, minlength=len(first_seen))
        block_counts[:len(counts)] += counts
        counts = block_counts
        blocks.append(block)
    return IndexedText(words=list(first_seen), counts=counts, blocks=blocks,
                       n_tokens=sum(len(block) for block in blocks))


def encode_indexed(indexed: IndexedText, lookup: Mapping[str, int]) -> torch.Tensor:
    """Final ids: each distinct word is looked up once (``lookup`` answers misses, e.g. with
    ``unk_id``), then the provisional ids are remapped block by block into one
    preallocated int64 tensor; the blocks are released as they are copied."""
    remap = np.fromiter((lookup[word] for word in indexed.words), dtype=np.int64, count=len(indexed.words))
    ids = torch.empty(indexed.n_tokens, dtype=torch.long)  # (N,)
    ids_np = ids.numpy()
    pos = 0
    while indexed.blocks:
        block = indexed.blocks.pop(0)
        ids_np[pos:pos + len(block)] = remap[block]
        pos += len(block)
    return ids
