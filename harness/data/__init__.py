"""harness.data: corpora, batching and tasks for deqbench.

Public face (everything the harness uses)::

    check_data_dir(dataset, data_dir)           one-line DataError before anything starts
    load_corpus(dataset, data_dir, *, cache_dir=None) -> Corpus   "wikitext103" | "ptb" | "synthetic"
    Corpus(name, vocab, train, valid, test, optimal_ppl, meta)    splits: 1-D LongTensors
    Vocab: encode(words) / decode(ids), len, eos_id, unk_id
    LMBatches(ids, *, batch_size, seq_len, rank=0, world_size=1)  batches[i] -> (tokens, targets) (B, T)
    CopyMemory(blank_len, *, n_digits=10, seed=0).batch(B, index, *, rank, world_size)
    write_synthetic_corpus(out_dir, SyntheticSpec()) -> metadata (entropy_rate_nats, optimal_ppl, ...)

Module map: ``vocab`` (Vocab, DataError), ``text`` (streaming tokenising), ``datasets``
(registry, directory checks), ``corpus`` (load + cache), ``batching``, ``copy_memory``,
``markov`` + ``synthetic_corpus`` (the known-entropy corpus), ``fsutil`` (atomic writes,
locks); command lines: ``python -m harness.data.synthetic``, ``python -m harness.data.bench_load``.
"""
from .batching import LMBatches
from .copy_memory import CopyMemory
from .corpus import Corpus, load_corpus
from .datasets import DATASETS, DatasetInfo, check_data_dir, register_dataset
from .synthetic_corpus import SyntheticSpec, load_chain, write_synthetic_corpus
from .vocab import DataError, Vocab

__all__ = [
    "DataError", "Vocab", "Corpus", "DATASETS", "DatasetInfo", "register_dataset", "check_data_dir",
    "load_corpus", "LMBatches", "CopyMemory", "write_synthetic_corpus", "SyntheticSpec", "load_chain",
]
