"""Command line for the synthetic corpus (the generator itself is ``synthetic_corpus.py``).

    python -m harness.data.synthetic --out DIR [--vocab 2000 --train-tokens N --seed S] [--force]

writes wiki.{train,valid,test}.tokens, synthetic_chain.npz and synthetic.json into DIR and
prints the metadata (entropy rate, optimal perplexity, per-split true-model NLL) as JSON.
This module is not imported by ``harness.data`` so that ``python -m`` runs it cleanly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .datasets import synthetic_state
from .synthetic_corpus import SyntheticSpec, write_synthetic_corpus


def main(argv: list[str] | None = None) -> int:
    """CLI: write a synthetic corpus and print its metadata summary as JSON."""
    default = SyntheticSpec()
    parser = argparse.ArgumentParser(prog="python -m harness.data.synthetic",
                                     description="Write the synthetic Markov-chain corpus.")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--vocab", type=int, default=default.vocab_size, help="chain states incl. <eos>")
    parser.add_argument("--successors", type=int, default=default.successors)
    parser.add_argument("--alpha", type=float, default=default.dirichlet_alpha, help="Dirichlet concentration")
    parser.add_argument("--train-tokens", type=int, default=default.train_tokens)
    parser.add_argument("--valid-tokens", type=int, default=default.valid_tokens)
    parser.add_argument("--test-tokens", type=int, default=default.test_tokens)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--force", action="store_true", help="overwrite an existing synthetic corpus")
    args = parser.parse_args(argv)
    try:
        spec = SyntheticSpec(vocab_size=args.vocab, successors=args.successors, dirichlet_alpha=args.alpha,
                             train_tokens=args.train_tokens, valid_tokens=args.valid_tokens,
                             test_tokens=args.test_tokens, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    out = Path(args.out)
    if synthetic_state(out) != "absent" and not args.force:
        print(f"error: {out} already holds synthetic corpus files; pass --force to overwrite", file=sys.stderr)
        return 2
    meta = write_synthetic_corpus(out, spec)
    print(json.dumps({k: v for k, v in meta.items() if k != "note"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
