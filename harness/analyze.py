"""``python -m harness.analyze results/<sweep> [--run ID ...] [--force] [--no-report]``

The equilibrium analysis (``analysis.json``) of recorded runs, computed from their newest
checkpoint (``harness.run.analyze``), for sweeps recorded before runs analysed themselves
at the end of training. Prints one line per run (analysed, skipped and why, or failed and
why), then rewrites the sweep's report (``--reports``, default ``reports/<sweep>``) so its
"Equilibria of the trained cells" figure shows what was found. A checkpoint is the run's
last periodic one, so the analysis is of the weights at that step; the figure says so.

Exit status: 0 when every run was analysed or skipped, 1 when some run could not be
analysed, 2 for bad arguments (no such sweep folder, unknown run id).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.analyze",
                                     description="Equilibrium analysis of recorded runs from their checkpoints.")
    parser.add_argument("sweep_dir", help="the sweep's results folder, e.g. results/quickstart")
    parser.add_argument("--run", action="append", default=[], metavar="ID",
                        help="analyse only this run (a run id; repeat for several)")
    parser.add_argument("--force", action="store_true",
                        help="redo analyses taken from a checkpoint before (an end-of-training one is always kept)")
    parser.add_argument("--device", default="cpu", help="torch device to analyse on (default cpu)")
    parser.add_argument("--reports", default=None, help="report folder (default reports/<sweep folder name>)")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    args = parser.parse_args(argv)

    from harness.records import SweepStore

    sweep = Path(args.sweep_dir)
    store = SweepStore(sweep)
    if not (sweep / "runs").is_dir():
        print(f"harness.analyze: error: {sweep}: not a sweep's results folder (no runs/ in it)", file=sys.stderr)
        return 2
    known = store.run_ids()
    for problem in store.problems:  # a damaged sweep.json: its runs are taken from runs/
        print(f"harness.analyze: warning: {problem}", file=sys.stderr)
    unknown = [r for r in args.run if r not in known]
    if unknown:
        print(f"harness.analyze: error: {sweep}: no run {unknown[0]!r}; its runs: {', '.join(known)}",
              file=sys.stderr)
        return 2
    try:
        import torch

        torch.device(args.device)
    except (RuntimeError, ValueError):
        print(f"harness.analyze: error: --device {args.device!r} is not a torch device", file=sys.stderr)
        return 2

    from harness.run.analyze import analyze_run

    outcomes = [analyze_run(store.run(run_id), force=args.force, device=args.device)
                for run_id in (args.run or known)]
    for o in outcomes:
        print(f"{o.run_id} {o.name}: {o.state}: {o.message}")
    analysed = sum(o.state == "analysed" for o in outcomes)
    failed = sum(o.state == "failed" for o in outcomes)
    print(f"{analysed} analysed, {sum(o.state == 'skipped' for o in outcomes)} skipped, {failed} failed")
    if analysed and not args.no_report:
        from harness.report import write_report

        try:
            from harness.report import load_report_data

            data = load_report_data(sweep)
            for problem in data.problems:
                print(f"harness.analyze: warning: {problem}", file=sys.stderr)
            out = write_report(sweep, args.reports, data=data)
        except (FileNotFoundError, ValueError) as exc:
            print(f"harness.analyze: the report could not be written: {exc}", file=sys.stderr)
            return 1
        print(f"report: {out / 'index.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
