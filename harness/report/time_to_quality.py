"""Time to quality (MLPerf's way): the steps and seconds each run took to first reach a target.

The targets are the job file's ``compare.target_ppl`` (LM: validation perplexity at or below
it) and ``compare.target_acc`` (copy memory: validation recall at or above it), fixed before
the data like the margins (``sweep.json`` keeps them). A run's time is that of its first
evaluation record that meets the target (``metrics.jsonl``: ``step`` and ``elapsed_s``, the
seconds since its training started, evaluations and checkpoints included), so it is resolved
to the evaluation interval. Per model, over its finished runs: how many reached the target,
and the median and range of their steps and seconds; a run that never reached it is counted as
such, never given a time. Models without periodic evaluations are left out.
"""
from __future__ import annotations

import math
import statistics

import pandas as pd

from harness.records.compare import read_compare
from harness.report.data import SweepData
from harness.report.tables import Column, Table
from harness.report.units import EM_DASH, format_value


def first_reach(evals: pd.DataFrame, metric: str, target: float) -> tuple[float, float] | None:
    """(step, elapsed_s) of the first evaluation meeting ``target`` (ppl: <=, acc: >=), else None."""
    if metric not in evals:
        return None
    rows = evals.dropna(subset=[metric]).sort_values("step")
    hit = rows[rows[metric] <= target] if metric == "val_ppl" else rows[rows[metric] >= target]
    if hit.empty:
        return None
    first = hit.iloc[0]
    elapsed = float(first["elapsed_s"]) if "elapsed_s" in hit and pd.notna(first.get("elapsed_s")) else math.nan
    return float(first["step"]), elapsed


def _spread(values: list[float], kind: str) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return EM_DASH
    mid = format_value(statistics.median(values), kind)
    if len(values) == 1:
        return mid
    return f"{mid} [{format_value(min(values), kind)}, {format_value(max(values), kind)}]"


def time_to_quality_frame(data: SweepData, models: pd.DataFrame) -> pd.DataFrame:
    """One row per model with periodic evaluations and a target for its task."""
    settings, _ = read_compare(data.meta)
    targets = {"lm": ("val_ppl", settings.target_ppl), "copy": ("val_acc", settings.target_acc)}
    metrics = data.metrics
    if metrics.empty or "kind" not in metrics or models.empty:
        return pd.DataFrame()
    evals = metrics[metrics["kind"] == "eval"]
    finished = data.finished
    rows = []
    for _, model in models.iterrows():
        metric, target = targets.get(str(model["task"]), (None, None))
        if target is None:
            continue
        run_ids = finished.loc[finished["model_key"] == model["model_key"], "run_id"].tolist()
        per_run = [evals[evals["run_id"] == run_id] for run_id in run_ids]
        if not any(len(e) > 1 for e in per_run):  # no periodic evaluations: nothing to time
            continue
        reached = [r for r in (first_reach(e, metric, target) for e in per_run) if r is not None]
        rows.append({"model": model["model"], "task": model["task"], "metric": metric, "target": target,
                     "runs": len(run_ids), "reached": len(reached),
                     "steps": [s for s, _ in reached], "seconds": [t for _, t in reached]})
    return pd.DataFrame(rows)


def time_to_quality_table(data: SweepData, models: pd.DataFrame) -> Table | None:
    frame = time_to_quality_frame(data, models)
    if frame.empty:
        return None
    rows = []
    for _, r in frame.iterrows():
        target = (f"val ppl <= {r['target']:g}" if r["metric"] == "val_ppl"
                  else f"val recall >= {100 * r['target']:g}%")
        never = r["runs"] - r["reached"]
        rows.append([str(r["model"]), target, f"{r['reached']}/{r['runs']}" + (f" ({never} never)" if never else ""),
                     _spread(r["steps"], "count"), _spread(r["seconds"], "seconds")])
    columns = [Column("model", "model", "text"), Column("target", "target", "text", "compare.target_ppl / target_acc"),
               Column("reached", "reached", "text", "finished runs that reached the target / finished runs"),
               Column("steps", "steps", "text", "median [min, max] over the runs that reached it"),
               Column("seconds", "seconds", "text", "median [min, max]: training wall-clock, evaluations included")]
    caption = ("Steps and training seconds until a run's validation quality first met the target the job file "
               "fixed (compare.target_ppl / compare.target_acc), resolved to the evaluation interval; median "
               "[min, max] over the runs that reached it, and how many never did (they get no time). Seconds "
               "are this machine's, with whatever else ran beside the run (the report's timeline shows it).")
    return Table("Time to quality", caption, columns, rows)
