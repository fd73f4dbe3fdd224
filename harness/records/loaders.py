"""The pandas loaders of a sweep's records: :func:`load_sweep` (one row per run: spec, status
and summary flattened) and :func:`load_metrics` (every per-step record). Both read through
:class:`~harness.records.store.RunRecord`, so a damaged record is read as docs/reliability.md
("Damaged records") says, and hand one :class:`RecordProblem` line per damaged file to the
caller (or warn, :class:`RecordWarning`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from harness.records.io import RecordProblem
from harness.records.store import SweepStore

__all__ = ["RecordWarning", "load_metrics", "load_sweep"]


class RecordWarning(UserWarning):
    """A damaged record that :func:`load_sweep` or :func:`load_metrics` went on without
    (issued when the caller passes no ``problems`` list to collect them in)."""


def _report(problems: list[RecordProblem], into: list | None) -> None:
    """Hand the damaged records met to the caller's list, or warn (one line each)."""
    seen: set[str] = set()
    for problem in problems:
        if str(problem) in seen:
            continue
        seen.add(str(problem))
        if into is None:
            warnings.warn(str(problem), RecordWarning, stacklevel=3)
        elif all(str(p) != str(problem) for p in into):
            into.append(problem)


def _flatten(prefix: str, obj: Any, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list):
        out[prefix] = json.dumps(obj)
    else:
        out[prefix] = obj


def load_sweep(sweep_dir: str | Path, *, problems: list | None = None) -> pd.DataFrame:
    """All runs of a sweep, one row each.

    Columns: ``run_id``, ``name``, ``state``, ``reason``, ``failed_rank``, ``attempt``, ``step``,
    ``started``, ``ended``, the grid axes as ``grid.<key>``, the summary figures
    (docs/records.md) and the flattened spec as ``spec.<path>``.

    A damaged record is read as described in docs/reliability.md ("Damaged records") and
    one :class:`RecordProblem` per damaged file is appended to ``problems``; without a
    list each is issued as a :class:`RecordWarning`.
    """
    store = SweepStore(sweep_dir)
    if not store.dir.is_dir():
        raise FileNotFoundError(f"{store.dir}: no such sweep folder")
    rows, met = [], []
    for run_id in store.run_ids():
        rec = store.run(run_id)
        spec = rec.read_spec()
        status = rec.read_status()
        row: dict[str, Any] = {"run_id": run_id, "name": spec.get("name", run_id),
                               "state": status.get("state"), "reason": status.get("reason"),
                               "failed_rank": status.get("rank"), "attempt": status.get("attempt"),
                               "step": status.get("step"), "started": status.get("started"),
                               "ended": status.get("ended")}
        for k, v in (spec.get("grid") or {}).items():
            row[f"grid.{k}"] = v
        _flatten("spec", {k: v for k, v in spec.items() if k != "grid"}, row)
        for k, v in (rec.read_summary() or {}).items():
            if k not in row:
                row[k] = v
        rows.append(row)
        met += [p.named(spec.get("name")) for p in rec.problems]
    _report(store.problems + met, problems)
    return pd.DataFrame(rows)


def load_metrics(sweep_dir: str | Path, *, problems: list | None = None) -> pd.DataFrame:
    """Every per-step record of every run of a sweep, with a ``run_id`` column. Damaged lines
    are skipped; one :class:`RecordProblem` per file that had some goes to ``problems``
    (without a list: a :class:`RecordWarning` each)."""
    store = SweepStore(sweep_dir)
    frames, met = [], []
    for run_id in store.run_ids():
        rec = store.run(run_id)
        recs = rec.read_metrics()
        met += rec.problems
        if recs:
            df = pd.DataFrame(recs)
            df.insert(0, "run_id", run_id)
            frames.append(df)
    _report(store.problems + met, problems)
    if not frames:
        return pd.DataFrame(columns=["run_id", "kind", "step"])
    return pd.concat(frames, ignore_index=True)
