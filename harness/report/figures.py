"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Each builder takes the sweep (:class:`~harness.report.data.SweepData`) and the model
table (:func:`~harness.report.tables.model_frame`) and returns a :class:`ReportFigure`,
or None when the sweep lacks its data (no depth variation, no DEQ run, no timing...),
so a report of a small sweep simply has fewer figures.

- ``memory_vs_depth``: activation (and peak) memory against depth, log-log, with
  reference slopes O(1), O(sqrt L), O(L);
- ``quality_curves``: validation perplexity (copy task: loss) against wall-clock time and
  against steps, one panel per baseline model and the models compared with it, with the
  synthetic corpus' optimal perplexity as a horizontal line;
- ``solver_stats``: DEQ forward/backward solver iterations and residuals over training;
- ``time_split``: time per step split into forward (solver part shown apart), backward, rest;
- ``tradeoff``: final quality against activation memory and against step time.

A strategy has the same colour in every figure (:func:`strategy_colours`). Figures are
built with ``matplotlib.figure.Figure`` (no pyplot, no global state), so PNGs are
identical from run to run.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator, ScalarFormatter

from harness.report.data import SweepData, field_label, order_strategies
from harness.report.units import is_missing, unit_for

KNOWN_COLOURS = {"explicit": "#4d4d4d", "weight_tied": "#1f77b4", "checkpointed": "#2ca02c",
                 "neural_ode": "#9467bd", "deq": "#d62728"}
SPARE_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = {"explicit": "s", "weight_tied": "o", "checkpointed": "^", "neural_ode": "D", "deq": "*"}
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8,
         "legend.frameon": False, "savefig.dpi": 110}


@dataclass(frozen=True)
class ReportFigure:
    """A rendered figure: file stem, title, caption (plain text) and PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def strategy_colours(strategies: Iterable[str]) -> dict[str, str]:
    """Fixed colours for known strategies; others take spare colours in display order."""
    out, spare = {}, iter(SPARE_COLOURS * 4)
    for name in order_strategies(strategies):
        out[name] = KNOWN_COLOURS.get(name) or next(spare)
    return out


def _shades(colour: str, n: int) -> list[tuple]:
    """n shades of one colour, light to dark (deeper models darker)."""
    rgb = np.array(mcolors.to_rgb(colour))
    if n <= 1:
        return [tuple(rgb)]
    return [tuple(1 - (1 - rgb) * (0.45 + 0.55 * i / (n - 1))) for i in range(n)]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _log_axis(axis: Axis, kind: str) -> None:
    """Log-scaled axis with ticks in human units: bytes at powers of two, else 1-2-5 decades."""
    if kind == "bytes":
        axis.set_major_locator(LogLocator(base=2.0, subs=(1.0,), numticks=8))
    else:
        axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0) if kind != "ppl" else (1.0, 2.0, 3.0, 5.0)))
    axis.set_minor_locator(NullLocator())

    def label(value: float, _pos: int) -> str:
        if value <= 0:
            return ""
        if kind == "ppl":
            return f"{value:g}"
        div, suffix = unit_for(value, kind)
        return f"{value / div:g} {suffix}".rstrip()

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))


def _panels(models: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Models grouped by the baseline model they are compared with (one panel each); models
    without one are grouped by task."""
    panels = []
    based = models[models["baseline_model"].notna()] if "baseline_model" in models else models.iloc[:0]
    for base in dict.fromkeys(based["baseline_model"]):
        members = based[based["baseline_model"] == base]
        panels.append((", ".join(str(base).split(", ")[1:]) or "all models", members))
    orphans = models.drop(index=based.index)
    tasks = list(dict.fromkeys(orphans["task"].astype(str)))
    for task in tasks:
        members = orphans[orphans["task"].astype(str) == task]
        panels.append((f"task {task}" if len(tasks) > 1 or panels else "all models", members))
    return panels


def _series_key(row: pd.Series, extra_fields: tuple[str, ...]) -> str:
    """A model's identity without its depth: one memory-vs-depth line per series."""
    return str([str(row[f]) for f in ("strategy", *extra_fields)])


def _series_label(row: pd.Series, extra_fields: tuple[str, ...]) -> str:
    return ", ".join([str(row["strategy"])] + [field_label(f, row[f]) for f in extra_fields])


def memory_vs_depth(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """Activation (and peak) memory against depth on log-log axes, with reference slopes."""
    metrics = [m for m in ("activation_bytes", "peak_mem_bytes")
               if f"{m}_mean" in models and models[f"{m}_mean"].notna().any()]
    if not metrics or models.empty:
        return None
    with_depth = models.dropna(subset=["depth"])
    depths_per_series = with_depth.groupby([_series_key(r, data.extra_fields) for _, r in with_depth.iterrows()])[
        "depth"].nunique() if len(with_depth) else pd.Series(dtype=int)
    if not (depths_per_series >= 2).any():  # no strategy was run at two depths
        return None
    titles = {"activation_bytes": "activation memory (saved for backward)", "peak_mem_bytes": "peak memory"}
    fig = Figure(figsize=(5.0 * len(metrics), 3.9), layout="constrained")
    depths = sorted(float(d) for d in models["depth"].dropna().unique())
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        rows = models.dropna(subset=["depth", f"{metric}_mean"])
        series = list(dict.fromkeys(_series_key(r, data.extra_fields) for _, r in rows.iterrows()))
        for j, key in enumerate(series):
            part = rows[[_series_key(r, data.extra_fields) == key for _, r in rows.iterrows()]].sort_values("depth")
            strategy = str(part["strategy"].iloc[0])
            std = part[f"{metric}_std"].fillna(0.0)
            ax.errorbar(part["depth"], part[f"{metric}_mean"], yerr=std, color=colours.get(strategy, "k"),
                        marker=MARKERS.get(strategy, "o"), ms=7 if strategy == "explicit" else 5, lw=1.6, capsize=2, ls=LINESTYLES[j % len(LINESTYLES)] if len(series) >
                        len(set(rows["strategy"])) else "-", label=_series_label(part.iloc[0], data.extra_fields))
        ax.set_xscale("log")
        ax.set_yscale("log")
        x0, x1 = depths[0], depths[-1]
        y0 = float(np.exp(np.log(rows[rows["depth"] == rows["depth"].min()][f"{metric}_mean"]).mean()))
        xs = np.array([x0, x1])
        for slope, text in ((0.0, "O(1)"), (0.5, r"O($\sqrt{L}$)"), (1.0, "O(L)")):
            ys = y0 * (xs / x0) ** slope
            ax.plot(xs, ys, color="#999999", lw=0.9, ls=(0, (2, 3)), zorder=0)
            ax.annotate(text, (xs[-1], ys[-1]), xytext=(3, 0), textcoords="offset points", color="#666666",
                        fontsize=8, va="center")
        ax.xaxis.set_major_locator(FixedLocator(depths))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(x0 / 1.15, x1 * 1.35)
        ax.set_xlabel("depth (layers; DEQ: max_iter; ODE: steps)")
        _log_axis(ax.yaxis, "bytes")
        ax.set_ylabel("bytes per training step")
        ax.set_title(titles[metric])
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), loc="upper left")
    caption = ("Mean over seeds (error bars: std). Dotted lines: reference slopes O(1), O(\u221aL) and O(L) "
               "from the shallowest depth; on log-log axes the slope of a strategy's line is its memory "
               "growth with depth.")
    return ReportFigure("memory_vs_depth", "Memory against depth", caption, _png(fig))


QUALITY_NAMES = {"val_ppl": "val. perplexity", "val_loss": "val. loss", "val_acc": "val. accuracy"}


def _quality_metric(columns: pd.DataFrame, suffix: str = "") -> str | None:
    """The quality metric these records or model rows have: val_ppl, else val_loss, else val_acc."""
    for metric in QUALITY_NAMES:
        if metric + suffix in columns and columns[metric + suffix].notna().any():
            return metric
    return None


def _mean_curve(metrics: pd.DataFrame, run_ids: list[str], kind: str, column: str) -> pd.DataFrame:
    """Mean over runs (seeds) of one column per step, with mean elapsed time."""
    recs = metrics[(metrics["run_id"].isin(run_ids)) & (metrics["kind"] == kind)]
    if column not in recs:
        return pd.DataFrame(columns=["step", "elapsed_s", column])
    recs = recs.dropna(subset=[column])
    cols = [c for c in ("elapsed_s", column) if c in recs]
    return recs.groupby("step", as_index=False)[cols].mean().sort_values("step")


def quality_curves(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """Validation perplexity (copy task: loss) against wall-clock time (top) and steps (bottom)."""
    if models.empty or "kind" not in data.metrics:
        return None
    finished = data.finished
    evals = data.metrics[data.metrics["kind"] == "eval"]
    panels = []
    for title, members in _panels(models):
        run_ids = finished[finished["model_key"].isin(members["model_key"])]["run_id"]
        metric = _quality_metric(evals[evals["run_id"].isin(run_ids)])
        if metric is not None:
            panels.append((title, members, metric))
    if not panels:
        return None
    ncols = min(len(panels), 4)
    nrows = 2 * math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(min(3.3 * ncols + 2.0, 15.0), 2.6 * nrows + 0.4), layout="constrained")
    legend: dict[str, object] = {}
    for p, (title, members, metric) in enumerate(panels):
        row0, col = 2 * (p // ncols), p % ncols
        member_runs = finished[finished["model_key"].isin(members["model_key"])]
        optimal = member_runs["optimal_ppl"].dropna()
        for r, xkey in enumerate(("elapsed_s", "step")):
            ax = fig.add_subplot(nrows, ncols, (row0 + r) * ncols + col + 1)
            per_strategy = members["strategy"].astype(str).value_counts()
            seen: dict[str, int] = {}
            for _, model in members.iterrows():
                strategy = str(model["strategy"])
                j = seen[strategy] = seen.get(strategy, -1) + 1
                label = strategy if per_strategy[strategy] == 1 else str(model["model"])
                run_ids = finished[finished["model_key"] == model["model_key"]]["run_id"].tolist()
                curve = _mean_curve(data.metrics, run_ids, "eval", metric)
                if curve.empty or xkey not in curve:
                    continue
                ax.plot(curve[xkey], curve[metric], color=colours.get(strategy, "k"),
                        ls=LINESTYLES[j % len(LINESTYLES)], marker=".", ms=4, lw=1.4, label=label)
            if metric == "val_ppl" and len(optimal):
                ax.axhline(float(optimal.mean()), color="#2b8cbe", lw=1.0, ls="--", label="optimal ppl")
            if metric == "val_ppl":
                ax.set_yscale("log")
                _log_axis(ax.yaxis, "ppl")
            ax.set_xlabel("wall-clock time (s)" if xkey == "elapsed_s" else "training step")
            ax.set_ylabel(QUALITY_NAMES[metric])
            ax.set_title(title, fontsize=9)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside right upper")
    metrics = {m for _, _, m in panels}
    what = " / ".join(QUALITY_NAMES[m] for m in QUALITY_NAMES if m in metrics)
    caption = (f"Validation quality ({what}) from the eval records, mean over the seeds of finished runs; "
               "top row against wall-clock time, bottom row against training steps. One panel per baseline "
               "model with the models compared to it."
               + (" Dashed blue line: the synthetic corpus' optimal perplexity."
                  if "val_ppl" in metrics and finished["optimal_ppl"].notna().any() else ""))
    return ReportFigure("quality_curves", "Validation quality during training", caption, _png(fig))


def solver_stats(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """DEQ forward/backward solver iterations and residuals over training steps."""
    train = data.metrics[data.metrics["kind"] == "train"] if "kind" in data.metrics else data.metrics
    if "fwd_nstep" not in train or train["fwd_nstep"].notna().sum() == 0 or models.empty:
        return None
    finished = data.finished
    deq = [m for _, m in models.iterrows()
           if train[train["run_id"].isin(finished[finished["model_key"] == m["model_key"]]["run_id"])]
           ["fwd_nstep"].notna().any()]
    if not deq:
        return None
    res_key = "fwd_rel_res" if "fwd_rel_res" in train and train["fwd_rel_res"].notna().any() else "fwd_abs_res"
    fig = Figure(figsize=(11.0, 3.6), layout="constrained")
    ax_n, ax_r = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for model, shade in zip(deq, _shades(colours.get(str(deq[0]["strategy"]), "#d62728"), len(deq))):
        run_ids = finished[finished["model_key"] == model["model_key"]]["run_id"].tolist()
        for key, ax, ls in (("fwd_nstep", ax_n, "-"), ("bwd_nstep", ax_n, "--"), (res_key, ax_r, "-"),
                            ("bwd_res", ax_r, "--")):
            curve = _mean_curve(data.metrics, run_ids, "train", key)
            if not curve.empty:
                ax.plot(curve["step"], curve[key], color=shade, ls=ls, lw=1.4)
    ax_n.set_title("solver iterations (nstep)")
    ax_n.set_ylabel("iterations")
    ax_r.set_title("solver residual (fwd: " + ("relative" if res_key == "fwd_rel_res" else "absolute") + ")")
    ax_r.set_yscale("log")
    ax_r.set_ylabel("residual")
    for ax in (ax_n, ax_r):
        ax.set_xlabel("training step")
    handles = [Line2D([], [], color=shade, lw=1.6, label=str(model["model"]))
               for model, shade in zip(deq, _shades(colours.get(str(deq[0]["strategy"]), "#d62728"), len(deq)))]
    handles += [Line2D([], [], color="#555555", ls="-", label="forward solve"),
                Line2D([], [], color="#555555", ls="--", label="backward solve")]
    fig.legend(handles=handles, loc="outside right upper")
    caption = ("Equilibrium-solver statistics from the training records (mean over seeds): solid lines the "
               "forward solve, dashed lines the backward (adjoint) solve.")
    return ReportFigure("solver_stats", "DEQ solver over training", caption, _png(fig))


def time_split(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """Stacked bars: time per step in forward (solver apart), backward and the rest."""
    needed = ("step_time_s_mean", "fwd_time_s_mean", "bwd_time_s_mean")
    if models.empty or any(c not in models for c in needed) or models["fwd_time_s_mean"].isna().all():
        return None
    rows = models.dropna(subset=["fwd_time_s_mean"]).iloc[::-1]
    solver = rows["solver_time_s_mean"].fillna(0.0).to_numpy() if "solver_time_s_mean" in rows else 0.0
    fwd = rows["fwd_time_s_mean"].to_numpy()
    bwd = rows["bwd_time_s_mean"].fillna(0.0).to_numpy()
    step = rows["step_time_s_mean"].fillna(0.0).to_numpy()
    parts = [("forward solver", solver, "#3182bd"), ("forward (rest)", np.clip(fwd - solver, 0, None), "#9ecae1"),
             ("backward", bwd, "#fd8d3c"), ("optimizer and rest", np.clip(step - fwd - bwd, 0, None), "#d9d9d9")]
    scale, unit = (1e3, "ms") if np.nanmax(step) < 1 else (1.0, "s")
    fig = Figure(figsize=(9.0, 0.32 * len(rows) + 1.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for label, values, colour in parts:
        values = np.nan_to_num(np.asarray(values, dtype=float) * scale)
        if values.sum() > 0:
            ax.barh(y, values, left=left, color=colour, label=label, height=0.7)
            left += values
    ax.set_yticks(y, [str(m) for m in rows["model"]])
    for tick, strategy in zip(ax.get_yticklabels(), rows["strategy"]):
        tick.set_color(colours.get(str(strategy), "k"))
    ax.set_xlabel(f"time per training step ({unit})")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right")
    caption = ("Median step time split into forward (the DEQ solver's share shown apart: solver_time_s is part "
               "of fwd_time_s), backward and the rest (optimizer, communication). Mean over seeds; model "
               "names coloured by strategy.")
    return ReportFigure("time_split", "Where a training step's time goes", caption, _png(fig))


def tradeoff(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """Final quality against activation memory and against step time, one point per model
    (one row of panels per task)."""
    if models.empty:
        return None
    costs = [c for c in ("activation_bytes", "step_time_s") if f"{c}_mean" in models and models[f"{c}_mean"].notna().any()]
    rows = []
    for task in dict.fromkeys(models["task"].astype(str)):
        subset = models[models["task"].astype(str) == task]
        quality = _quality_metric(subset, "_mean")
        if quality is not None:
            rows.append((task, subset, quality))
    if not rows or not costs:
        return None
    fig = Figure(figsize=(5.0 * len(costs), 3.5 * len(rows) + 0.2), layout="constrained")
    for r, (task, subset, quality) in enumerate(rows):
        for i, cost in enumerate(costs):
            ax = fig.add_subplot(len(rows), len(costs), r * len(costs) + i + 1)
            for strategy, part in subset.groupby("strategy", sort=False):
                part = part.dropna(subset=[f"{cost}_mean", f"{quality}_mean"])
                ax.scatter(part[f"{cost}_mean"], part[f"{quality}_mean"], color=colours.get(str(strategy), "k"),
                           marker=MARKERS.get(str(strategy), "o"), s=44 if strategy == "explicit" else 30,
                           label=str(strategy), zorder=3)
                for _, row in part.iterrows():
                    if subset["depth"].nunique() > 1 and not is_missing(row["depth"]):
                        ax.annotate(f"{float(row['depth']):g}", (row[f"{cost}_mean"], row[f"{quality}_mean"]),
                                    xytext=(3, 3), textcoords="offset points", fontsize=7, color="#555555")
            ax.set_xscale("log")
            _log_axis(ax.xaxis, "bytes" if cost == "activation_bytes" else "seconds")
            ax.set_xlabel({"activation_bytes": "activation memory", "step_time_s": "step time"}[cost])
            ax.set_ylabel(QUALITY_NAMES[quality])
            if len(rows) > 1:
                ax.set_title(f"task {task}", fontsize=9)
            ax.legend()
    caption = ("Final validation quality against cost, one point per model (mean over seeds), labelled with "
               "its depth where depths differ. Lower-left is better for perplexity and loss, upper-left for accuracy.")
    return ReportFigure("tradeoff", "Quality against cost", caption, _png(fig))


SOLVER_STYLES = {"broyden": "-", "anderson": "--", "fixed_point_iter": ":"}
MAX_ANALYSED_MODELS = 6


def _mean_series(series: list[list[float]]) -> np.ndarray:
    """The element-wise mean of lists (seeds) cut to the shortest; NaN for missing values."""
    n = min(len(s) for s in series)
    return np.nanmean(np.array([[np.nan if v is None else v for v in s[:n]] for s in series], dtype=float), axis=0)


def equilibrium(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """The trained cells' equilibrium analysis (analysis.json): residual against iteration
    of Broyden, Anderson and plain iteration for DEQ models; layer differences against layer
    for weight-tied and explicit stacks. Mean over each model's seeds."""
    if not data.analyses or models.empty:
        return None
    finished = data.finished
    deq, stacks = [], []
    for _, model in models.iterrows():
        runs = finished[finished["model_key"] == model["model_key"]]["run_id"]
        found = [data.analyses[r] for r in runs if r in data.analyses]
        if found and found[0].get("kind") == "deq":
            deq.append((model, found))
        elif found and found[0].get("kind") == "layers":
            stacks.append((model, found))
    if not deq and not stacks:
        return None
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    ax_s, ax_l = fig.subplots(1, 2)
    deq = deq[:MAX_ANALYSED_MODELS]
    handles = []
    for (model, found), shade in zip(deq, _shades(colours.get("deq", "#d62728"), max(1, len(deq)))):
        for solver, style in SOLVER_STYLES.items():
            traces = [a["rel_residual"][solver] for a in found if solver in a.get("rel_residual", {})]
            if traces:
                y = _mean_series(traces)
                ax_s.plot(np.arange(len(y)), y, ls=style, color=shade, lw=1.4)
        handles.append(Line2D([], [], color=shade, lw=1.6, label=str(model["model"])))
    handles += [Line2D([], [], color="#555555", ls=style, label=solver) for solver, style in SOLVER_STYLES.items()]
    if deq:
        ax_s.legend(handles=handles, loc="upper right")
    by_strategy: dict[str, list] = {}
    for model, found in stacks[:MAX_ANALYSED_MODELS]:
        by_strategy.setdefault(str(model["strategy"]), []).append((model, found))
    for strategy, group in by_strategy.items():
        for (model, found), shade in zip(group, _shades(colours.get(strategy, "#4d4d4d"), len(group))):
            y = _mean_series([a["layer_diff"] for a in found])
            ax_l.plot(np.arange(1, len(y) + 1), y, color=shade, lw=1.4, marker=MARKERS.get(strategy), ms=3,
                      label=str(model["model"]))
            ax_l.axvline(found[0].get("trained_layers", len(y)), color=shade, lw=0.6, ls=":")
    if stacks:
        ax_l.legend(loc="upper right")
    ax_s.set_title("DEQ: lowest relative residual so far")
    ax_s.set_xlabel("solver iteration")
    ax_l.set_title("stacks: ||z[i+1] - z[i]|| / ||z[i+1]||")
    ax_l.set_xlabel("layer")
    for ax in (ax_s, ax_l):
        ax.set_yscale("log")
    drawn = deq + stacks[:MAX_ANALYSED_MODELS]
    early = sorted({f"{model['model']} at step {a.get('step', '?')} of {a.get('steps', '?')}"
                    for model, found in drawn for a in found if a.get("source") == "checkpoint"})
    when = ("The trained cells after training" if not early else
            "The trained cells (after training, except where a checkpoint was analysed afterwards with "
            f"python -m harness.analyze: {'; '.join(early)})")
    caption = (f"{when}, on the first validation batch (no early stop). Left: each "
               "solver's lowest relative residual so far against iteration for the DEQ models (solid Broyden, "
               "dashed Anderson, dotted plain fixed-point iteration). Right: relative layer differences of "
               "weight-tied stacks (the trained cell applied beyond its depth, which the dotted line marks) "
               "and explicit stacks. Mean over seeds.")
    return ReportFigure("equilibrium", "Equilibria of the trained cells", caption, _png(fig))


PHASE_COLOURS = {"queued": "#eeeeee", "start-up": "#fdae6b", "set-up": "#fdd0a2", "training": "#6baed6",
                 "eval": "#74c476", "checkpoint": "#9e9ac8", "wrap-up": "#fc9272"}


def timeline(data: SweepData, models: pd.DataFrame, colours: dict[str, str]) -> ReportFigure | None:
    """Each run's life on the clock (harness.report.timeline): queued, start-up, set-up,
    training, eval, checkpoint, wrap-up, from the submission on."""
    from harness.report.timeline import PHASES, overhead_summary, run_timelines

    runs = run_timelines(data)
    if not runs:
        return None
    origin = min(r.start for r in runs)
    fig = Figure(figsize=(10.0, 0.3 * len(runs) + 1.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for y, run in enumerate(reversed(runs)):
        left = run.start - origin
        for phase in PHASES:
            width = run.phases.get(phase)
            if width:
                ax.barh(y, width, left=left, color=PHASE_COLOURS[phase], height=0.7, edgecolor="white", lw=0.3)
                left += width
    ax.set_yticks(range(len(runs)), [r.name for r in reversed(runs)])
    ax.set_xlabel("seconds since the sweep was submitted")
    ax.grid(axis="y", visible=False)
    fig.legend(handles=[Line2D([], [], color=c, lw=6, label=p) for p, c in PHASE_COLOURS.items()],
               loc="outside right upper")
    caption = ("Each run's last attempt on the clock: queued (waiting for room), start-up (Ray Train's "
               "controller and worker group), set-up (data, model, DeepSpeed, resume), training, eval and "
               "checkpoint time (drawn after training as totals), wrap-up (the last record, Ray Train "
               "shutting the run down). " + (overhead_summary(runs) or "") + ".")
    return ReportFigure("timeline", "Sweep timeline", caption, _png(fig))


FigureBuilder = Callable[[SweepData, pd.DataFrame, dict], "ReportFigure | None"]
FIGURE_BUILDERS: tuple[tuple[str, FigureBuilder], ...] = (
    ("memory_vs_depth", memory_vs_depth), ("quality_curves", quality_curves), ("tradeoff", tradeoff),
    ("time_split", time_split), ("solver_stats", solver_stats), ("equilibrium", equilibrium),
    ("timeline", timeline))


def build_figures(data: SweepData, models: pd.DataFrame) -> list[ReportFigure]:
    """Every figure the sweep has data for, in report order."""
    colours = strategy_colours(data.strategies())
    out = []
    with rc_context(STYLE):
        for _, builder in FIGURE_BUILDERS:
            figure = builder(data, models, colours)
            if figure is not None:
                out.append(figure)
    return out
