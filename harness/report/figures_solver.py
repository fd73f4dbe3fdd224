"""The report's figures about how the models compute rather than how well they learn:
the DEQ solver over training (``solver_stats``), the trained cells' equilibria
(``equilibrium``, from analysis.json) and the sweep's timeline (``timeline``). Builders as
in :mod:`harness.report.figures`, which lists them in the report's order.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.report.data import SweepData
from harness.report.figure_style import ModelStyle, ReportFigure, mark_every, mean_curve, png_of, style_of

Styles = dict[str, ModelStyle]


def solver_stats(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
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
    handles = []
    for j, model in enumerate(deq):
        st = style_of(styles, model["model"])
        run_ids = finished[finished["model_key"] == model["model_key"]]["run_id"].tolist()
        for key, ax, ls in (("fwd_nstep", ax_n, "-"), ("bwd_nstep", ax_n, "--"), (res_key, ax_r, "-"),
                            ("bwd_res", ax_r, "--")):
            curve = mean_curve(data.metrics, run_ids, "train", key)
            if not curve.empty:
                ax.plot(curve["step"], curve[key], color=st.colour, ls=ls, lw=1.4, marker=st.marker, ms=5,
                        markevery=mark_every(len(curve), j))
        handles.append(Line2D([], [], color=st.colour, marker=st.marker, lw=1.6, label=str(model["model"])))
    ax_n.set_title("solver iterations (nstep)")
    ax_n.set_ylabel("iterations")
    ax_r.set_title("solver residual (fwd: " + ("relative" if res_key == "fwd_rel_res" else "absolute") + ")")
    ax_r.set_yscale("log")
    ax_r.set_ylabel("residual")
    for ax in (ax_n, ax_r):
        ax.set_xlabel("training step")
    handles += [Line2D([], [], color="#555555", ls="-", label="forward solve"),
                Line2D([], [], color="#555555", ls="--", label="backward solve")]
    fig.legend(handles=handles, loc="outside right upper")
    caption = ("Equilibrium-solver statistics from the training records (mean over seeds), one colour and "
               "marker per DEQ model: solid lines the forward solve, dashed lines the backward (adjoint) solve.")
    return ReportFigure("solver_stats", "DEQ solver over training", caption, png_of(fig), fig)


SOLVER_STYLES = {"broyden": "-", "anderson": "--", "fixed_point_iter": ":"}
MAX_ANALYSED_MODELS = 6


def _mean_series(series: list[list[float]]) -> np.ndarray:
    """The element-wise mean of lists (seeds) cut to the shortest; NaN for missing values."""
    n = min(len(s) for s in series)
    return np.nanmean(np.array([[np.nan if v is None else v for v in s[:n]] for s in series], dtype=float), axis=0)


def equilibrium(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
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
    deq, stacks = deq[:MAX_ANALYSED_MODELS], stacks[:MAX_ANALYSED_MODELS]
    handles = []
    for j, (model, found) in enumerate(deq):
        st = style_of(styles, model["model"])
        for solver, style in SOLVER_STYLES.items():
            traces = [a["rel_residual"][solver] for a in found if solver in a.get("rel_residual", {})]
            if traces:
                y = _mean_series(traces)
                ax_s.plot(np.arange(len(y)), y, ls=style, color=st.colour, lw=1.4, marker=st.marker, ms=4,
                          markevery=mark_every(len(y), j))
        handles.append(Line2D([], [], color=st.colour, marker=st.marker, lw=1.6, label=str(model["model"])))
    handles += [Line2D([], [], color="#555555", ls=style, label=solver) for solver, style in SOLVER_STYLES.items()]
    if deq:
        ax_s.legend(handles=handles, loc="best")
    for j, (model, found) in enumerate(stacks):
        st = style_of(styles, model["model"])
        y = _mean_series([a["layer_diff"] for a in found])
        ax_l.plot(np.arange(1, len(y) + 1), y, lw=1.4, ms=4, markevery=mark_every(len(y), j),
                  **st.line(label=str(model["model"])))
        ax_l.axvline(found[0].get("trained_layers", len(y)), color=st.colour, lw=0.6, ls=":")
    if stacks:
        ax_l.legend(loc="best")
    ax_s.set_title("DEQ: lowest relative residual so far")
    ax_s.set_xlabel("solver iteration")
    ax_l.set_title("stacks: ||z[i+1] - z[i]|| / ||z[i+1]||")
    ax_l.set_xlabel("layer")
    for ax in (ax_s, ax_l):
        ax.set_yscale("log")
    early = sorted({f"{model['model']} at step {a.get('step', '?')} of {a.get('steps', '?')}"
                    for model, found in deq + stacks for a in found if a.get("source") == "checkpoint"})
    when = ("The trained cells after training" if not early else
            "The trained cells (after training, except where a checkpoint was analysed afterwards with "
            f"python -m harness.analyze: {'; '.join(early)})")
    caption = (f"{when}, on the first validation batch (no early stop). Left: each "
               "solver's lowest relative residual so far against iteration for the DEQ models (solid Broyden, "
               "dashed Anderson, dotted plain fixed-point iteration). Right: relative layer differences of "
               "weight-tied stacks (the trained cell applied beyond its depth, which the dotted line marks) "
               "and explicit stacks; checkpointed stacks are dashed, so one that coincides with its "
               "weight-tied twin leaves it visible. Mean over seeds.")
    return ReportFigure("equilibrium", "Equilibria of the trained cells", caption, png_of(fig), fig)


PHASE_COLOURS = {"queued": "#eeeeee", "start-up": "#fdae6b", "set-up": "#fdd0a2", "training": "#6baed6",
                 "eval": "#74c476", "checkpoint": "#9e9ac8", "wrap-up": "#fc9272"}


def timeline(data: SweepData, models: pd.DataFrame, styles: Styles) -> ReportFigure | None:
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
    return ReportFigure("timeline", "Sweep timeline", caption, png_of(fig), fig)
