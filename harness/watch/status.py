"""Where a sweep stands, from its records alone: ``python -m harness.status results/<sweep>``.

One row per run: state (pending / running / finished / failed), step out of the total
steps (``spec.json`` ``train.steps``), the last training loss, the last validation figure
(``val_ppl``; ``val_acc`` for the copy-memory task), tokens/s, elapsed wall time since the
run started, how long ago its record was updated, attempts, and the failure reason with
the worker rank. A footer counts runs per state and names the sweep.

Works while a sweep runs (it only reads; every record is written atomically, and a torn
last line of ``metrics.jsonl`` is skipped) and after it ended. Output:

- a ``rich`` table when stdout is a terminal, plain aligned text otherwise (no escape
  codes when piped or redirected);
- ``--json``: ``{"sweep", "created", "dir", "counts", "rows"}`` for scripts;
- ``--run RUN`` (run id, id prefix or run name): that run alone, field by field, with its
  log files and, for a failed run, the end of the failing rank's log.

A damaged record (empty, torn, not UTF-8, not JSON, the wrong shape) is read as
docs/reliability.md ("Damaged records") says: a status rebuilt from the run's other records
(``finished`` from a whole summary, else ``pending`` with the damage as its reason), a spec
or summary read as missing; each is named in one ``warning:`` line on stderr (``--json``:
``problems``). A run folder that cannot be read at all shows as state ``unknown``. Exit code 0; 2 with a one-line error when the folder is not a sweep folder or ``--run``
names no run. Every read goes through :mod:`harness.records` (``latest_records`` reads
``metrics.jsonl`` from its end, so a long run costs little).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.records import RunRecord, SweepStore, latest_records

__all__ = ["NotASweepFolder", "latest_records", "run_row", "status_rows", "render_status",
           "format_duration", "format_number", "format_reason", "format_val", "main"]

STATE_STYLES = MappingProxyType({"pending": "dim", "running": "cyan", "finished": "green", "failed": "bold red"})


class NotASweepFolder(ValueError):
    """The folder given is not a sweep folder written by ``harness.submit``."""


# ----------------------------------------------------------------------------- reading

def _parse_time(text: Any) -> _dt.datetime | None:
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def run_row(run_id: str, *, spec: dict, status: dict, latest: dict[str, dict],
            summary: dict | None, now: _dt.datetime | None = None) -> dict[str, Any]:
    """One status row from a run's records (spec, status, latest metrics, summary)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    train, last_eval, summary = latest.get("train") or {}, latest.get("eval") or {}, summary or {}
    task = spec.get("task") or summary.get("task")
    val_metric = "val_acc" if task == "copy" else "val_ppl"
    state = status.get("state") or "pending"
    started = _parse_time(status.get("started"))
    ended = _parse_time(status.get("ended")) if state in ("finished", "failed") else None
    if started is not None and state != "pending":
        elapsed = max(((ended or now) - started).total_seconds(), 0.0)
    else:
        elapsed = _first(summary.get("wall_time_s"), train.get("elapsed_s"), last_eval.get("elapsed_s"))
    updated = _parse_time(status.get("updated"))
    steps = [int(v) for v in (status.get("step"), train.get("step")) if isinstance(v, (int, float))]
    return {
        "run_id": run_id, "name": spec.get("name") or run_id, "task": task, "state": state,
        "step": max(steps) if steps else 0,
        "total_steps": (spec.get("train") or {}).get("steps"),
        "loss": _first(train.get("loss"), summary.get("train_loss")),
        "val_metric": val_metric,
        "val": _first(summary.get(val_metric), last_eval.get(val_metric)),
        "val_ppl": _first(summary.get("val_ppl"), last_eval.get("val_ppl")),
        "val_acc": _first(summary.get("val_acc"), last_eval.get("val_acc")),
        "tokens_per_s": _first(summary.get("tokens_per_s"), train.get("tokens_per_s")),
        "elapsed_s": elapsed,
        "updated_ago_s": max((now - updated).total_seconds(), 0.0) if updated else None,
        "started": status.get("started"), "ended": status.get("ended") if ended else None,
        "updated": status.get("updated"), "attempt": int(status.get("attempt") or 0),
        "reason": status.get("reason"), "rank": status.get("rank"),
    }


def _check_sweep_dir(sweep_dir: str | Path) -> SweepStore:
    path = Path(sweep_dir)
    if not path.is_dir():
        raise NotASweepFolder(f"{path}: no such folder; expected a sweep folder results/<sweep>/")
    if not (path / "sweep.json").is_file() and not (path / "runs").is_dir():
        raise NotASweepFolder(f"{path}: not a sweep folder (it has neither sweep.json nor runs/); "
                              "expected results/<sweep>/ as written by harness.submit")
    return SweepStore(path)


def status_rows(sweep_dir: str | Path, *, now: _dt.datetime | None = None,
                problems: list | None = None) -> list[dict[str, Any]]:
    """One row per run of the sweep, in the sweep's run order (see :func:`run_row` for keys).

    A damaged record is read as docs/reliability.md ("Damaged records") says (a status
    rebuilt from the other records, a summary or spec read as missing); one line about each
    (:class:`harness.records.RecordProblem`) is appended to ``problems`` when given.
    Raises :class:`NotASweepFolder` (a ValueError) when ``sweep_dir`` is not a sweep folder.
    """
    store = _check_sweep_dir(sweep_dir)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    rows, met = [], []
    for run_id in store.run_ids():
        rec = store.run(run_id)
        spec: dict = {}
        try:
            spec = rec.read_spec()
            status = rec.read_status()
            summary = rec.read_summary() if status.get("state") == "finished" else None
            rows.append(run_row(run_id, spec=spec, status=status,
                                latest=latest_records(rec.metrics_path), summary=summary, now=now))
        except (OSError, ValueError) as exc:  # one unreadable record does not hide the others
            rows.append(run_row(run_id, spec={}, status={"state": "unknown", "reason": (
                f"unreadable record: {type(exc).__name__}: {exc}")}, latest={}, summary=None, now=now))
        met += [p.named(spec.get("name")) for p in rec.problems]
    if problems is not None:
        problems += [p for p in store.problems + met if all(str(p) != str(q) for q in problems)]
    return rows


def _counts(rows: list[dict]) -> dict[str, int]:
    counts = {s: 0 for s in ("finished", "running", "failed", "pending")}  # and "unknown" if any
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


# ----------------------------------------------------------------------------- formatting

def format_duration(seconds: float | None) -> str:
    """``41s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_number(x: Any) -> str:
    """A loss or perplexity for a table: 4 significant-ish digits; ``-`` when not a number."""
    if not isinstance(x, (int, float)):
        return "-"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.3g}"


def format_val(row: dict) -> str:
    """The validation figure of a row: ``ppl 121.5`` or ``acc 0.931``; ``-`` when none yet."""
    if row.get("val") is None:
        return "-"
    return f"{row['val_metric'].removeprefix('val_')} {format_number(row['val'])}"


def format_reason(reason: str | None, rank: Any) -> str:
    """The reason with ``(rank k)`` appended when the rank is known and not already named."""
    if not reason:
        return ""
    if rank is not None and f"rank {rank}" not in reason:
        return f"{reason} (rank {rank})"
    return reason


def _cells(row: dict) -> list[str]:
    total = row["total_steps"]
    return [row["name"], row["run_id"], row["state"],
            f"{row['step']}/{total}" if total else str(row["step"]),
            format_number(row["loss"]), format_val(row),
            f"{row['tokens_per_s']:,.0f}" if isinstance(row["tokens_per_s"], (int, float)) else "-",
            format_duration(row["elapsed_s"]),
            f"{format_duration(row['updated_ago_s'])} ago" if row["updated_ago_s"] is not None else "-",
            str(row["attempt"]), format_reason(row["reason"], row["rank"])]


HEADERS = ("run", "id", "state", "step", "loss", "val", "tok/s", "elapsed", "updated", "att", "reason")
RIGHT_ALIGNED = frozenset({"step", "loss", "tok/s", "elapsed", "updated", "att"})
DROP_WHEN_NARROW = ("updated", "att", "id", "tok/s", "elapsed")


def _footer(store: SweepStore, rows: list[dict]) -> str:
    meta = store.read_meta()
    counts = _counts(rows)
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    name = meta.get("name") or store.dir.name
    created = f", created {meta['created']}" if meta.get("created") else ""
    return f"{len(rows)} runs: {parts} | sweep {name}{created}"


def _plain_table(rows: list[dict]) -> str:
    table = [HEADERS] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    out = []
    for line in table:
        cells = [c.rjust(w) if h in RIGHT_ALIGNED else c.ljust(w) for c, w, h in zip(line, widths, HEADERS)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _rich_table(rows: list[dict], width: int):
    """A rich Table; on a narrow console the least needed columns are left out first."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    cells = [_cells(r) for r in rows]
    need = {h: max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HEADERS)}
    shown = list(HEADERS)
    for optional in DROP_WHEN_NARROW:
        if sum(need[h] + 2 for h in shown if h != "reason") + min(need["reason"], 30) <= width:
            break
        shown.remove(optional)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for h in shown:
        if h == "reason":
            table.add_column(h, overflow="fold")
        else:
            table.add_column(h, justify="right" if h in RIGHT_ALIGNED else "left", no_wrap=True,
                             min_width=need[h])
    for row, line in zip(rows, cells):
        line[2] = Text(line[2], style=STATE_STYLES.get(row["state"], ""))
        table.add_row(*(c for c, h in zip(line, HEADERS) if h in shown))
    return table


def render_status(sweep_dir: str | Path, *, console=None, now: _dt.datetime | None = None) -> str:
    """The status table and footer as text.

    With ``console`` (a ``rich.console.Console``) the table is rendered by rich (styled if
    the console is a terminal) and the captured text returned; without, plain aligned text.
    """
    store = _check_sweep_dir(sweep_dir)
    return _render(store, status_rows(store.dir, now=now), console)


def _render(store: SweepStore, rows: list[dict], console) -> str:
    footer = _footer(store, rows)
    if console is None:
        return f"{_plain_table(rows)}\n\n{footer}\n"
    with console.capture() as captured:
        console.print(_rich_table(rows, console.width))
        console.print(footer, highlight=False, markup=False)
    return captured.get()


def _render_run(store: SweepStore, row: dict) -> str:
    """One run, field by field, with its log files (and the failing rank's last log lines)."""
    rec: RunRecord = store.run(row["run_id"])
    cells = dict(zip(HEADERS, _cells(row)))
    fields = [("run", row["name"]), ("run_id", row["run_id"]), ("task", row["task"]), ("state", row["state"]),
              ("step", cells["step"]), ("loss", cells["loss"]), ("val", cells["val"]),
              ("tokens/s", cells["tok/s"]), ("elapsed", cells["elapsed"]), ("started", row["started"]),
              ("ended", row["ended"]), ("updated", f"{row['updated']} ({cells['updated']})"),
              ("attempt", row["attempt"]), ("reason", cells["reason"] or None)]
    lines = [f"{k:>9}: {'-' if v is None else v}" for k, v in fields]
    lines.append(f"{'grid':>9}: {json.dumps(rec.read_spec().get('grid') or {}, sort_keys=True)}")
    logs = rec.log_files()
    lines.append(f"{'logs':>9}: {rec.log_dir}" + (f" ({', '.join(p.name for p in logs)})" if logs else " (none yet)"))
    tail = rec.log_tail(row["rank"], 10) if row["state"] == "failed" and row["rank"] is not None else None
    if tail is not None:
        lines += [f"last lines of rank{row['rank']}.log:"] + [f"  {t}" for t in tail]
    return "\n".join(lines) + "\n"


def _pick_run(rows: list[dict], wanted: str) -> dict:
    for match in (lambda r: wanted in (r["run_id"], r["name"]),
                  lambda r: len(wanted) >= 4 and r["run_id"].startswith(wanted)):
        hits = [r for r in rows if match(r)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"--run {wanted!r} matches {len(hits)} runs; give the full run id")
    raise ValueError(f"--run {wanted!r} names no run of this sweep; use a run id, id prefix or name "
                     f"from: {', '.join(r['name'] for r in rows[:8])}{' ...' if len(rows) > 8 else ''}")


def main(argv: list[str] | None = None) -> int:
    """Print the status of a sweep from its records."""
    ap = argparse.ArgumentParser(prog="python -m harness.status", description=main.__doc__)
    ap.add_argument("sweep_dir", help="a sweep folder, e.g. results/quickstart")
    ap.add_argument("--json", action="store_true", help="print machine-readable rows (JSON)")
    ap.add_argument("--run", help="show one run (run id, id prefix or name) in detail")
    args = ap.parse_args(argv)
    problems: list = []
    try:
        store = _check_sweep_dir(args.sweep_dir)
        rows = status_rows(store.dir, problems=problems)
        picked = _pick_run(rows, args.run) if args.run else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.json:
        meta = store.read_meta()
        shown = [picked] if picked else rows
        print(json.dumps({"sweep": meta.get("name") or store.dir.name, "created": meta.get("created"),
                          "dir": str(store.dir), "counts": _counts(rows), "rows": shown,
                          "problems": [str(p) for p in problems]}, indent=2))
    elif picked:
        sys.stdout.write(_render_run(store, picked))
    elif sys.stdout.isatty():
        from rich.console import Console

        sys.stdout.write(_render(store, rows, Console()))
    else:
        sys.stdout.write(_render(store, rows, None))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
