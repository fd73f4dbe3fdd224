"""Everything a report needs from a sweep's records, read once through harness.records.

``load_report_data(sweep_dir)`` returns a :class:`SweepData`: the run table of
``harness.records.load_sweep`` with a few derived columns, the per-step metrics of
``load_metrics``, the job text, ``sweep.json`` and every run's ``env.json``.

Damaged records (docs/reliability.md, "Damaged records") never stop a report: a run whose
``spec.json`` cannot be read, or that is ``finished`` without a ``summary.json``, is left out;
a finished run whose summary is damaged counts as not finished; damaged metrics lines are
skipped. ``SweepData.problems`` holds one line per damaged file (the report's notes and
``python -m harness.report``'s stderr show them).

Derived run columns (filled from the summary, else from the spec, so failed and
pending runs have them too):

- ``strategy``, ``depth``, ``seed``, ``cell``, ``task``, ``dataset``;
- ``model``: a short label of the model a run trains. Runs that differ only in their
  seed train the same model; the report groups them (mean ± 95% t-interval over seeds).
  The grouping key is strategy, cell, depth, task, dataset and every grid axis that
  is not a seed.
"""
from __future__ import annotations

import json
import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.records import RecordProblem, SweepStore, load_metrics, load_sweep, schema

# Display order of the depth strategies (unknown ones follow, alphabetically).
STRATEGY_ORDER = ("explicit", "weight_tied", "checkpointed", "neural_ode", "deq")

# The summary fields of docs/records.md (harness.records.schema), in the order the CSV lists them.
IDENTITY_FIELDS = tuple(k for k in schema.keys("summary", "identity") if k not in ("run_id", "name"))
SIZE_FIELDS = schema.keys("summary", "size")
MEMORY_FIELDS = schema.keys("summary", "memory")
SPEED_FIELDS = schema.keys("summary", "speed")
DEPTH_FIELDS = schema.keys("summary", "depth")
QUALITY_FIELDS = schema.keys("summary", "quality")
METRIC_FIELDS = SIZE_FIELDS + MEMORY_FIELDS + SPEED_FIELDS + DEPTH_FIELDS + QUALITY_FIELDS



@dataclass(frozen=True)
class SweepData:
    """A sweep's records, ready for tables and figures."""

    sweep_dir: Path
    name: str
    meta: dict
    job_text: str | None
    runs: pd.DataFrame        # one row per run (load_sweep + derived columns)
    metrics: pd.DataFrame     # one row per per-step record, with run_id and model
    envs: dict[str, dict]     # run_id -> env.json
    group_fields: tuple[str, ...]
    extra_fields: tuple[str, ...]  # group fields besides strategy/depth that tell models apart
    analyses: dict[str, dict] = dataclasses.field(default_factory=dict)  # run_id -> analysis.json
    statuses: dict[str, dict] = dataclasses.field(default_factory=dict)  # run_id -> status.json
    problems: tuple[str, ...] = ()  # one line per damaged record met (and what was done instead)

    @property
    def finished(self) -> pd.DataFrame:
        """Runs whose state is ``finished`` (the ones with a summary)."""
        return self.runs[self.runs["state"] == "finished"]

    def strategies(self) -> list[str]:
        """Strategies present in the sweep, in display order."""
        return order_strategies(self.runs["strategy"].dropna().unique()) if len(self.runs) else []


def order_strategies(names: Iterable[Any]) -> list[str]:
    """Known strategies in STRATEGY_ORDER, then the others alphabetically."""
    names = {str(n) for n in names}
    known = [s for s in STRATEGY_ORDER if s in names]
    return known + sorted(names - set(known))


def is_seed_axis(key: str) -> bool:
    """Grid axes that only change the random seed (``seed``, ``train.seed``, ``data_seed``)."""
    return key.split(".")[-1].endswith("seed")


def _first(*values: Any) -> Any:
    for value in values:
        if value is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        return value
    return None


def _hashable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _spec_depth(row: pd.Series, strategy: Any) -> Any:
    """A run's depth from its spec (runs without a summary): ``models.depth_size``'s rule."""
    from models import depth_size

    prefix = "spec.model.depth."
    block = {}
    for key, value in row.items():
        name = key[len(prefix):] if isinstance(key, str) and key.startswith(prefix) else ""
        if name and "." not in name and _first(value) is not None:  # a table column may hold NaN
            block[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return depth_size({**block, "kind": block.get("kind", strategy)})


def _derive_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Add strategy/depth/seed/cell/task/dataset from summary, else spec, else grid."""
    runs = runs.copy()
    for field in IDENTITY_FIELDS + METRIC_FIELDS:
        if field not in runs.columns:
            runs[field] = None
    derived: dict[str, list] = {k: [] for k in ("strategy", "depth", "seed", "cell", "task", "dataset")}
    for _, row in runs.iterrows():
        strategy = _first(row.get("strategy"), row.get("spec.model.depth.kind"),
                          row.get("grid.model.depth.kind"))
        derived["strategy"].append(strategy)
        derived["depth"].append(_first(row.get("depth"), _spec_depth(row, strategy)))
        derived["seed"].append(_first(row.get("seed"), row.get("spec.train.seed"), row.get("grid.seed")))
        derived["cell"].append(_first(row.get("cell"), row.get("spec.model.cell")))
        derived["task"].append(_first(row.get("task"), row.get("spec.task")))
        derived["dataset"].append(_first(row.get("dataset"), row.get("spec.data.dataset")))
    derived["seed"] = [int(s) if isinstance(s, float) and s.is_integer() else s for s in derived["seed"]]
    derived["data_setting"] = [_data_setting(row) for _, row in runs.iterrows()]
    for key, values in derived.items():
        runs[key] = pd.Series(values, index=runs.index, dtype=object)
    for field in METRIC_FIELDS + ("depth",):
        runs[field] = pd.to_numeric(runs[field], errors="coerce")
    runs["state"] = runs["state"].fillna("pending") if "state" in runs else "pending"
    return runs


# The data keys that make two runs' data the same, per task (a copy run ignores the corpus
# keys and an LM run the copy keys, so a job file's shared data block does not split them).
DATA_SETTING_KEYS = {"lm": ("dataset", "data_dir", "seq_len", "synthetic"), "copy": ("dataset", "blank_len", "n_digits")}


def _data_setting(row: pd.Series) -> str:
    """One string per distinct data setting of a run (``data_setting``): verdicts and the
    baseline column compare only models trained and evaluated on the same data."""
    task = _first(row.get("task"), row.get("spec.task"))
    parts = []
    for key in DATA_SETTING_KEYS.get(str(task), DATA_SETTING_KEYS["lm"]):
        values = {c: row[c] for c in row.index if (c == f"spec.data.{key}" or c.startswith(f"spec.data.{key}."))
                  and _first(row[c]) is not None}
        parts.append(f"{key}={json.dumps(values, sort_keys=True, default=str)}")
    return f"{task}: " + "; ".join(parts)


# Spec keys that do not make two models different series of one strategy against depth: the
# depth itself (and the knobs that follow it) and what names or seeds a run.
_NOT_SERIES = ("spec.run_id", "spec.name", "spec.sweep", "spec.train.seed", "spec.model.depth.layers",
               "spec.model.depth.max_iter", "spec.model.depth.backward_max_iter", "spec.model.depth.steps",
               "spec.model.depth.segments")


def _depth_series_key(row: pd.Series, opened: Iterable[str] = ()) -> str:
    """A run's settings without its depth (``depth_series``): models that share it and differ
    in depth form one series of the memory-against-depth claims and figure, however the job
    file wrote them (a ``model.depth`` axis or one grid case per depth). ``opened``: the grid's
    block options (``grid.model.depth.grad``), depth sizes left out. Empty without spec columns."""
    values = {c: row[c] for c in row.index if c.startswith("spec.") and c not in _NOT_SERIES
              and _first(row[c]) is not None}
    if not values:
        return ""
    values.update({c: row[c] for c in opened if f"spec.{c[5:]}" not in _NOT_SERIES and _first(row[c]) is not None})
    return json.dumps(values, sort_keys=True, default=str)


def _parsed(value: Any) -> Any:
    """A grid value as written: a mapping or list the records hold as JSON text, parsed."""
    if isinstance(value, str) and value.startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _label_value(value: Any) -> str:
    """A grouping value for a label: integral floats as ints, grid cases by their ``label``."""
    value = _parsed(value)
    if isinstance(value, dict):
        return str(value.get("label") or " ".join(f"{k}={_label_value(v)}" for k, v in value.items()))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


DEPTH_AXIS = "grid.model.depth"


def field_label(field: str, value: Any) -> str:
    """One part of a model label: ``depth 8``, ``task=copy``, ``cases=lm``, ``grad=phantom``
    (an option of the ``model.depth`` axis's blocks)."""
    text = _label_value(value)
    if field == "depth":
        return f"depth {text}"
    if field.startswith(DEPTH_AXIS + "."):
        return f"{field[len(DEPTH_AXIS) + 1:]}={text}"
    return f"{field.removeprefix('grid.')}={text}"


def _expand_block_axes(runs: pd.DataFrame, axes: list[str]) -> tuple[list[str], list[str]]:
    """Grid axes whose values are blocks (mappings without a ``label``, like ``model.depth``)
    opened into one column per key, ``<axis>.<key>``, added to ``runs``, so a label can name
    the one option that tells two models apart (``grad=phantom``) instead of the whole block.
    A depth block's missing options read as their defaults (``models.depth_option_default``).
    Returns (axes kept whole, the added columns)."""
    from models import depth_option_default

    whole, opened = [], []
    for axis in axes:
        values = [_parsed(v) for v in runs[axis]]
        blocks = [v for v in values if isinstance(v, dict)]
        if not blocks or any("label" in b for b in blocks) or len(blocks) < len(values):
            whole.append(axis)
            continue
        for key in sorted({k for b in blocks for k in b}):
            column = f"{axis}.{key}"
            if column in runs.columns:
                continue
            filled = [v[key] if key in v else (depth_option_default(v.get("kind", s), key) if axis == DEPTH_AXIS
                                              else None) for v, s in zip(values, runs["strategy"])]
            runs[column] = pd.Series([_hashable(x) for x in filled], index=runs.index, dtype=object)
            opened.append(column)
    return whole, opened


def _model_labels(runs: pd.DataFrame, group_fields: tuple[str, ...],
                  own: frozenset[str] = frozenset()) -> tuple[list[str], tuple[str, ...]]:
    """One short, unique label per model: the strategy, then only the settings needed to tell
    models apart, tried in the order depth, task, dataset, cell, other grid axes
    (e.g. "deq, depth 8" or "deq, task=copy"). A field in ``own`` (an option of a block
    axis) is named only in the labels of models it tells apart from another model of their
    strategy ("deq, task=lm, grad=phantom", but plain "explicit, task=lm").

    Also returns the label fields other than depth (``extra_fields``): a model's series in
    the memory-against-depth figure is its strategy plus these.
    """
    keys = [tuple(_hashable(row[f]) for f in group_fields) for _, row in runs.iterrows()]
    index = {f: i for i, f in enumerate(group_fields)}
    models = sorted(set(keys), key=str)
    partial = {m: (m[index["strategy"]],) for m in models}
    chosen = []
    for field in group_fields:
        if field == "strategy":
            continue
        values: dict[tuple, set] = {}
        for m in models:
            values.setdefault(partial[m], set()).add(m[index[field]])
        if any(len(v) > 1 for v in values.values()):  # the field tells tied models apart
            chosen.append(field)
            partial = {m: partial[m] + (m[index[field]],) for m in models}
    by_model = {}
    for m in models:
        parts, agree = [str(m[index["strategy"]])], [o for o in models if o[index["strategy"]] == m[index["strategy"]]]
        for f in chosen:
            if f not in own or len({o[index[f]] for o in agree}) > 1:
                parts.append(field_label(f, m[index[f]]))
            agree = [o for o in agree if o[index[f]] == m[index[f]]]
        by_model[m] = ", ".join(parts)
    return [by_model[k] for k in keys], tuple(f for f in chosen if f != "depth")


def _merge(into: list[RecordProblem], new: Iterable[RecordProblem]) -> None:
    for problem in new:
        if all((p.path, p.problem) != (problem.path, problem.problem) for p in into):
            into.append(problem)


def _left_out(runs: pd.DataFrame, problems: list[RecordProblem], sweep_dir: Path) -> set[str]:
    """Runs the report cannot place (no readable spec, or finished without a summary); their
    problem lines say so."""
    out = set()
    for i, problem in enumerate(problems):
        if problem.path.name == "spec.json" and problem.run_id:
            out.add(problem.run_id)
            problems[i] = dataclasses.replace(problem, action="left out of the report (its settings are unknown)")
    for _, row in runs.iterrows():
        run_id = str(row["run_id"])
        path = sweep_dir / "runs" / run_id / "summary.json"
        if row.get("state") == "finished" and not path.exists() and run_id not in out:
            out.add(run_id)
            problems.append(RecordProblem(path, "missing, though status.json says the run finished", run_id,
                                          name=_first(row.get("name")), action="left out of the report"))
    return out


def _case_labels(runs: pd.DataFrame) -> list[str] | None:
    """Each run's grid-case label as its model's name, where every run has one and the labels
    tell the models apart exactly (``lm_deq`` rather than "deq, task=lm, cases=lm_deq"); else None."""
    if "grid.cases" not in runs or not len(runs):
        return None
    labels = [_parsed(v).get("label") if isinstance(_parsed(v), dict) else None for v in runs["grid.cases"]]
    if not all(isinstance(x, str) and x for x in labels):
        return None
    by_label: dict[str, set] = {}
    for label, key in zip(labels, runs["model_key"]):
        by_label.setdefault(label, set()).add(key)
    return labels if all(len(keys) == 1 for keys in by_label.values()) else None


def load_report_data(sweep_dir: str | Path) -> SweepData:
    """Read a sweep folder (``results/<sweep>``) for a report; raises FileNotFoundError if absent."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep folder (expected results/<sweep>/)")
    store = SweepStore(sweep_dir)
    meta = store.read_meta() or {}
    problems: list[RecordProblem] = []
    runs = load_sweep(sweep_dir, problems=problems)
    left_out = _left_out(runs, problems, sweep_dir) if len(runs) else set()
    if left_out:
        runs = runs[~runs["run_id"].isin(left_out)].reset_index(drop=True)
    if runs.empty:
        runs = pd.DataFrame(columns=["run_id", "name", "state", "reason", "failed_rank", "attempt",
                                     "step", "started", "ended"])
    runs = _derive_columns(runs)
    grid_axes = sorted(c for c in runs.columns if c.startswith("grid.") and not is_seed_axis(c[5:]))
    group_fields = ("strategy", "depth", "task", "dataset", "cell", *grid_axes)
    whole, opened = _expand_block_axes(runs, grid_axes) if len(runs) else (grid_axes, [])
    runs["depth_series"] = pd.Series([_depth_series_key(row, opened) for _, row in runs.iterrows()],
                                     index=runs.index, dtype=object)
    label_fields = ("strategy", "depth", "task", "dataset", "cell", *whole, *opened)
    labels, extra_fields = _model_labels(runs, label_fields, frozenset(opened)) if len(runs) else ([], ())
    runs["model_key"] = [json.dumps([_hashable(row[f]) for f in group_fields], default=str)
                         for _, row in runs.iterrows()]
    runs["model"] = pd.Series(_case_labels(runs) or labels, index=runs.index, dtype=object)

    found: list[RecordProblem] = []
    metrics = load_metrics(sweep_dir, problems=found)
    metrics = metrics[~metrics["run_id"].isin(left_out)].reset_index(drop=True)
    labels = dict(zip(runs["run_id"], runs["model"]))
    metrics["model"] = metrics["run_id"].map(labels)
    names = dict(zip(runs["run_id"], runs["name"]))
    records = {run_id: store.run(run_id) for run_id in runs["run_id"]}
    envs = {run_id: rec.read_env() or {} for run_id, rec in records.items()}
    analyses = {run_id: a for run_id, rec in records.items() if (a := rec.read_analysis())}
    statuses = {run_id: rec.read_status() for run_id, rec in records.items()}
    job_text = store.job_text()
    _merge(found, store.problems)
    for run_id, rec in records.items():
        _merge(found, (p.named(names.get(run_id)) for p in rec.problems))
    _merge(problems, (p.named(names.get(p.run_id)) for p in found if p.run_id not in left_out))
    return SweepData(sweep_dir=sweep_dir, name=str(meta.get("name") or sweep_dir.name), meta=meta,
                     job_text=job_text, runs=runs.reset_index(drop=True), metrics=metrics,
                     envs=envs, analyses=analyses, statuses=statuses, group_fields=group_fields,
                     extra_fields=extra_fields, problems=tuple(str(p) for p in problems))
