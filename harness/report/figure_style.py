"""How the report's figures look: one style per model, shared helpers, the rendered figure.

:func:`model_styles` gives every model of a report (a row of
:func:`~harness.report.tables.model_frame`, named by its ``model`` label) a
:class:`ModelStyle`: a colour, a marker and a line style, the same in every figure of the
report, so a reader who has found a model in one figure finds it in the next. The rules,
deterministic from the models' order in the model table:

- a *series* is a model without its depth (its strategy and the label's other settings:
  ``deq, task=lm, grad=ift``). Each series has its own colour and marker: the first series
  of a strategy its strategy's own (explicit grey square, weight-tied blue circle,
  checkpointed green triangle, Neural ODE purple diamond, DEQ red star), further series
  the next unused colour of the strategy's family (DEQ: red, orange, brown, magenta), else of
  the spare colours, and the next unused marker;
- models of one series at several depths share its marker and take shades of its colour,
  light (shallow) to the series' colour (deepest);
- the line style tells apart the series of one strategy within one task (the panel a
  figure groups them by): solid, then dashed, dash-dot, dotted. Checkpointed series start
  dashed, so a checkpointed curve drawn over the identical weight-tied one leaves it visible.

No two models share a (colour, marker) pair: where the colours run out, a model keeps a
colour with a marker no model of that colour has.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from harness.report.units import is_missing, unit_for

# Each strategy's colours: its own first, then clearly different hues for further series.
COLOUR_FAMILIES = {"explicit": ("#4d4d4d", "#000000", "#a6a6a6"),
                   "weight_tied": ("#1f77b4", "#17becf", "#08306b"),
                   "checkpointed": ("#2ca02c", "#bcbd22", "#00441b"),
                   "neural_ode": ("#9467bd", "#e377c2", "#3f007d"),
                   "deq": ("#d62728", "#ff7f0e", "#8c564b", "#c51b7d")}
SPARE_COLOURS = ("#008080", "#e6ab02", "#6b6ecf", "#637939", "#843c39", "#fdae6b", "#7b4173", "#5254a3")
STRATEGY_MARKERS = {"explicit": "s", "weight_tied": "o", "checkpointed": "^", "neural_ode": "D", "deq": "*"}
SPARE_MARKERS = ("X", "P", "v", "p", "<", ">", "h", "d", "8", "H")
MARKERS = tuple(STRATEGY_MARKERS.values()) + SPARE_MARKERS
LINESTYLES = ("-", "--", "-.", ":", (0, (3, 1, 1, 1, 1, 1)))
FIRST_LINESTYLE = {"checkpointed": 1}  # index into LINESTYLES of a strategy's first series
# Where a strategy's family is used up (or it has none): the spare colours, then the other families'.
ALL_COLOURS = tuple(dict.fromkeys(SPARE_COLOURS + tuple(c for fam in COLOUR_FAMILIES.values() for c in fam)))

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8,
         "legend.frameon": False, "savefig.dpi": 110}


@dataclass(frozen=True)
class ReportFigure:
    """A rendered figure: file stem, title, caption (plain text) and PNG bytes. ``figure``
    keeps the matplotlib figure it was drawn from (for checks; not compared)."""

    name: str
    title: str
    caption: str
    png: bytes
    figure: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ModelStyle:
    """How one model is drawn: ``colour`` (its own), ``hue`` (its series' colour, the same
    for all depths), ``marker`` and line style ``ls``."""

    colour: str
    hue: str
    marker: str
    ls: Any = "-"

    def line(self, **extra: Any) -> dict:
        """Keyword arguments for ``Axes.plot``: colour, marker and line style."""
        return {"color": self.colour, "marker": self.marker, "ls": self.ls, **extra}


def series_key(row: pd.Series, extra_fields: Iterable[str] = ()) -> str:
    """A model's identity without its depth: its run settings without depth (``depth_series``)
    where the records have them, else its strategy and the label's other settings."""
    if str(row.get("depth_series") or ""):
        return json.dumps([str(row.get("strategy")), str(row.get("depth_series"))])
    return json.dumps([str(row.get("strategy"))] + [str(row.get(f)) for f in extra_fields if f != "depth"])


def _shade(colour: str, fraction: float) -> str:
    """``colour`` mixed with white: fraction 0 is the colour itself, 1 white."""
    rgb = np.array(mcolors.to_rgb(colour))
    return mcolors.to_hex(1 - (1 - rgb) * (1 - fraction))


def _depth_order(depths: list[Any]) -> list[Any]:
    known = sorted({float(d) for d in depths if not is_missing(d)})
    return known + ([None] if any(is_missing(d) for d in depths) else [])


def model_styles(models: pd.DataFrame, extra_fields: Iterable[str] = ()) -> dict[str, ModelStyle]:
    """One :class:`ModelStyle` per ``model`` label of the model table, in its row order (see the
    module's docstring). The same table gives the same styles, whichever figure asks; a series'
    colour, marker and line style depend only on the series before it in the table."""
    if models is None or len(models) == 0 or "model" not in models:
        return {}
    extra = tuple(extra_fields)
    rows = [row for _, row in models.iterrows()]
    keys = [series_key(r, extra) for r in rows]
    series: dict[str, list[pd.Series]] = {}
    for key, row in zip(keys, rows):
        series.setdefault(key, []).append(row)
    used_colours: set[str] = set()
    used_markers: set[str] = set()
    per_strategy: dict[str, int] = {}
    per_task: dict[tuple[str, str], int] = {}
    base: dict[str, tuple[str, str, Any]] = {}
    for key, members in series.items():
        strategy, task = str(members[0].get("strategy")), str(members[0].get("task"))
        k = per_strategy[strategy] = per_strategy.get(strategy, -1) + 1
        family = COLOUR_FAMILIES.get(strategy, ())
        colour = next((c for c in family[k:] if c not in used_colours), None) or next(
            (c for c in ALL_COLOURS if c not in used_colours), ALL_COLOURS[len(base) % len(ALL_COLOURS)])
        own = STRATEGY_MARKERS.get(strategy)
        marker = own if own and k == 0 and own not in used_markers else next(
            (m for m in SPARE_MARKERS if m not in used_markers), MARKERS[len(base) % len(MARKERS)])
        j = per_task[(strategy, task)] = per_task.get((strategy, task), -1) + 1
        ls = LINESTYLES[(FIRST_LINESTYLE.get(strategy, 0) + j) % len(LINESTYLES)]
        used_colours.add(colour)
        used_markers.add(marker)
        base[key] = (colour, marker, ls)
    styles: dict[str, ModelStyle] = {}
    taken: set[tuple[str, str]] = set()
    for key, members in series.items():
        hue, marker, ls = base[key]
        depths = _depth_order([m.get("depth") for m in members])
        for row in members:
            d = row.get("depth")
            rank = depths.index(None if is_missing(d) else float(d))
            colour = hue if len(depths) < 2 else _shade(hue, 0.5 * (1 - rank / (len(depths) - 1)))
            pair_marker = marker
            if (colour, pair_marker) in taken:  # colours ran out: keep the colour, change the marker
                pair_marker = next((m for m in MARKERS if (colour, m) not in taken), marker)
            taken.add((colour, pair_marker))
            styles[str(row["model"])] = ModelStyle(colour=colour, hue=hue, marker=pair_marker, ls=ls)
    return styles


def style_of(styles: dict[str, ModelStyle], model: Any) -> ModelStyle:
    """A model's style; black circles for a label the table did not have."""
    return styles.get(str(model), ModelStyle("#000000", "#000000", "o"))


def mean_curve(metrics: pd.DataFrame, run_ids: list[str], kind: str, column: str) -> pd.DataFrame:
    """Mean over runs (seeds) of one column per step, with mean elapsed time."""
    recs = metrics[(metrics["run_id"].isin(run_ids)) & (metrics["kind"] == kind)]
    if column not in recs:
        return pd.DataFrame(columns=["step", "elapsed_s", column])
    recs = recs.dropna(subset=[column])
    cols = [c for c in ("elapsed_s", column) if c in recs]
    return recs.groupby("step", as_index=False)[cols].mean().sort_values("step")


def png_of(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp or software metadata: identical from run to run)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def log_axis(axis: Axis, kind: str) -> None:
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


def mark_every(n_points: int, offset: int) -> tuple[int, int] | None:
    """Markers on every k-th point of a curve (about eight per curve), starting at ``offset``
    mod k, so markers of curves drawn over each other fall on different points."""
    if n_points < 6:
        return None
    k = max(2, n_points // 8)
    return offset % k, k
