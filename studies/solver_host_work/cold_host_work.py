"""What host work costs between two f evaluations on a CPU (issue 14, item 2).

Run from the repository root: ``.venv/bin/python studies/solver_host_work/cold_host_work.py``.

Part 1: the first NumPy calls after an f evaluation (the bench's DEQ-Transformer-like f,
B=16, T=64, D=128): each timed alone, median over 300 rounds. The second ``astype`` is
the same call again, warm.

Part 2: twelve f evaluations with a piece of host work after each: nothing, a dozen small
NumPy operations (the shape of Broyden's per-iteration small math), the same operations
in torch, and a Python loop over B. Printed: the median time of one f evaluation (f alone,
the host work not counted) and of the host work itself, over 40 rounds.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from solvers._broyden import pair_products  # noqa: E402
from solvers.bench import BenchConfig, TransformerCell  # noqa: E402


def first_calls(cell: TransformerCell, z: torch.Tensor, rounds: int = 300) -> None:
    buf = torch.randn(15, 16, 8192)
    names = ("prods.numpy()", "norm.numpy()", "astype(float64)", "astype(float64) again", "np.sqrt(...).tolist()")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        fz = cell(z)
        norm = torch.linalg.vector_norm(fz.reshape(16, -1), dim=1)
        prods = pair_products(buf[1:8:6], buf[:9])
        marks = [time.perf_counter()]
        host = prods.numpy()
        marks.append(time.perf_counter())
        norm.numpy()
        marks.append(time.perf_counter())
        wide = host.astype(np.float64)
        marks.append(time.perf_counter())
        host.astype(np.float64)
        marks.append(time.perf_counter())
        np.sqrt(wide[:, 0, 1]).tolist()
        marks.append(time.perf_counter())
        for name, start, end in zip(names, marks, marks[1:]):
            times[name].append(end - start)
    print("first calls after an f evaluation (median us):")
    for name in names:
        print(f"  {name:24s} {statistics.median(times[name]) * 1e6:7.2f}")


def between_f(cell: TransformerCell, z: torch.Tensor, rounds: int = 40) -> None:
    rng = np.random.default_rng(0)
    a, v, b = rng.random((16, 13, 15)), rng.random((16, 15)), rng.random(16)
    at, vt, bt = torch.from_numpy(a.copy()), torch.from_numpy(v.copy()), torch.from_numpy(b.copy())
    floats = [1.0] * 16

    def numpy_work() -> None:
        row = np.matmul(v[:, None, :13], a[:, :13, :])
        u = np.matmul(a, v[:, :, None])[:, :, 0]
        beta = 1.0 / (b + 1e-30)
        denom = u[:, 5] + 1.0
        usable = np.abs(denom) > 1e-8
        scale = -1.0 / np.where(usable, denom, 1.0)
        u[:, :5] * scale[:, None]
        row *= beta[:, None, None]

    def torch_work() -> None:
        row = torch.matmul(vt[:, None, :13], at[:, :13, :])
        u = torch.matmul(at, vt[:, :, None])[:, :, 0]
        beta = 1.0 / (bt + 1e-30)
        denom = u[:, 5] + 1.0
        usable = denom.abs() > 1e-8
        scale = -1.0 / torch.where(usable, denom, 1.0)
        u[:, :5] * scale[:, None]
        row *= beta[:, None, None]

    def python_work() -> None:
        rel = [x / (y + 1e-9) for x, y in zip(floats, floats)]
        all(p < q for p, q in zip(rel, floats))
        min(rel)

    kinds = {"nothing": lambda: None, "numpy": numpy_work, "torch": torch_work, "python": python_work}
    f_time: dict[str, list[float]] = {k: [] for k in kinds}
    work_time: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind, work in kinds.items():
            in_f = in_work = 0.0
            for _ in range(12):
                t0 = time.perf_counter()
                cell(z)
                t1 = time.perf_counter()
                work()
                in_work += time.perf_counter() - t1
                in_f += t1 - t0
            f_time[kind].append(in_f / 12)
            work_time[kind].append(in_work / 12)
    print("f evaluations with host work between them (median us per evaluation):")
    for kind in kinds:
        print(f"  {kind:8s} f {statistics.median(f_time[kind]) * 1e6:8.1f}   "
              f"host work {statistics.median(work_time[kind]) * 1e6:7.1f}")


def main() -> None:
    cfg = BenchConfig()
    cell = TransformerCell(cfg, torch.device("cpu"), torch.float32)
    z = torch.zeros(cfg.batch, cfg.seq, cfg.dim)
    print(f"torch threads={torch.get_num_threads()}")
    with torch.no_grad():
        first_calls(cell, z)
        between_f(cell, z)


if __name__ == "__main__":
    main()
