"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Each builder takes the sweep (:class:`~harness.report.data.SweepData`), the model table
(:func:`~harness.report.tables.model_frame`) and the models' styles
(:func:`~harness.report.figure_style.model_styles`) and returns a :class:`ReportFigure`, or
None when the sweep lacks its data (no depth variation, no DEQ run, no timing...), so a
report of a small sweep simply has fewer figures.

- ``memory_vs_depth``: activation (and peak) memory against depth, log-log, with
  reference slopes O(1), O(sqrt L), O(L);
- ``quality_curves``: the quality figure the verdicts judge (validation perplexity for a
  language model, recall accuracy for copy memory) against wall-clock time and against
  steps, one panel per baseline model and the models compared with it, with the synthetic
  corpus' optimal perplexity (or chance accuracy) as a horizontal line; curves that
  coincide (weight-tied and checkpointed train the same function) are drawn both visible
  and named in the caption;
- ``solver_stats``: DEQ forward/backward solver iterations and residuals over training;
- ``time_split``: time per step split into forward (solver part shown apart), backward, rest;
- ``tradeoff``: final quality against activation memory and against step time, with 95%
  intervals over seeds;
- ``equilibrium``: the trained cells' residuals and layer differences (analysis.json);
- ``timeline``: each run's phases on the clock.

Every model has one colour, marker and line style in every figure and its full table label
in every legend (:mod:`harness.report.figure_style`). Figures are built with
``matplotlib.figure.Figure`` (no pyplot, no global state), so PNGs are identical from run
to run.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
from matplotlib.transforms import blended_transform_factory

from harness.report.data import SweepData, field_label
from harness.report.figure_style import (STYLE, ModelStyle, ReportFigure, log_axis, mark_every, mean_curve,
                                         model_styles, png_of, series_key, style_of)
from harness.report.figures_solver import equilibrium, solver_stats, timeline
from harness.report.units import is_missing

__all__ = ["FIGURE_BUILDERS", "ReportFigure", "build_figures", "model_styles"]

Styles = dict[str, ModelStyle]


def _panels(models: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Models grouped by the baseline model they are compared with (one panel each); models
    without one are grouped by task."""
    panels = []
    based = models[models["baseline_model"].notna()] if "baseline_model" in models else models.iloc[:0]
    for base in dict.fromkeys(based["baseline_model"]):
        members = based[based["baseline_model"] == base]
        title = ", ".join(str(base).split(", ")[1:]) if ", " in str(base) else f"against {base}"
        panels.append((title or "all models", members))
    orphans = models.drop(index=based.index)
    tasks = list(dict.fromkeys(orphans["task"].astype(str)))
    for task in tasks:
        members = orphans[orphans["task"].astype(str) == task]
        panels.append((f"task {task}" if len(tasks) > 1 or panels else "all models", members))
    return panels


def memory_vs_depth(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
    """Activation (and peak) memory against depth on log-log axes, with reference slopes."""
    metrics = [m for m in ("activation_bytes", "peak_mem_bytes")
               if f"{m}_mean" in models and models[f"{m}_mean"].notna().any()]
    if not metrics or models.empty:
        return None
    with_depth = models.dropna(subset=["depth"])
    keys = [series_key(r, data.extra_fields) for _, r in with_depth.iterrows()]
    if not len(with_depth) or not (with_depth.groupby(keys)["depth"].nunique() >= 2).any():
        return None  # no strategy was run at two depths
    titles = {"activation_bytes": "activation memory (saved for backward)", "peak_mem_bytes": "peak memory"}
    fig = Figure(figsize=(5.0 * len(metrics) + 1.6, 3.9), layout="constrained")
    depths = sorted(float(d) for d in models["depth"].dropna().unique())
    legend: dict[str, object] = {}
    series_labels: dict[str, str] = {}  # label -> series key: one label per series in both panels
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        rows = models.dropna(subset=["depth", f"{metric}_mean"])
        keys = [series_key(r, data.extra_fields) for _, r in rows.iterrows()]
        for key in dict.fromkeys(keys):
            part = rows[[k == key for k in keys]].sort_values("depth")
            first = part.iloc[0]
            label = ", ".join([str(first["strategy"])] + [field_label(f, first[f]) for f in data.extra_fields
                                                          if f in part and part[f].astype(str).nunique() == 1])
            if label in series_labels and series_labels[label] != key:  # another series reads the same
                label = f"{label} ({first['model']})"
            series_labels.setdefault(label, key)
            base = style_of(styles, first["model"])
            std = part[f"{metric}_std"].fillna(0.0)
            ax.errorbar(part["depth"], part[f"{metric}_mean"], yerr=std, color=base.hue, ls=base.ls, lw=1.6,
                        capsize=2, label=label)
            for _, row in part.iterrows():
                st = style_of(styles, row["model"])
                ax.plot([row["depth"]], [row[f"{metric}_mean"]], ls="", marker=st.marker, color=st.colour,
                        mec=st.hue, ms=8 if st.marker == "*" else 6, zorder=3)
            legend.setdefault(label, Line2D([], [], color=base.hue, ls=base.ls, marker=base.marker, lw=1.6))
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
        log_axis(ax.yaxis, "bytes")
        ax.set_ylabel("bytes per training step")
        ax.set_title(titles[metric])
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside right upper")
    caption = ("Mean over seeds (error bars: std); each series' points are its models, shallow light to deep "
               "dark. Dotted lines: reference slopes O(1), O(\u221aL) and O(L) from the shallowest depth; on "
               "log-log axes the slope of a strategy's line is its memory growth with depth.")
    return ReportFigure("memory_vs_depth", "Memory against depth", caption, png_of(fig), fig)


QUALITY_NAMES = {"val_ppl": "val. perplexity", "val_loss": "val. loss", "val_acc": "val. recall accuracy"}
# The figure the verdicts judge a task by (harness.report.tables: the model table's quality_metric).
TASK_QUALITY = {"lm": "val_ppl", "copy": "val_acc"}


def judged_metric(members: pd.DataFrame, has: Callable[[str], bool]) -> str | None:
    """The quality figure to plot for these models: the one their verdicts use (the model
    table's ``quality_metric``, else their task's), else the first of val_ppl, val_loss,
    val_acc that ``has`` data."""
    wanted = [str(m) for m in members.get("quality_metric", pd.Series(dtype=object)).dropna()]
    wanted += [TASK_QUALITY[t] for t in members.get("task", pd.Series(dtype=object)).astype(str) if t in TASK_QUALITY]
    return next((m for m in [*wanted, *QUALITY_NAMES] if m in QUALITY_NAMES and has(m)), None)


def coinciding(curves: list[tuple[str, np.ndarray, np.ndarray]], rtol: float = 1e-6) -> list[tuple[str, str]]:
    """Pairs (earlier, later) of curves (label, x, y) that lie on each other point for point."""
    pairs = []
    for i, (a, xa, ya) in enumerate(curves):
        for b, xb, yb in curves[i + 1:]:
            if len(xa) and len(xa) == len(xb) and np.allclose(xa, xb, rtol=rtol, atol=0) \
                    and np.allclose(ya, yb, rtol=rtol, atol=0):
                pairs.append((a, b))
    return pairs


def _coincidence_note(pairs: dict[tuple[str, str], None], strategies: dict[str, str]) -> str:
    notes = []
    for under, over in pairs:
        why = ("by construction: checkpointing recomputes the weight-tied stack's activations instead of storing "
               "them, so both train the same function" if {strategies.get(under), strategies.get(over)} ==
               {"weight_tied", "checkpointed"} else "")
        notes.append(f"'{over}' (drawn on top, dashed) coincides with '{under}' (the wider line beneath) against "
                     f"training step" + (f", {why}" if why else ""))
    return (" " + "; ".join(notes) + ".") if notes else ""


def quality_curves(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
    """The judged quality figure (LM: val ppl; copy: recall accuracy) against wall-clock time
    (top) and steps (bottom)."""
    if models.empty or "kind" not in data.metrics:
        return None
    finished = data.finished
    evals = data.metrics[data.metrics["kind"] == "eval"]
    panels = []
    for title, members in _panels(models):
        runs = evals[evals["run_id"].isin(finished[finished["model_key"].isin(members["model_key"])]["run_id"])]
        metric = judged_metric(members, lambda m: m in runs and runs[m].notna().any())
        if metric is not None:
            panels.append((title, members, metric))
    if not panels:
        return None
    ncols = min(len(panels), 4)
    nrows = 2 * math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(min(3.3 * ncols + 2.4, 15.5), 2.6 * nrows + 0.4), layout="constrained")
    legend: dict[str, object] = {}
    lines: dict[str, object] = {}  # optimal perplexity, chance accuracy
    pairs: dict[tuple[str, str], None] = {}
    chance = False
    strategies = {str(m): str(s) for m, s in zip(models["model"], models["strategy"])}
    for p, (title, members, metric) in enumerate(panels):
        row0, col = 2 * (p // ncols), p % ncols
        member_runs = finished[finished["model_key"].isin(members["model_key"])]
        for r, xkey in enumerate(("elapsed_s", "step")):
            ax = fig.add_subplot(nrows, ncols, (row0 + r) * ncols + col + 1)
            curves = []
            for _, model in members.iterrows():
                run_ids = finished[finished["model_key"] == model["model_key"]]["run_id"].tolist()
                curve = mean_curve(data.metrics, run_ids, "eval", metric)
                if not curve.empty and xkey in curve:
                    curves.append((str(model["model"]), curve[xkey].to_numpy(float), curve[metric].to_numpy(float)))
            found = coinciding(curves)
            under, over = {a for a, _ in found}, {b for _, b in found}
            if xkey == "step":
                pairs.update(dict.fromkeys(found))
            for j, (label, x, y) in enumerate(curves):
                every = mark_every(len(x), j)
                if (label in under or label in over) and len(x) >= 2:  # the two's markers on different points
                    k = every[1] if every else 2
                    every = (0 if label in under else k // 2, k)
                kw = style_of(styles, label).line(ms=5, lw=1.4, label=label, markevery=every, zorder=2 + 0.01 * j)
                if label in under:
                    kw.update(lw=3.4, zorder=1.5)
                if label in over and kw["ls"] == "-":
                    kw["ls"] = "--"
                ax.plot(x, y, **kw)
            if metric == "val_ppl" and member_runs["optimal_ppl"].notna().any():
                ax.axhline(float(member_runs["optimal_ppl"].mean()), color="#2b8cbe", lw=1.0, ls="--",
                           label="optimal ppl")
            if metric == "val_acc" and "chance_acc" in member_runs and member_runs["chance_acc"].notna().any():
                ax.axhline(float(member_runs["chance_acc"].mean()), color="#888888", lw=1.0, ls=":",
                           label="chance accuracy")
                chance = True
            if metric == "val_ppl":
                ax.set_yscale("log")
                log_axis(ax.yaxis, "ppl")
            ax.set_xlabel("wall-clock time (s)" if xkey == "elapsed_s" else "training step")
            ax.set_ylabel(QUALITY_NAMES[metric])
            ax.set_title(title, fontsize=9)
            for handle, label in zip(*ax.get_legend_handles_labels()):  # a model's own style, not a wide twin
                if label in strategies:
                    legend.setdefault(label, Line2D([], [], **style_of(styles, label).line(ms=5, lw=1.4)))
                else:
                    lines.setdefault(label, handle)
    legend.update(lines)  # the reference lines after the models
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside right upper")
    metrics = {m for _, _, m in panels}
    what = " / ".join(QUALITY_NAMES[m] for m in QUALITY_NAMES if m in metrics)
    caption = (f"Validation quality ({what}: the figure the verdicts use) from the eval records, mean over the "
               "seeds of finished runs; top row against wall-clock time, bottom row against training steps. One "
               "panel per baseline model with the models compared to it."
               + (" Dashed blue line: the synthetic corpus' optimal perplexity."
                  if "val_ppl" in metrics and finished["optimal_ppl"].notna().any() else "")
               + (" Dotted grey line: a guesser's recall accuracy (chance)." if chance else "")
               + _coincidence_note(pairs, strategies))
    return ReportFigure("quality_curves", "Validation quality during training", caption, png_of(fig), fig)


def time_split(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
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
    beside = blended_transform_factory(ax.transAxes, ax.transData)  # x in axes fractions, y in rows
    for tick, model, yy in zip(ax.get_yticklabels(), rows["model"], y):
        st = style_of(styles, model)
        tick.set_color(st.colour)
        ax.plot([-0.018], [yy], ls="", marker=st.marker, color=st.colour, ms=8 if st.marker == "*" else 6,
                transform=beside, clip_on=False)
    ax.tick_params(axis="y", pad=16, length=0)
    ax.set_xlabel(f"time per training step ({unit})")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right")
    caption = ("Median step time split into forward (the DEQ solver's share shown apart: solver_time_s is part "
               "of fwd_time_s), backward and the rest (optimizer, communication). Mean over seeds; model "
               "names and markers in each model's colour and marker of the other figures.")
    return ReportFigure("time_split", "Where a training step's time goes", caption, png_of(fig), fig)


def _interval(row: pd.Series, metric: str, value: float, log: bool = False) -> list[list[float]] | None:
    """[[below], [above]] of the 95% interval over seeds; None for one seed (n < 2). On a log axis
    the lower arm stops short of zero."""
    n, half = row.get(f"{metric}_n"), row.get(f"{metric}_ci95")
    if is_missing(n) or float(n) < 2 or is_missing(half):
        return None
    half = float(half)
    return [[min(half, 0.95 * value) if log else half], [half]]


def tradeoff(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
    """Final quality against activation memory and against step time, one point per model with
    its 95% interval over seeds (one row of panels per task)."""
    if models.empty:
        return None
    costs = [c for c in ("activation_bytes", "step_time_s") if f"{c}_mean" in models and models[f"{c}_mean"].notna().any()]
    rows = []
    for task in dict.fromkeys(models["task"].astype(str)):
        subset = models[models["task"].astype(str) == task]
        quality = judged_metric(subset, lambda m: f"{m}_mean" in subset and subset[f"{m}_mean"].notna().any())
        if quality is not None:
            rows.append((task, subset, quality))
    if not rows or not costs:
        return None
    fig = Figure(figsize=(4.6 * len(costs) + 2.4, 3.5 * len(rows) + 0.2), layout="constrained")
    with_bars = 0
    for r, (task, subset, quality) in enumerate(rows):
        for i, cost in enumerate(costs):
            ax = fig.add_subplot(len(rows), len(costs), r * len(costs) + i + 1)
            for _, row in subset.iterrows():
                x, y = row[f"{cost}_mean"], row[f"{quality}_mean"]
                if is_missing(x) or is_missing(y):
                    continue
                st = style_of(styles, row["model"])
                xerr, yerr = _interval(row, cost, float(x), log=True), _interval(row, quality, float(y))
                with_bars += xerr is not None or yerr is not None
                ax.errorbar([x], [y], xerr=xerr, yerr=yerr, ls="", marker=st.marker, color=st.colour,
                            ms=10 if st.marker == "*" else 7, mec="white", mew=0.5, elinewidth=1.1, capsize=2.5,
                            label=str(row["model"]), zorder=3)
                if subset["depth"].nunique() > 1 and not is_missing(row["depth"]):
                    ax.annotate(f"{float(row['depth']):g}", (x, y), xytext=(4, 3), textcoords="offset points",
                                fontsize=7, color="#555555")
            ax.set_xscale("log")
            log_axis(ax.xaxis, "bytes" if cost == "activation_bytes" else "seconds")
            ax.set_xlabel({"activation_bytes": "activation memory", "step_time_s": "step time"}[cost])
            ax.set_ylabel(QUALITY_NAMES[quality])
            if len(rows) > 1:
                ax.set_title(f"task {task}", fontsize=9)
            if i == len(costs) - 1:
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    bars = ("Error bars: the 95% t-interval over seeds, drawn for models with two or more finished seeds."
            if with_bars else "No error bars: every model has a single finished seed.")
    caption = ("Final validation quality (the figure the verdicts use) against cost, one point per model (mean "
               f"over seeds), labelled with its depth where depths differ. {bars} Lower-left is better for "
               "perplexity, upper-left for accuracy.")
    return ReportFigure("tradeoff", "Quality against cost", caption, png_of(fig), fig)


FigureBuilder = Callable[[SweepData, pd.DataFrame, Styles], "ReportFigure | None"]
FIGURE_BUILDERS: tuple[tuple[str, FigureBuilder], ...] = (
    ("memory_vs_depth", memory_vs_depth), ("quality_curves", quality_curves), ("tradeoff", tradeoff),
    ("time_split", time_split), ("solver_stats", solver_stats), ("equilibrium", equilibrium),
    ("timeline", timeline))


def build_figures(data: SweepData, models: pd.DataFrame) -> list[ReportFigure]:
    """Every figure the sweep has data for, in report order, each model in its one style."""
    styles = model_styles(models, data.extra_fields)
    out = []
    with rc_context(STYLE):
        for _, builder in FIGURE_BUILDERS:
            figure = builder(data, models, styles)
            if figure is not None:
                out.append(figure)
    return out
