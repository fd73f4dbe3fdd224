"""Load a word-level corpus into id tensors, with a cache that makes the second load fast.

``load_corpus(dataset, data_dir)`` returns a :class:`Corpus`: the vocabulary (from the
training split, see ``vocab.py``) and the train/valid/test splits as 1-D int64 tensors.

First load: one streaming pass per split (tokenise, count, provisional ids), then a
remap into a preallocated tensor (``text.py``). The result is saved with ``torch.save`` to
``<cache_dir>/<dataset>-<key>.pt`` where the key hashes the split files' names, sizes and
modification times (and the loader options), so editing a file invalidates the cache.
Later loads read it with ``torch.load(weights_only=True, mmap=True)``: no pickle code
runs, and the pages are shared between workers on one machine. The build runs under a
file lock and the file is written atomically, so concurrent workers neither corrupt the
cache nor build it twice. ``cache_dir=None`` means ``<data_dir>/.deqbench_cache``; if it
cannot be written the corpus still loads, uncached (``meta["cache"]`` says so).

``"synthetic"`` first generates the default corpus into a missing or empty data dir;
its vocabulary also holds chain words the training split happened to miss, and
``optimal_ppl`` comes from ``synthetic.json``.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .datasets import SPLITS, SYNTHETIC_META, check_data_dir, dataset_info, split_files
from .fsutil import atomic_write, file_lock
from .synthetic_corpus import SyntheticSpec, ensure_synthetic_corpus, load_chain, read_synthetic_meta
from .text import encode_indexed, index_file
from .vocab import UNK, DataError, Vocab

CACHE_FORMAT = 1
BLANK_LINE_MODES = ("eos", "skip")


@dataclass
class Corpus:
    """A tokenised corpus: ``train``/``valid``/``test`` are 1-D LongTensors of vocab ids."""

    name: str
    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    optimal_ppl: float | None = None
    meta: dict = field(default_factory=dict)

    def unigram_ppl(self, split: str = "valid") -> float:
        """Perplexity on ``split`` of the best model that ignores context: the training split's
        word frequencies (add-one smoothed over the vocabulary). A language model whose
        perplexity is not clearly below it has learned nothing from the context."""
        counts = torch.bincount(self.train, minlength=len(self.vocab)).double() + 1.0
        log_p = (counts / counts.sum()).log()
        tokens = self.split(split)
        return float(torch.exp(-log_p[tokens].mean())) if len(tokens) else float("nan")

    def split(self, name: str) -> torch.Tensor:
        """The split called ``name`` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is unknown; choose one of {list(SPLITS)}")
        return getattr(self, name)


def _cache_key(dataset: str, files: dict[str, Path], extra: list[Path], blank_lines: str) -> str:
    stamp = {"format": CACHE_FORMAT, "dataset": dataset, "blank_lines": blank_lines, "files": []}
    for path in [*files.values(), *extra]:
        st = path.stat()
        stamp["files"].append([path.name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:20]


def _build(files: dict[str, Path], extra_words: list[str], skip_blank_lines: bool) -> dict:
    """Index and encode every split -> the dict that is cached."""
    indexed = {split: index_file(path, skip_blank_lines=skip_blank_lines) for split, path in files.items()}
    train = indexed["train"]
    if train.n_tokens == 0:
        raise DataError(f"training split {files['train']} holds no tokens")
    vocab = Vocab.from_counts(dict(zip(train.words, train.counts.tolist())), extra_words=extra_words)
    lookup = vocab.lookup_table()
    record: dict = {"format": CACHE_FORMAT, "words": "\n".join(vocab.words),
                    "counts": torch.tensor(vocab.counts, dtype=torch.long), "tokens": {}, "oov": {}}
    for split in files:
        part = indexed.pop(split)  # released once encoded
        unseen = np.fromiter((word not in vocab for word in part.words), dtype=bool, count=len(part.words))
        record["oov"][split] = int(part.counts[unseen].sum())
        record["tokens"][split] = part.n_tokens
        record[split] = encode_indexed(part, lookup)
    return record


def _read_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = torch.load(path, weights_only=True, mmap=True)
    except Exception as exc:  # a damaged or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable corpus cache {path}: {exc}", stacklevel=3)
        return None
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT or record.get("key") != key:
        return None
    return record


def _writable_cache_dir(cache_dir: Path) -> str | None:
    """None if ``cache_dir`` can be used, else the reason it cannot."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):  # unique name: safe with concurrent loaders
            pass
    except OSError as exc:
        return f"{cache_dir}: {exc.strerror or exc}"
    return None


def load_corpus(dataset: str, data_dir: str | Path, *, cache_dir: str | Path | None = None,
                blank_lines: str = "eos", synthetic: SyntheticSpec | None = None) -> Corpus:
    """Load ``dataset`` ("wikitext103", "ptb" or "synthetic") from ``data_dir``.

    ``blank_lines="eos"`` (default) counts a blank line as one ``<eos>``, like the
    Transformer-XL / DEQ loaders; ``"skip"`` drops blank lines (not for "synthetic").
    ``synthetic``: the spec the synthetic corpus must have (generated if the folder is empty).
    """
    start = time.perf_counter()
    info = dataset_info(dataset)
    if blank_lines not in BLANK_LINE_MODES:
        raise ValueError(f"blank_lines={blank_lines!r} is invalid; allowed: {list(BLANK_LINE_MODES)}")
    if info.kind == "synthetic" and blank_lines != "eos":
        raise ValueError("blank_lines='skip' is not allowed for 'synthetic' (its token stream must stay exact)")
    check_data_dir(dataset, data_dir)
    data_dir = Path(data_dir)
    generated = info.kind == "synthetic" and ensure_synthetic_corpus(data_dir, synthetic)
    files = split_files(dataset, data_dir)
    extra_paths, extra_words, synth_meta = [], [], None
    if info.kind == "synthetic":
        synth_meta = read_synthetic_meta(data_dir)
        extra_paths = [data_dir / SYNTHETIC_META]
        extra_words = list(load_chain(data_dir).words)
    key = _cache_key(info.name, files, extra_paths, blank_lines)
    skip = blank_lines == "skip"

    cache_root = Path(cache_dir) if cache_dir is not None else data_dir / ".deqbench_cache"
    unusable = _writable_cache_dir(cache_root)
    if unusable is not None:
        warnings.warn(f"corpus cache disabled ({unusable}); loading {info.name} uncached", stacklevel=2)
        record, status, cache_file = _build(files, extra_words, skip), "disabled", None
    else:
        cache_file = cache_root / f"{info.name}-{key}.pt"
        record, status = _read_cache(cache_file, key), "hit"
        if record is None:
            with file_lock(cache_root / f"{info.name}-{key}.lock"):
                record = _read_cache(cache_file, key)  # another worker may have built it meanwhile
                if record is None:
                    record, status = _build(files, extra_words, skip), "miss"
                    record["key"] = key
                    atomic_write(cache_file, lambda tmp: torch.save(record, tmp))

    vocab = Vocab(record["words"].split("\n"), record["counts"].tolist())
    meta = {
        "dataset": info.name, "data_dir": str(data_dir),
        "files": {split: str(path) for split, path in files.items()},
        "tokens": dict(record["tokens"]), "oov": dict(record["oov"]), "vocab_size": len(vocab),
        "expected_vocab": info.expected_vocab, "blank_lines": blank_lines,
        "unk_in_train": UNK in vocab and vocab.counts[vocab.unk_id] > 0,
        "cache": status, "cache_file": None if cache_file is None else str(cache_file),
        "load_seconds": time.perf_counter() - start,
    }
    optimal_ppl = None
    if synth_meta is not None:
        optimal_ppl = float(synth_meta["optimal_ppl"])
        meta.update(generated=generated, entropy_rate_nats=synth_meta["entropy_rate_nats"],
                    optimal_ppl=optimal_ppl, synthetic_spec=synth_meta["spec"],
                    true_model={split: {k: v for k, v in s.items() if k.startswith("true_model")}
                                for split, s in synth_meta["splits"].items()})
    return Corpus(name=info.name, vocab=vocab, train=record["train"], valid=record["valid"],
                  test=record["test"], optimal_ppl=optimal_ppl, meta=meta)
