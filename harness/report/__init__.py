"""Comparison reports of a sweep: ``results/<sweep>/`` -> ``reports/<sweep>/``.

The page a researcher opens to decide whether implicit depth pays for their problem:
one row per model (runs grouped by everything but the seed, mean ± 95% t-interval over seeds),
memory and speed relative to a baseline strategy, solver behaviour, quality, figures
(memory against depth with reference slopes, perplexity curves, solver statistics,
time split), and what ran (job file, environment, failed and unfinished runs).

    python -m harness.report results/<sweep> [--out reports/<sweep>] [--baseline explicit]

or from Python (``harness.submit`` does this at the end of a sweep)::

    from harness.report import write_report
    write_report("results/quickstart")            # -> Path("reports/quickstart")

Reports are built from the records alone (through ``harness.records``), never by
rerunning; regenerating gives the same files apart from the generation timestamp.

Modules: ``data`` (reading), ``tables`` (numbers), ``figures`` (matplotlib), ``content``
(everything else the page says), ``html`` / ``markdown`` (rendering), ``build``
(``write_report``), ``units`` (KiB/ms/tok/s formatting).
"""
from harness.report.build import default_out_dir, write_report
from harness.report.data import SweepData, load_report_data
from harness.report.tables import choose_baseline, model_frame, summary_frame

__all__ = ["write_report", "default_out_dir", "load_report_data", "SweepData", "model_frame", "summary_frame",
           "choose_baseline"]
