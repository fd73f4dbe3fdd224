"""Command line: ``python -m harness.report results/<sweep> [--out DIR] [--baseline STRATEGY]``.

Writes index.html, README.md, summary.csv, models.csv and the figure PNGs into
``--out`` (default ``reports/<sweep folder name>``) and prints the folder. Exit code 0 on
success, 2 when the input is rejected (no such sweep folder, unknown baseline). A damaged
record is named in one ``harness.report: warning:`` line on stderr (and in the report's
notes); the other runs are reported as usual (docs/reliability.md, "Damaged records").
"""
from __future__ import annotations

import argparse
import sys

from harness.report.build import write_report
from harness.report.data import load_report_data


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the report, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m harness.report",
                                     description="Build reports/<sweep>/ from a sweep's records.")
    parser.add_argument("sweep_dir", help="the sweep's results folder, e.g. results/quickstart")
    parser.add_argument("--out", default=None, help="output folder (default: reports/<sweep folder name>)")
    parser.add_argument("--baseline", default=None,
                        help="strategy the relative columns compare against (default: explicit if present, "
                             "else the first strategy)")
    args = parser.parse_args(argv)
    try:
        data = load_report_data(args.sweep_dir)
        for problem in data.problems:
            print(f"harness.report: warning: {problem}", file=sys.stderr)
        out = write_report(args.sweep_dir, args.out, baseline=args.baseline, data=data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"harness.report: error: {exc}", file=sys.stderr)
        return 2
    print(out / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
