"""A sparse first-order Markov chain over words whose entropy rate is known exactly.

This is the source behind the synthetic corpus (see ``synthetic.py``). Every state (word)
has exactly ``k`` successors with Dirichlet-distributed transition probabilities; one
state is ``<eos>``. Two guarantees make the stationary distribution unique and reachable:

* irreducible: the successor sets contain a random Hamiltonian cycle through all states;
* aperiodic: one extra chord skips a state on that cycle, so cycles of lengths V and V-1
  exist and their gcd is 1.

The stationary distribution ``pi`` is found in float64 by power iteration on the lazy
chain (P + I) / 2 (same ``pi``, always converges), and the entropy rate is
``H = sum_i pi_i * H(P_i)`` nats per token, so no model can beat ``exp(H)`` perplexity on
an infinitely long sample. Lookups (``log_prob``) are sparse and vectorised, so a test
can score a token stream with the true probabilities.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from .vocab import EOS


@dataclass(frozen=True)
class MarkovChain:
    """words (V,), successors (V, k) state ids, probs (V, k) rows summing to 1, stationary (V,)."""

    words: tuple[str, ...]
    successors: np.ndarray
    probs: np.ndarray
    stationary: np.ndarray

    @property
    def n_states(self) -> int:
        return len(self.words)

    @property
    def eos_state(self) -> int:
        return self.words.index(EOS)

    def row_entropies(self) -> np.ndarray:
        """H(P_i) in nats for every state, (V,)."""
        p = self.probs
        return -(p * np.log(p)).sum(axis=1)

    def entropy_rate(self) -> float:
        """Exact entropy rate in nats per token: sum_i pi_i H(P_i)."""
        return float(self.stationary @ self.row_entropies())

    def log_prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """log P(nxt | prev) elementwise for state-id arrays; -inf where the edge is absent."""
        n = self.n_states
        keys = self.successors.astype(np.int64) + n * np.arange(n, dtype=np.int64)[:, None]  # (V, k)
        flat_keys = keys.ravel()
        order = np.argsort(flat_keys, kind="stable")
        sorted_keys, sorted_logp = flat_keys[order], np.log(self.probs.ravel()[order])
        query = np.asarray(prev, dtype=np.int64) * n + np.asarray(nxt, dtype=np.int64)
        pos = np.clip(np.searchsorted(sorted_keys, query), 0, len(sorted_keys) - 1)
        found = sorted_keys[pos] == query
        return np.where(found, sorted_logp[pos], -np.inf)

    def transition_nll(self, states: np.ndarray) -> np.ndarray:
        """-log P(x_t | x_{t-1}) for t = 1..N-1 of a state sequence, (N-1,)."""
        states = np.asarray(states, dtype=np.int64)
        return -self.log_prob(states[:-1], states[1:])

    def sample(self, n_tokens: int, rng: np.random.Generator, *, end_at_eos: bool = True) -> np.ndarray:
        """A stationary run: x_0 ~ pi, then the chain; with ``end_at_eos`` it runs past
        ``n_tokens`` until it emits ``<eos>``, so the run is whole lines."""
        succ = self.successors.tolist()
        cum = np.cumsum(self.probs, axis=1).tolist()
        last = self.successors.shape[1] - 1
        eos = self.eos_state
        out: list[int] = []
        state = int(np.searchsorted(np.cumsum(self.stationary), rng.random() * self.stationary.sum()))
        state = min(state, self.n_states - 1)
        while True:
            draws = rng.random(max(n_tokens - len(out), 1024)).tolist()
            for u in draws:
                out.append(state)
                if len(out) >= n_tokens and (not end_at_eos or state == eos):
                    return np.asarray(out, dtype=np.int64)
                state = succ[state][min(bisect.bisect_right(cum[state], u), last)]


def stationary_distribution(successors: np.ndarray, probs: np.ndarray, *,
                            tol: float = 1e-14, max_iter: int = 200_000) -> np.ndarray:
    """pi with pi P = pi by lazy power iteration in float64 (sparse: O(V k) per step)."""
    n = successors.shape[0]
    flat_succ = successors.ravel()
    pi = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        moved = np.bincount(flat_succ, weights=(pi[:, None] * probs).ravel(), minlength=n)  # (V,)
        new = 0.5 * (pi + moved)
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            pi = new
            break
        pi = new
    residual = np.abs(np.bincount(flat_succ, weights=(pi[:, None] * probs).ravel(), minlength=n) - pi).sum()
    if residual > 1e-10:
        raise RuntimeError(f"stationary distribution did not converge (residual {residual:.2e})")
    return pi


def build_chain(*, n_states: int, successors: int, dirichlet_alpha: float, zipf_exponent: float,
                eos_edge_prob: float, rng: np.random.Generator) -> MarkovChain:
    """Random sparse chain; state 0 is ``<eos>``, states 1.. are words ``w1``, ``w2``, ...

    Non-forced successors of a word are drawn without replacement with probability
    proportional to 1 / rank**zipf_exponent over words (so low-numbered words are common);
    a word also has ``<eos>`` as a successor with probability ``eos_edge_prob``. ``<eos>``
    never follows ``<eos>`` (no empty lines), and line starts follow the same Zipf law.
    """
    k, n = successors, n_states
    words = (EOS,) + tuple(f"w{i}" for i in range(1, n))
    weights = 1.0 / np.arange(1, n, dtype=np.float64) ** zipf_exponent  # over words 1..n-1
    cdf = np.cumsum(weights / weights.sum())
    cycle = rng.permutation(n)
    next_on_cycle = np.empty(n, dtype=np.int64)
    next_on_cycle[cycle] = np.roll(cycle, -1)
    succ = np.empty((n, k), dtype=np.int64)
    for state in range(n):
        chosen = [int(next_on_cycle[state])]
        if state == cycle[0]:  # chord: cycle[0] -> cycle[2] closes a cycle of length n - 1
            chosen.append(int(cycle[2]))
        if state != 0 and 0 not in chosen and len(chosen) < k and rng.random() < eos_edge_prob:
            chosen.append(0)
        taken = set(chosen)
        while len(chosen) < k:
            for cand in (np.searchsorted(cdf, rng.random(4 * k)) + 1).tolist():
                cand = min(cand, n - 1)
                if cand not in taken:
                    taken.add(cand)
                    chosen.append(cand)
                    if len(chosen) == k:
                        break
        succ[state] = chosen
    probs = rng.gamma(dirichlet_alpha, size=(n, k))
    probs = np.maximum(probs, 1e-300)
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(succ, axis=1)  # sorted successor ids make files easy to read
    succ, probs = np.take_along_axis(succ, order, 1), np.take_along_axis(probs, order, 1)
    pi = stationary_distribution(succ, probs)
    return MarkovChain(words=words, successors=succ, probs=probs, stationary=pi)
