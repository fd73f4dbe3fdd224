"""Broyden of this tree against Broyden of an earlier revision, and both against the floor.

Run from anywhere inside the repository: ``.venv/bin/python studies/solver_host_work/ab_against_revision.py REV``
(REV: any git revision, e.g. ``96f9f11``). The revision's ``solvers/`` is unpacked into a
temporary folder and imported as a separate package. Then, on the bench's problem (B=16,
T=64, D=128, float32, the bench's defaults for max_iter, tol and stop mode), each of 41
rounds times the old Broyden, the new one and 'broyden passes only' (at the new one's f
evaluations) back to back, the order rotated and reversed from round to round. Printed:
the medians over rounds of new / old, old / floor and new / floor.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import solvers  # noqa: E402
from solvers.bench import BenchConfig, TransformerCell, broyden_passes_only  # noqa: E402


def load_revision(rev: str, into: Path):
    """The ``solvers`` package of git revision ``rev``, imported as ``solvers_at_rev``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "solvers"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(into)
    spec = importlib.util.spec_from_file_location("solvers_at_rev", into / "solvers" / "__init__.py",
                                                  submodule_search_locations=[str(into / "solvers")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["solvers_at_rev"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    cfg = BenchConfig()
    cell = TransformerCell(cfg, torch.device("cpu"), torch.float32)
    z0 = torch.zeros(cfg.batch, cfg.seq, cfg.dim)
    common = dict(max_iter=cfg.max_iter, tol=cfg.tol, stop_mode=cfg.stop_mode)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        old = load_revision(args.rev, Path(tmp))
        nfe = solvers.broyden(cell, z0, **common).nstep
        runs = {"old": lambda: old.broyden(cell, z0, **common), "new": lambda: solvers.broyden(cell, z0, **common),
                "floor": lambda: broyden_passes_only(cell, z0, nfe)}
        for run in runs.values():  # warm-up
            run()
        ratios: dict[str, list[float]] = {"new / old": [], "old / floor": [], "new / floor": []}
        names = list(runs)
        for k in range(args.rounds):
            order = names[k % 3:] + names[:k % 3]
            order = order[::-1] if k % 2 else order
            took = {}
            for name in order:
                start = time.perf_counter()
                runs[name]()
                took[name] = time.perf_counter() - start
            ratios["new / old"].append(took["new"] / took["old"])
            ratios["old / floor"].append(took["old"] / took["floor"])
            ratios["new / floor"].append(took["new"] / took["floor"])
    print(f"{args.rev} against this tree, {args.rounds} rounds, torch threads={torch.get_num_threads()}: "
          + "   ".join(f"{name} {statistics.median(values):.3f}" for name, values in ratios.items()))


if __name__ == "__main__":
    main()
