"""The bundled synthetic corpus: text from a Markov chain whose entropy rate is known.

A benchmark needs a floor: on this corpus the best possible perplexity is known exactly,
so a report can show how far each model is from optimal. The source is a sparse random
first-order Markov chain over ``vocab_size`` states (``markov.py``), one of which is
``<eos>``. The writer emits the chain's run word by word and ends the line whenever the
chain emits ``<eos>``; each split runs on until it emits ``<eos>``, so the loader's one
``<eos>`` per line gives back exactly the chain's token stream. Files, in the WikiText
layout so the same loader reads them::

    wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens   one line per chain sentence
    synthetic_chain.npz   words, successors (V, k), probs (V, k), stationary (V,): np.load(allow_pickle=False)
    synthetic.json        spec, entropy_rate_nats, optimal_ppl = exp(entropy rate), and per split
                          the token count and the true model's empirical NLL on it

``optimal_ppl`` is the limit for an infinitely long sample; on a finite split the true
model's perplexity scatters around it (``splits.*.true_model_nll_nats`` and its standard
error). Command line (``synthetic.py``)::

    python -m harness.data.synthetic --out DIR [--vocab 2000 --train-tokens N --seed S]
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .datasets import DATASETS, SPLITS, SYNTHETIC_CHAIN, SYNTHETIC_META, check_data_dir, synthetic_state
from .fsutil import atomic_write, atomic_write_text, file_lock
from .markov import MarkovChain, build_chain
from .vocab import DataError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the synthetic corpus; the same spec gives the same bytes."""

    vocab_size: int = 2000        # chain states, <eos> included
    successors: int = 16          # k: successors per state
    dirichlet_alpha: float = 1.0  # concentration of each row's transition weights
    zipf_exponent: float = 1.0    # how strongly successors favour low-numbered words
    eos_edge_prob: float = 0.25   # chance that a word may be followed by <eos>
    train_tokens: int = 300_000
    valid_tokens: int = 30_000
    test_tokens: int = 30_000
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"SyntheticSpec.{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")
        if not 3 <= self.vocab_size <= 5_000_000:
            raise bad("vocab_size", "an integer in [3, 5000000]")
        if not 2 <= self.successors <= self.vocab_size // 2:
            raise bad("successors", f"an integer in [2, vocab_size // 2 = {self.vocab_size // 2}]")
        if not self.dirichlet_alpha > 0:
            raise bad("dirichlet_alpha", "a number > 0")
        if not self.zipf_exponent >= 0:
            raise bad("zipf_exponent", "a number >= 0")
        if not 0 <= self.eos_edge_prob <= 1:
            raise bad("eos_edge_prob", "a number in [0, 1]")
        for name in ("train_tokens", "valid_tokens", "test_tokens"):
            if not 2 <= getattr(self, name):
                raise bad(name, "an integer >= 2")
        if self.seed < 0:
            raise bad("seed", "an integer >= 0")

    def split_tokens(self, split: str) -> int:
        return getattr(self, f"{split}_tokens")


def make_chain(spec: SyntheticSpec) -> MarkovChain:
    """The spec's chain (deterministic in the spec)."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0]))
    return build_chain(n_states=spec.vocab_size, successors=spec.successors,
                       dirichlet_alpha=spec.dirichlet_alpha, zipf_exponent=spec.zipf_exponent,
                       eos_edge_prob=spec.eos_edge_prob, rng=rng)


def sample_split(chain: MarkovChain, spec: SyntheticSpec, split: str) -> np.ndarray:
    """The state sequence of one split: at least ``spec.<split>_tokens`` long, ends in <eos>."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1 + SPLITS.index(split)]))
    return chain.sample(spec.split_tokens(split), rng, end_at_eos=True)


def _lines_text(chain: MarkovChain, states: np.ndarray) -> str:
    words = np.asarray(chain.words, dtype=object)[states].tolist()
    lines, start = [], 0
    for end in np.flatnonzero(states == chain.eos_state).tolist():
        lines.append(" ".join(words[start:end]) + "\n")
        start = end + 1
    return "".join(lines)


def _nll_summary(chain: MarkovChain, states: np.ndarray, n_batches: int = 20) -> dict:
    nll = chain.transition_nll(states)  # (N-1,)
    batch_means = [b.mean() for b in np.array_split(nll, n_batches)]
    stderr = float(np.std(batch_means, ddof=1) / math.sqrt(n_batches))
    mean = float(nll.mean())
    return {"tokens": int(len(states)), "true_model_nll_nats": mean,
            "true_model_ppl": math.exp(mean), "true_model_nll_stderr": stderr}


def write_synthetic_corpus(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> dict:
    """Generate the corpus files into ``out_dir`` (created; existing files replaced) -> metadata."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chain = make_chain(spec)
    entropy_rate = chain.entropy_rate()
    layout = DATASETS["synthetic"].layouts[0]
    splits = {}
    for split, name in zip(SPLITS, layout):
        states = sample_split(chain, spec, split)
        text = _lines_text(chain, states)
        atomic_write_text(out_dir / name, text)
        splits[split] = {"file": name, **_nll_summary(chain, states)}
    atomic_write(out_dir / SYNTHETIC_CHAIN, lambda tmp: _save_chain(tmp, chain))
    eos_prob = float(chain.stationary[chain.eos_state])
    meta = {
        "format": FORMAT_VERSION, "generator": "harness.data.synthetic_corpus", "spec": asdict(spec),
        "n_states": chain.n_states, "entropy_rate_nats": entropy_rate,
        "optimal_ppl": math.exp(entropy_rate), "stationary_eos_prob": eos_prob,
        "mean_line_tokens": 1.0 / eos_prob, "chain_file": SYNTHETIC_CHAIN, "splits": splits,
        "note": ("optimal_ppl = exp(entropy rate) is the limit for an infinite sample; "
                 "splits.*.true_model_nll_nats is the true chain's NLL on that finite split"),
    }
    atomic_write_text(out_dir / SYNTHETIC_META, json.dumps(meta, indent=1) + "\n")  # last: marks complete
    return meta


def _save_chain(path: Path, chain: MarkovChain) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, words=np.asarray(chain.words, dtype=str), successors=chain.successors,
                 probs=chain.probs, stationary=chain.stationary)


def load_chain(data_dir: str | Path) -> MarkovChain:
    """The chain of a written corpus, read without pickle."""
    path = Path(data_dir) / SYNTHETIC_CHAIN
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return MarkovChain(words=tuple(arrays["words"].tolist()), successors=arrays["successors"],
                               probs=arrays["probs"], stationary=arrays["stationary"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"synthetic chain file {path} is unreadable: {exc}") from None


def read_synthetic_meta(data_dir: str | Path) -> dict:
    """synthetic.json of a written corpus."""
    path = Path(data_dir) / SYNTHETIC_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"synthetic metadata {path} is unreadable: {exc}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"synthetic metadata {path} has format {meta.get('format')!r}, "
                        f"this code reads {FORMAT_VERSION}; regenerate it into an empty dir")
    return meta


def ensure_synthetic_corpus(data_dir: str | Path, spec: SyntheticSpec | None = None) -> bool:
    """Generate ``spec``'s corpus into ``data_dir`` unless one is there; True if generated.

    ``spec`` None: any complete corpus found is used, else the default one is generated.
    A given ``spec`` must match the corpus found (a DataError names the first key that
    differs), so a job file's ``data.synthetic`` never silently trains on another corpus.
    Safe when several workers call it at once (a lock; the loser finds the files).
    A directory holding only some of the files is refused with a DataError.
    """
    data_dir = Path(data_dir)
    if synthetic_state(data_dir) == "complete":
        check_synthetic_spec(data_dir, spec)
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(data_dir / ".synthetic.lock"):
        state = synthetic_state(data_dir)
        if state == "complete":
            check_synthetic_spec(data_dir, spec)
            return False
        if state == "partial":
            check_data_dir("synthetic", data_dir)  # raises the one-line error naming what is missing
        write_synthetic_corpus(data_dir, spec or SyntheticSpec())
    return True


def check_synthetic_spec(data_dir: str | Path, spec: SyntheticSpec | None) -> None:
    """Refuse (DataError, one line) a corpus in ``data_dir`` written from another spec than ``spec``."""
    if spec is None:
        return
    found = read_synthetic_meta(data_dir).get("spec")
    wanted = asdict(spec)
    if not isinstance(found, dict):
        raise DataError(f"synthetic metadata {Path(data_dir) / SYNTHETIC_META} holds no spec; "
                        f"regenerate it into an empty dir")
    for key, value in wanted.items():
        if found.get(key) != value:
            raise DataError(f"{data_dir} holds a synthetic corpus with {key}={found.get(key)!r}, "
                            f"not the {key}={value!r} asked for (data.synthetic); point data.data_dir "
                            f"at another folder, or empty this one to regenerate it")
