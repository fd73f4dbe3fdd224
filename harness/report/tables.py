"""Numbers of a report: per-model aggregates, baseline-relative columns, display tables.

- :func:`model_frame`: one row per model (runs grouped by everything but the seed),
  ``<metric>_mean``, ``<metric>_std`` (sample std, ddof=1), ``<metric>_ci95`` (half-width of
  the 95% t-interval, ``harness.report.stats``) and ``n`` over its finished runs; what the
  model and its baseline are matched on (``matched``) and, where matched in parameters, the
  equivalence verdict of its quality (``quality_diff``, ``quality_ci90_lo/hi``,
  ``quality_margin``, ``quality_verdict``: equal / better / worse / inconclusive,
  ``harness.report.verdicts``); a DEQ's ``solver_health``; the columns relative
  to the baseline: ``activation_saved_pct`` and
  ``peak_mem_saved_pct`` (100 * (1 - model / baseline), so positive means less memory)
  and ``slowdown_x`` (step time / baseline step time); whether the model learned anything
  (``learned``: yes / no / "" where the run did not record its reference, and
  ``learned_text``, :func:`learned_verdict`).
- :func:`summary_frame`: the per-run ``summary.csv`` (every summary field, grid axes,
  spec columns, and the relative columns against the run's baseline model).
- the display tables built from the model frame are in ``harness.report.display``.

The baseline model of a model is the model of the baseline strategy with the same task
and dataset that shares the most other settings with it (depth, cell, grid axes); ties
go to the closest depth, then the deeper one. Sweeps with several tasks get one set of
tables per task.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.records import schema
from harness.records.compare import CompareSettings, read_compare
from harness.report.data import METRIC_FIELDS, IDENTITY_FIELDS, SweepData, order_strategies
from harness.report import stats, verdicts
from harness.report.units import is_missing

RELATIVE_FIELDS = ("activation_saved_pct", "peak_mem_saved_pct", "slowdown_x")


@dataclass(frozen=True)
class Column:
    """A table column: its header, what it means (tooltip / footnote) and its unit kind."""

    header: str
    field: str
    kind: str
    help: str = ""


@dataclass(frozen=True)
class Table:
    """A display table: headers and rows of already formatted strings."""

    title: str
    caption: str
    columns: list[Column]
    rows: list[list[str]]
    row_notes: list[str] = field(default_factory=list)  # per-row tooltip (HTML only)


def choose_baseline(data: SweepData, baseline: str | None = None) -> str | None:
    """The baseline strategy: the one asked for, else ``explicit`` if present, else the first."""
    strategies = data.strategies()
    if baseline is not None:
        if baseline not in strategies:
            allowed = ", ".join(strategies) or "(none: the sweep has no runs)"
            raise ValueError(f"baseline: {baseline!r} is not a strategy of this sweep; choose one of: {allowed}")
        return baseline
    if not strategies:
        return None
    return "explicit" if "explicit" in strategies else strategies[0]


def _sort_key(strategy: str, depth: float, first_run: int, order: list[str]) -> tuple:
    """Models in strategy order, then by depth, then in the sweep's own run order."""
    rank = order.index(strategy) if strategy in order else len(order)
    return rank, (math.inf if is_missing(depth) else float(depth)), first_run


def _match_baseline(row: pd.Series, candidates: pd.DataFrame, fields: tuple[str, ...]) -> pd.Series | None:
    """The candidate of the same task and data setting sharing the most settings with ``row``;
    ties: closest, then larger, depth. None when no candidate has the same task and data."""
    for must in ("task", "dataset", "data_setting"):
        candidates = candidates[[str(c) == str(row[must]) for c in candidates[must]]] if len(candidates) else candidates
    if candidates.empty:
        return None
    best, best_key = None, None
    for _, cand in candidates.iterrows():
        shared = sum(1 for f in fields if f != "strategy" and str(cand[f]) == str(row[f]))
        if is_missing(row["depth"]) or is_missing(cand["depth"]):
            gap, deeper = math.inf, 0.0
        else:
            gap = abs(math.log(max(float(cand["depth"]), 1e-12) / max(float(row["depth"]), 1e-12)))
            deeper = float(cand["depth"])
        key = (-shared, gap, -deeper, str(cand["model"]))
        if best_key is None or key < best_key:
            best, best_key = cand, key
    return best


def _ratio(numerator: float, denominator: float) -> float:
    if is_missing(numerator) or is_missing(denominator) or float(denominator) == 0:
        return math.nan
    return float(numerator) / float(denominator)


def _relative(values: dict, base: pd.Series | None) -> dict:
    """Memory saved (%) and slowdown (x) of a row's means against its baseline model."""
    if base is None:
        return {"baseline_model": None, **{f: math.nan for f in RELATIVE_FIELDS}}
    act = _ratio(values.get("activation_bytes"), base["activation_bytes_mean"])
    peak = _ratio(values.get("peak_mem_bytes"), base["peak_mem_bytes_mean"])
    return {"baseline_model": base["model"],
            "activation_saved_pct": 100.0 * (1.0 - act) if not is_missing(act) else math.nan,
            "peak_mem_saved_pct": 100.0 * (1.0 - peak) if not is_missing(peak) else math.nan,
            "slowdown_x": _ratio(values.get("step_time_s"), base["step_time_s_mean"])}


def model_frame(data: SweepData, baseline: str | None = None) -> pd.DataFrame:
    """One row per model over its finished runs: means, stds, n, and baseline-relative columns."""
    baseline = choose_baseline(data, baseline)
    settings, _ = read_compare(data.meta)
    finished = data.finished
    rows = []
    for model_key, runs in finished.groupby("model_key", sort=False):
        first = runs.iloc[0]
        row = {"model": first["model"], "model_key": model_key, "n": len(runs), "_first": int(runs.index.min()),
               "n_runs": int((data.runs["model_key"] == model_key).sum()),
               "data_setting": first["data_setting"], "depth_series": first["depth_series"],
               **{f: first[f] for f in dict.fromkeys(data.group_fields + data.extra_fields)}}
        row["seeds"] = " ".join(str(s) for s in sorted(runs["seed"].dropna().tolist(), key=str))
        for metric in METRIC_FIELDS:
            values = pd.to_numeric(runs[metric], errors="coerce").dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{metric}_n"] = len(values)
            row[f"{metric}_ci95"] = stats.mean_ci95(row[f"{metric}_std"], len(values))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = order_strategies(data.runs["strategy"].dropna().unique())
    frame["_sort"] = [_sort_key(r["strategy"], r["depth"], r["_first"], order) for _, r in frame.iterrows()]
    frame = frame.sort_values("_sort", kind="stable").drop(columns=["_sort", "_first"]).reset_index(drop=True)
    candidates = frame[frame["strategy"] == baseline]
    relative = []
    for _, row in frame.iterrows():
        base = _match_baseline(row, candidates, data.group_fields)
        means = {m: row[f"{m}_mean"] for m in ("activation_bytes", "peak_mem_bytes", "step_time_s")}
        relative.append(_relative(means, base))
        relative[-1].update(_quality_difference(row, base, settings))
        relative[-1].update(_slowdown_interval(data, row, base, settings))
    added = {key: [r[key] for r in relative]
             for key in ("baseline_model", *RELATIVE_FIELDS, *QUALITY_DIFF_FIELDS, "slowdown_lo", "slowdown_hi")}
    learned = [learned_verdict(row) for _, row in frame.iterrows()]
    added["learned"] = [v for v, _ in learned]
    added["learned_text"] = [t for _, t in learned]
    return pd.concat([frame, pd.DataFrame(added, index=frame.index)], axis=1)  # one block, not one per column


# A language model has learned from context when its validation perplexity is below this
# fraction of the context-free (unigram) perplexity; copy memory, when its recall accuracy is
# above chance by more than the 95% binomial bound of a guesser over as many digits.
LEARNED_PPL_RATIO = 0.9
LEARNED_Z = 1.96


def learned_verdict(row: pd.Series) -> tuple[str, str]:
    """("yes" / "no" / "", text) for one model: did it learn anything beyond a context-free
    guess? LM: mean val ppl against the recorded ``unigram_ppl``; copy: mean val acc against
    ``chance_acc`` + 1.96 x its standard error over the seeds' recalled digits (``val_tokens``).
    "" where the runs recorded no reference (sweeps from before it existed)."""
    def mean(name: str) -> float:
        value = row.get(f"{name}_mean")
        return math.nan if is_missing(value) else float(value)

    task = str(row.get("task"))
    if task == "lm":
        ppl, unigram = mean("val_ppl"), mean("unigram_ppl")
        if not (math.isfinite(unigram) and unigram > 0) or math.isnan(ppl):
            return "", ""
        ratio = ppl / unigram
        learned = ratio < LEARNED_PPL_RATIO
        return ("yes" if learned else "no"), f"{'yes' if learned else 'no'} ({ratio:.2g}\u00d7 unigram)"
    if task == "copy":
        acc, chance, tokens = mean("val_acc"), mean("chance_acc"), mean("val_tokens")
        if not (math.isfinite(chance) and 0 < chance < 1 and math.isfinite(tokens) and tokens > 0) or math.isnan(acc):
            return "", ""
        n_digits = tokens * max(1, int(row.get("val_acc_n") or 1))
        bound = chance + LEARNED_Z * math.sqrt(chance * (1 - chance) / n_digits)
        learned = acc > bound
        sign = ">" if learned else "\u2264"
        return ("yes" if learned else "no"), f"{'yes' if learned else 'no'} ({100 * acc:.3g}% {sign} {100 * bound:.3g}%)"
    return "", ""


QUALITY_METRIC = verdicts.QUALITY_METRIC  # task -> (the figure quality is judged by, higher is better)
QUALITY_DIFF_FIELDS = ("matched", "quality_metric", "quality_diff", "quality_ci90_lo", "quality_ci90_hi",
                       "quality_margin", "quality_verdict", "quality_seeds_needed", "quality_text",
                       "solver_health", "solver_flagged")


def _slowdown_interval(data: SweepData, row: pd.Series, base: pd.Series | None, settings: CompareSettings) -> dict:
    """The 95% interval of the step-time ratio against the baseline (of the ratio of geometric
    means: over seeds, or over the runs' recorded step times with one seed; docs/verdicts.md)."""
    if base is None or base["model"] == row["model"]:
        return {"slowdown_lo": math.nan, "slowdown_hi": math.nan}
    ratio = verdicts.pair_ratio(data, verdicts.make_pair(row, base, settings), "step_time_s")
    return {"slowdown_lo": ratio.lo, "slowdown_hi": ratio.hi}


def _quality_difference(row: pd.Series, base: pd.Series | None, settings: CompareSettings) -> dict:
    """What the model is matched on against its baseline and, where matched in parameters, the
    equivalence verdict of its quality (harness.report.verdicts); the DEQ's solver health."""
    metric, _ = QUALITY_METRIC.get(str(row["task"]), (None, False))
    flagged, health = verdicts.solver_health(row)
    out = {"matched": "", "quality_metric": metric, "quality_diff": math.nan, "quality_ci90_lo": math.nan,
           "quality_ci90_hi": math.nan, "quality_margin": math.nan, "quality_verdict": "",
           "quality_seeds_needed": math.nan, "quality_text": "", "solver_health": health, "solver_flagged": flagged}
    if base is None or base["model"] == row["model"]:
        return out
    pair = verdicts.make_pair(row, base, settings)
    out["matched"] = pair.matched_on()
    if metric is None or not pair.params_matched:
        return out
    verdict = verdicts.quality_verdict(row, base, settings)
    if verdict is None:
        return out
    out.update({"quality_diff": verdict.diff, "quality_ci90_lo": verdict.ci90[0], "quality_ci90_hi": verdict.ci90[1],
                "quality_margin": verdict.margin, "quality_verdict": verdict.verdict,
                "quality_seeds_needed": verdict.seeds_needed or math.nan, "quality_text": verdict.text()})
    return out


def summary_frame(data: SweepData, models: pd.DataFrame) -> pd.DataFrame:
    """One row per run (all states): identity, status, every summary metric, relative columns,
    grid axes and spec columns, in a fixed column order."""
    runs = data.runs.copy()
    by_key = {r["model_key"]: r for _, r in models.iterrows()} if not models.empty else {}
    by_label = {r["model"]: r for _, r in models.iterrows()} if not models.empty else {}
    relative = []
    for _, run in runs.iterrows():
        model = by_key.get(run["model_key"])
        base_label = None if model is None else model["baseline_model"]
        base = by_label.get(base_label) if isinstance(base_label, str) else None
        values = {m: run[m] for m in ("activation_bytes", "peak_mem_bytes", "step_time_s")}
        relative.append(_relative(values, base))
    for key in ("baseline_model", *RELATIVE_FIELDS):
        runs[key] = [r[key] for r in relative]
    head = ["run_id", "name", "model", "state", "reason", "failed_rank", "attempt", "step", "started", "ended"]
    grid = sorted(c for c in runs.columns if c.startswith("grid."))
    spec = sorted(c for c in runs.columns if c.startswith("spec."))
    known = set(head) | set(IDENTITY_FIELDS) | set(METRIC_FIELDS) | {"baseline_model", *RELATIVE_FIELDS}
    samples = set(schema.keys("summary", "samples"))  # per-step lists: in summary.json, not the CSV
    other = sorted(c for c in runs.columns if c not in known and c not in grid and c not in spec
                   and c not in ("model_key",) and c not in samples)
    order = [*head, *IDENTITY_FIELDS, *METRIC_FIELDS, "baseline_model", *RELATIVE_FIELDS, *other, *grid, *spec]
    return runs[[c for c in order if c in runs.columns]]
