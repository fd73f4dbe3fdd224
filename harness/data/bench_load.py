"""How long and how much memory does loading a WikiText-103-sized corpus take?

The real corpus cannot be downloaded here, so this writes a stand-in with the same
shape: ``--tokens`` training tokens (WikiText-103: ~103M) over a Zipfian vocabulary of
``--vocab`` words (~268k), paragraphs of ~115 tokens separated by blank lines, heading
lines, and small valid/test splits. It then loads it twice, each time in a fresh Python
process so the figures are separate: first uncached (count + encode + write cache), then
cached (``torch.load`` with mmap), plus the time to touch every cached token once.
Peak RSS is ``ru_maxrss`` of the child (torch import included; ``rss_after_import`` is
that part alone).

    python -m harness.data.bench_load --tokens 100000000 [--vocab 267735 --repeat 3 --dir DIR --keep]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARAGRAPH_TOKENS = 115


def _make_words(n_words: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct random lower-case words, short for frequent ranks as in English (~4-5 letters on average)."""
    out = ["<unk>", ",", ".", "the", "@-@", "@,@", "@.@"]
    words = set(out)
    width = 16
    while len(out) < n_words:
        n = n_words - len(out) + 1000
        ranks = np.arange(len(out), len(out) + n)
        lengths = (2 + np.log2(ranks + 1) / 4 + rng.integers(0, 3, size=n)).astype(int).tolist()
        raw = (rng.integers(0, 26, size=(n, width)) + 97).astype(np.uint8).tobytes().decode("ascii")
        for i, length in enumerate(lengths):
            word = raw[i * width: i * width + length]
            if word not in words:
                words.add(word)
                out.append(word)
                if len(out) == n_words:
                    break
    return np.asarray(out, dtype=object)


def _write_split(path: Path, n_tokens: int, words: np.ndarray, cdf: np.ndarray, rng: np.random.Generator,
                 chunk: int = 1_000_000) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(" \n = Synthetic Article = \n \n")
        written = 0
        while written < n_tokens:
            n = min(chunk, n_tokens - written)
            tokens = words[np.searchsorted(cdf, rng.random(n))].tolist()
            cuts = np.cumsum(rng.integers(PARAGRAPH_TOKENS // 2, 3 * PARAGRAPH_TOKENS // 2, size=n // 40 + 2))
            cuts = cuts[cuts < n].tolist() + [n]
            lines, start = [], 0
            for i, end in enumerate(cuts):
                lines.append(" " + " ".join(tokens[start:end]) + " \n \n")
                if i % 12 == 11:
                    lines.append(f" = = {tokens[start]} {tokens[end - 1]} = = \n \n")
                start = end
            out.write("".join(lines))
            written += n


def write_wikitext_like(out_dir: str | Path, n_tokens: int, *, n_words: int = 267_735,
                        zipf_exponent: float = 1.0, seed: int = 0) -> dict:
    """wiki.{train,valid,test}.tokens with ~n_tokens train words (valid/test: n_tokens/475 each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = _make_words(n_words, rng)
    weights = 1.0 / np.arange(1, n_words + 1, dtype=np.float64) ** zipf_exponent
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    sizes = {"train": n_tokens, "valid": max(n_tokens // 475, 1000), "test": max(n_tokens // 475, 1000)}
    for split, n in sizes.items():
        _write_split(out_dir / f"wiki.{split}.tokens", n, words, cdf, rng)
    return {"text_bytes": sum((out_dir / f"wiki.{s}.tokens").stat().st_size for s in sizes), "words": n_words}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def load_once(data_dir: str | Path, cache_dir: str | Path) -> dict:
    """One load in this process -> timings and memory (run in a fresh process for clean peaks)."""
    import torch

    from .corpus import load_corpus
    rss_after_import = _peak_rss_bytes()
    start = time.perf_counter()
    corpus = load_corpus("wikitext103", data_dir, cache_dir=cache_dir)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    checksum = int(corpus.train.sum()) + int(corpus.valid.sum()) + int(corpus.test.sum())  # touches every page
    touch_s = time.perf_counter() - start
    return {"cache": corpus.meta["cache"], "load_s": load_s, "touch_s": touch_s,
            "peak_rss_bytes": _peak_rss_bytes(), "rss_after_import": rss_after_import,
            "train_tokens": int(corpus.train.numel()), "vocab": len(corpus.vocab), "checksum": checksum,
            "torch_threads": torch.get_num_threads()}


def _load_in_child(data_dir: Path, cache_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "harness.data.bench_load", "--load-once", str(data_dir), "--cache-dir", str(cache_dir)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_benchmark(n_tokens: int, *, n_words: int = 267_735, work_dir: str | Path | None = None,
                  keep: bool = False, in_process: bool = False, repeat: int = 1) -> dict:
    """Generate, then ``repeat`` x (load uncached, load cached) -> figures; the median run is reported.

    ``in_process`` skips the child processes (for tests; the RSS figures then mean little).
    """
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="deqbench-bench-load-"))
    data_dir, cache_dir = root / "wikitext103", root / "cache"
    try:
        start = time.perf_counter()
        gen = write_wikitext_like(data_dir, n_tokens, n_words=n_words)
        gen_s = time.perf_counter() - start
        load = (lambda: load_once(data_dir, cache_dir)) if in_process else (lambda: _load_in_child(data_dir, cache_dir))
        runs: dict[str, list[dict]] = {"uncached": [], "cached": []}
        for _ in range(repeat):
            shutil.rmtree(cache_dir, ignore_errors=True)
            runs["uncached"].append(load())
            runs["cached"].append(load())
        cache_bytes = sum(p.stat().st_size for p in cache_dir.glob("*.pt"))
        result = {"tokens_requested": n_tokens, "generate_s": gen_s, **gen, "cache_bytes": cache_bytes,
                  "repeat": repeat}
        for name, group in runs.items():
            result[name] = sorted(group, key=lambda r: r["load_s"])[len(group) // 2]
            result[f"{name}_load_s_all"] = [r["load_s"] for r in group]
        return result
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.data.bench_load", description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000_000, help="training tokens to generate")
    parser.add_argument("--vocab", type=int, default=267_735, help="distinct words")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--repeat", type=int, default=1, help="load pairs to run (median reported)")
    parser.add_argument("--load-once", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_once:
        print(json.dumps(load_once(args.load_once, args.cache_dir)))
        return 0
    if args.tokens < 1000 or args.vocab < 10:
        parser.error(f"--tokens={args.tokens} / --vocab={args.vocab} too small; allowed: >= 1000 / >= 10")
    result = run_benchmark(args.tokens, n_words=args.vocab, work_dir=args.dir, keep=args.keep,
                           repeat=max(args.repeat, 1))
    gib = 1 << 30
    for name in ("uncached", "cached"):
        r = result[name]
        print(f"{name:9s} (median of {result['repeat']}) load {r['load_s']:8.1f} s  touch {r['touch_s']:5.2f} s  "
              f"peak RSS {r['peak_rss_bytes'] / gib:5.2f} GiB (after import {r['rss_after_import'] / gib:4.2f})  "
              f"cache={r['cache']}  tokens={r['train_tokens']}  vocab={r['vocab']}")
    print(f"uncached load_s all runs: {result['uncached_load_s_all']}; cached: {result['cached_load_s_all']}")
    print(f"generated {result['text_bytes'] / 1e6:.0f} MB text in {result['generate_s']:.1f} s; cache file "
          f"{result['cache_bytes'] / 1e6:.0f} MB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
