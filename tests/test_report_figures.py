"""harness.report figures: one style per model everywhere, the judged quality figure, error bars.

The sweep is shaped like jobs/quickstart.yaml: tasks lm and copy, every strategy at one
depth, and two DEQ variants per task that differ only in their gradient (``grad=ift`` and
``grad=phantom``, so their labels are "deq, task=lm, grad=ift" and so on). The fixture writer
(tests/fixtures_records.py) has no gradient option, so :func:`_quickstart_like` adds it to the
records it wrote: the DEQ runs become ``grad=ift`` and each gets a ``grad=phantom`` twin.
The checkpointed runs get the weight-tied runs' eval records, as a real sweep does
(checkpointing changes what is stored, not what is computed).
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import rc_context
from matplotlib.colors import to_hex

from fixtures_records import write_fixture_sweep
from harness.report import load_report_data, model_frame
from harness.report.figure_style import STYLE, ModelStyle, model_styles
from harness.report.figures import FIGURE_BUILDERS, coinciding


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")


def _quickstart_like(root: Path, seeds: tuple[int, ...]) -> Path:
    fx = write_fixture_sweep(root, name="quickstart", tasks=("lm", "copy"), depths=(4,), seeds=seeds,
                             failed=FEW_SEEDS)
    runs = fx.dir / "runs"
    meta = _json(fx.dir / "sweep.json")
    for run_id, spec in list(fx.specs.items()):
        strategy = spec["model"]["depth"]["kind"]
        if strategy == "checkpointed":  # the weight-tied twin's eval records
            twin = fx.run_id_of("weight_tied", 4, spec["train"]["seed"], spec["task"])
            lines = [json.loads(ln) for ln in (runs / run_id / "metrics.jsonl").read_text().splitlines() if ln]
            evals = [json.loads(ln) for ln in (runs / twin / "metrics.jsonl").read_text().splitlines()
                     if ln and json.loads(ln)["kind"] == "eval"]
            merged = [r for r in lines if r["kind"] != "eval"] + evals
            (runs / run_id / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in merged))
        if strategy != "deq":
            continue
        spec["grid"]["model.depth"]["grad"] = "ift"
        _write(runs / run_id / "spec.json", spec)
        twin = run_id[:-1] + ("x" if run_id[-1] != "x" else "y")
        shutil.copytree(runs / run_id, runs / twin)
        spec = {**spec, "run_id": twin, "grid": {**spec["grid"], "model.depth": {**spec["grid"]["model.depth"],
                                                                                 "grad": "phantom"}}}
        _write(runs / twin / "spec.json", spec)
        summary = _json(runs / twin / "summary.json")
        summary.update(run_id=twin, step_time_s=summary["step_time_s"] * 0.8, activation_bytes=summary["activation_bytes"] // 2)
        for key, factor in (("val_ppl", 1.1), ("val_acc", 0.8), ("val_loss", 1.2)):
            if key in summary:
                summary[key] *= factor
        _write(runs / twin / "summary.json", summary)
        records = [json.loads(ln) for ln in (runs / twin / "metrics.jsonl").read_text().splitlines() if ln]
        for rec in records:  # a curve of its own: worse quality, more solver steps
            rec.update({k: rec[k] * f for k, f in (("val_ppl", 1.1), ("val_acc", 0.8), ("fwd_nstep", 1.3),
                                                   ("bwd_nstep", 0.7)) if k in rec})
        (runs / twin / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        meta["run_ids"].append(twin)
    _write(fx.dir / "sweep.json", meta)
    return fx.dir


FEW_SEEDS = (("explicit", 4, 1), ("neural_ode", 4, 1))  # these models finish one seed of two


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(data, model table, styles, figures) of the quickstart-like sweep, built once. The figures
    are drawn at a low resolution: the tests read the matplotlib figures, not the pixels."""
    data = load_report_data(_quickstart_like(tmp_path_factory.mktemp("figures"), (0, 1)))
    models = model_frame(data)
    styles = model_styles(models, data.extra_fields)
    with rc_context({**STYLE, "savefig.dpi": 30}):
        figures = {name: builder(data, models, styles) for name, builder in FIGURE_BUILDERS
                   if name in ("quality_curves", "tradeoff", "time_split", "solver_stats")}
    return data, models, styles, figures


def _lines(fig, label: str) -> list:
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == label]


def test_the_sweep_is_shaped_like_quickstart(sweep):
    _, models, _, _ = sweep
    labels = list(models["model"])
    assert {"deq, task=lm, grad=ift", "deq, task=lm, grad=phantom", "deq, task=copy, grad=ift",
            "deq, task=copy, grad=phantom", "explicit, task=copy"} <= set(labels)
    assert len(labels) == 12
    assert dict(zip(models["model"], models["n"]))["explicit, task=lm"] == 1
    assert dict(zip(models["model"], models["n"]))["deq, task=copy, grad=phantom"] == 2


def test_styles_are_distinct_and_stable(sweep):
    data, models, styles, _ = sweep
    assert set(styles) == set(models["model"])
    pairs = [(s.colour, s.marker) for s in styles.values()]
    assert len(set(pairs)) == len(pairs) == 12
    assert len({s.colour for s in styles.values()}) == 12  # here every model has its own colour
    assert model_styles(models, data.extra_fields) == styles  # same table, same styles
    assert styles["deq, task=lm, grad=ift"].colour == "#d62728" and styles["deq, task=lm, grad=ift"].marker == "*"
    deqs = [styles[f"deq, task={t}, grad={g}"] for t in ("lm", "copy") for g in ("ift", "phantom")]
    assert len({s.marker for s in deqs}) == 4
    # the DEQ variants differ in hue, not only in shade: pairwise RGB distance well above a shade step
    rgb = [np.array([int(s.colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255 for s in deqs]
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)) > 0.25
    # weight-tied and checkpointed are told apart by the line too (one is drawn over the other)
    assert styles["weight_tied, task=lm"].ls != styles["checkpointed, task=lm"].ls


def test_a_models_style_does_not_depend_on_the_models_after_it(sweep):
    data, models, styles, _ = sweep
    head = model_styles(models.iloc[:5], data.extra_fields)
    assert head == {label: styles[label] for label in models["model"].iloc[:5]}


@pytest.mark.parametrize("n_models", [1, 7, 25, 60, 150])
def test_style_pairs_stay_distinct_for_many_models(n_models):
    strategies = ["explicit", "weight_tied", "checkpointed", "neural_ode", "deq", "transformer_xl"]
    rows = [{"model": f"m{i}", "strategy": strategies[i % len(strategies)], "task": "lm", "depth": 4, "v": i}
            for i in range(n_models)]
    styles = model_styles(pd.DataFrame(rows), extra_fields=("v",))
    pairs = [(s.colour, s.marker) for s in styles.values()]
    assert len(styles) == n_models and len(set(pairs)) == n_models


def test_depths_of_one_series_share_marker_and_hue_and_shade_by_depth():
    rows = [{"model": f"{s}, depth {d}", "strategy": s, "task": "lm", "depth": d}
            for s in ("explicit", "deq") for d in (16, 4, 8)]
    styles = model_styles(pd.DataFrame(rows))
    deq = [styles[f"deq, depth {d}"] for d in (4, 8, 16)]
    assert {s.marker for s in deq} == {"*"} and {s.hue for s in deq} == {"#d62728"}
    assert deq[2].colour == "#d62728"  # the deepest in the series' own colour, shallower ones lighter
    brightness = [sum(int(s.colour[i:i + 2], 16) for i in (1, 3, 5)) for s in deq]
    assert brightness[0] > brightness[1] > brightness[2]


def _lines(fig, label: str) -> list:
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == label]


def test_every_figure_draws_each_model_in_its_style(sweep):
    _, _, styles, figures = sweep
    for label in ("deq, task=copy, grad=phantom", "weight_tied, task=lm"):
        style: ModelStyle = styles[label]
        lines = _lines(figures["quality_curves"].figure, label)
        assert len(lines) == 2 and all(to_hex(ln.get_color()) == style.colour and ln.get_marker() == style.marker
                                       for ln in lines)
        points = [c for ax in figures["tradeoff"].figure.axes for c in ax.containers if c.get_label() == label]
        assert len(points) == 2 and all(to_hex(c.lines[0].get_color()) == style.colour
                                        and c.lines[0].get_marker() == style.marker for c in points)
    ticks = figures["time_split"].figure.axes[0].get_yticklabels()
    assert {t.get_text(): to_hex(t.get_color()) for t in ticks} == {k: s.colour for k, s in styles.items()}
    handles = figures["solver_stats"].figure.legends[0].legend_handles
    drawn = {h.get_label(): (to_hex(h.get_color()), h.get_marker()) for h in handles if h.get_label()[:3] == "deq"}
    assert drawn == {k: (s.colour, s.marker) for k, s in styles.items() if k.startswith("deq")} and len(drawn) == 4


def test_legends_have_no_two_entries_alike(sweep):
    _, models, _, figures = sweep
    legend = figures["quality_curves"].figure.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == len(set(labels)) and set(models["model"]) <= set(labels)
    looks = [(to_hex(h.get_color()), h.get_marker(), str(h.get_linestyle())) for h in legend.legend_handles]
    assert len(looks) == len(set(looks))


def test_copy_panel_plots_the_recall_accuracy_the_verdicts_use(sweep):
    data, models, _, figures = sweep
    by_title: dict[str, set] = {}
    for ax in figures["quality_curves"].figure.axes:
        by_title.setdefault(ax.get_title(), set()).add(ax.get_ylabel())
    assert by_title == {"task=lm": {"val. perplexity"}, "task=copy": {"val. recall accuracy"}}
    assert set(models.loc[models["task"] == "copy", "quality_metric"]) == {"val_acc"}  # what the verdicts use
    copy_ax = next(ax for ax in figures["quality_curves"].figure.axes
                   if ax.get_title() == "task=copy" and "step" in ax.get_xlabel())
    line = next(ln for ln in copy_ax.get_lines() if ln.get_label() == "deq, task=copy, grad=ift")
    runs = data.finished[data.finished["model"] == "deq, task=copy, grad=ift"]["run_id"]
    evals = data.metrics[(data.metrics["run_id"].isin(runs)) & (data.metrics["kind"] == "eval")]
    expected = evals.groupby("step")["val_acc"].mean()
    assert np.allclose(line.get_xdata(), expected.index) and np.allclose(line.get_ydata(), expected.to_numpy())
    assert any(ln.get_label() == "chance accuracy" for ln in copy_ax.get_lines())
    tradeoff = figures["tradeoff"].figure
    assert {ax.get_ylabel() for ax in tradeoff.axes if ax.get_title() == "task copy"} == {"val. recall accuracy"}


def test_coinciding_curves_stay_visible_and_are_named(sweep):
    _, _, _, figures = sweep
    figure = figures["quality_curves"]
    step_ax = next(ax for ax in figure.figure.axes if ax.get_title() == "task=lm" and "step" in ax.get_xlabel())
    tied, ckpt = (next(ln for ln in step_ax.get_lines() if ln.get_label() == f"{s}, task=lm")
                  for s in ("weight_tied", "checkpointed"))
    assert np.allclose(tied.get_ydata(), ckpt.get_ydata())  # the same function, step for step
    assert tied.get_linewidth() > ckpt.get_linewidth() and ckpt.get_linestyle() != "-"
    assert ckpt.get_zorder() > tied.get_zorder()
    assert tied.get_markevery() != ckpt.get_markevery()  # markers on different points
    assert ("'checkpointed, task=lm' (drawn on top, dashed) coincides with 'weight_tied, task=lm'"
            in figure.caption and "by construction" in figure.caption)
    assert coinciding([("a", np.arange(3.0), np.ones(3)), ("b", np.arange(3.0), np.ones(3) * 1.01)]) == []
    assert coinciding([("a", np.arange(3.0), np.ones(3)), ("b", np.arange(3.0), np.ones(3))]) == [("a", "b")]


def _bars(fig, label: str) -> list[tuple[bool, bool]]:
    """(has x error bar, has y error bar) of one model's point in each panel."""
    return [(c.has_xerr, c.has_yerr) for ax in fig.axes for c in ax.containers if c.get_label() == label]


def test_tradeoff_error_bars_where_two_seeds_and_none_for_one(sweep):
    _, models, _, figures = sweep
    figure = figures["tradeoff"].figure
    by_model = models.set_index("model")
    for label, row in by_model.iterrows():
        assert _bars(figure, label) == [(row["n"] >= 2, row["n"] >= 2)] * 2, label
    assert _bars(figure, "explicit, task=copy") == [(False, False)] * 2  # one seed: no bar at all
    row = by_model.loc["deq, task=lm, grad=ift"]
    assert row["val_ppl_n"] == 2 and row["val_ppl_ci95"] > 0
    container = next(c for c in figure.axes[0].containers if c.get_label() == "deq, task=lm, grad=ift")
    segments = [seg for coll in container.lines[2] for seg in coll.get_segments()]
    heights = [abs(s[1][1] - s[0][1]) for s in segments if s[0][0] == s[1][0]]  # vertical: the quality bar
    assert max(heights) == pytest.approx(2 * row["val_ppl_ci95"], rel=1e-6)  # the whole 95% interval
    labels = [t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(set(labels)) == len(models)  # every model once, by its full label
    assert "95% t-interval" in figures["tradeoff"].caption
