"""A live view of a running sweep, for the submit command: :class:`SweepProgress`.

The view is built from the records alone (``status.json`` and the tail of
``metrics.jsonl`` of each run, see docs/records.md), so it shows what is on disk, the same
thing ``python -m harness.status`` shows. Each :meth:`SweepProgress.update` re-reads the
small status files and only the bytes appended to each metrics file since the last call
(:class:`MetricsTail`), so calling it every second costs little even for long runs.

Two renderings, chosen by whether the output is a terminal:

- terminal: a ``rich`` Live display: a bar of runs done (finished or failed), a bar of steps
  done out of all steps with an estimate of the time left (from the steps done per second
  since the view started), counts per state, and each running run's step and loss; state
  changes are printed above it;
- anything else (CI logs, ``ray job submit``): plain lines, never escape codes; one line
  per state change (``[12:01:05] deq16_s0 (a1b2c3d4e5) running``, ``... finished
  val_ppl=123.4 in 41s``, ``... failed: Diverged: ... (rank 1)``) and at most one progress
  line every ``interval_s * 10`` seconds.

Usage::

    with SweepProgress(store.dir, run_ids, total_steps=totals) as progress:
        while work_left():
            wait_a_little()
            progress.update()
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from harness.records import MetricsTail, RunRecord, SweepStore
from harness.watch.status import STATE_STYLES, format_duration, format_number, format_reason, format_val, run_row

__all__ = ["SweepProgress"]

SHOWN_ORDER = ("finished", "running", "failed", "pending")


@dataclass
class _RunView:
    """What the view knows of one run; refreshed by :meth:`SweepProgress.update`."""

    record: RunRecord
    total_steps: int
    tail: MetricsTail
    spec: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    summary: dict | None = None
    row: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return self.row.get("state", "pending"), self.row.get("attempt", 0)

    def steps_done(self) -> int:
        state, step = self.row.get("state"), int(self.row.get("step") or 0)
        if state == "finished":
            return self.total_steps or step
        return min(step, self.total_steps) if self.total_steps else step

    def steps_total(self) -> int:
        # a failed run will do no more steps: it counts as far as it got
        return self.steps_done() if self.row.get("state") == "failed" else max(self.total_steps, self.steps_done())


class SweepProgress:
    """Live progress of the runs ``run_ids`` of the sweep in ``sweep_dir``.

    ``total_steps`` maps run id to its number of training steps (a run left out falls back to
    its spec.json ``train.steps``). Output goes to ``stream`` (default ``sys.stdout``); a
    ``console`` (``rich.console.Console``) may be given instead, in which case its
    ``is_terminal`` decides the mode. ``clock`` (seconds, monotonic) is for tests.
    """

    def __init__(self, sweep_dir: str | Path, run_ids: list[str], *, total_steps: dict[str, int],
                 stream: TextIO | None = None, interval_s: float = 2.0, console: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(run_ids, str):
            raise ValueError(f"run_ids={run_ids!r}: must be a list of run ids, not one string")
        if not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ValueError(f"interval_s={interval_s!r}: must be a number of seconds > 0")
        for run_id, steps in total_steps.items():
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise ValueError(f"total_steps[{run_id!r}]={steps!r}: must be an integer >= 0")
        self.store = SweepStore(sweep_dir)
        self.interval_s = float(interval_s)
        self._clock = clock
        self._stream = stream if stream is not None else sys.stdout
        if console is None and _isatty(self._stream):
            from rich.console import Console

            console = Console(file=self._stream)
        self._console = console if console is not None and console.is_terminal else None
        if console is not None and self._console is None:
            self._stream = console.file  # a console that is not a terminal: plain lines to its file
        self._runs = {}
        for run_id in run_ids:
            rec = self.store.run(run_id)
            try:
                spec = rec.read_spec()
            except (OSError, ValueError):
                spec = {}
            total = total_steps.get(run_id, (spec.get("train") or {}).get("steps") or 0)
            self._runs[run_id] = _RunView(rec, int(total), MetricsTail(rec.metrics_path), spec=spec)
        self._live = None
        self._closed = False
        self._refresh_rows()
        self._t0 = self._last_line_at = self._last_update_at = clock()
        self._steps_at_start = self.steps()[0]

    # ------------------------------------------------------------------ public
    @property
    def is_terminal(self) -> bool:
        """Whether the view is a rich Live display (else plain log lines)."""
        return self._console is not None

    def counts(self) -> dict[str, int]:
        """Runs per state, as of the last update."""
        out = {s: 0 for s in SHOWN_ORDER}
        for view in self._runs.values():
            out[view.row["state"]] = out.get(view.row["state"], 0) + 1
        return out

    def update(self) -> None:
        """Re-read the records of the runs and refresh the view (prints state changes)."""
        if self._closed:
            return
        before = {run_id: view.key for run_id, view in self._runs.items()}
        self._refresh_rows()
        now = self._clock()
        self._last_update_at = now
        changed = [view for run_id, view in self._runs.items() if _is_event(before[run_id], view.key)]
        if self._console is not None:
            live = self._start_live()
            for view in changed:
                live.console.print(self._event_text(view), highlight=False)
            live.update(self._renderable(now), refresh=True)
            return
        for view in changed:
            self._write(self._event_line(view))
        if now - self._last_line_at >= self.interval_s * 10:
            self._last_line_at = now
            self._write(f"[{_wall()}] {self._progress_text(now)}")

    def maybe_update(self) -> bool:
        """:meth:`update` if ``interval_s`` passed since the last one; returns whether it ran."""
        if self._clock() - self._last_update_at < self.interval_s:
            return False
        self.update()
        return True

    def close(self) -> None:
        """A last update and the final view (terminal) or a closing line (plain)."""
        if self._closed:
            return
        try:
            self.update()
        finally:
            self._closed = True
            if self._live is not None:
                self._live.stop()
                self._live = None
        if self._console is None:
            c = self.counts()
            self._write(f"[{_wall()}] done: {c['finished']} finished, {c['failed']} failed, "
                        f"{c['running']} running, {c['pending']} pending "
                        f"in {format_duration(self._clock() - self._t0)}")

    def __enter__(self) -> "SweepProgress":
        if self._console is not None:
            self._start_live()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def _refresh_rows(self) -> None:
        now = _dt.datetime.now(_dt.timezone.utc)
        for run_id, view in self._runs.items():
            try:
                self._refresh_row(run_id, view, now)
            except (OSError, ValueError):  # never stop a sweep over a view: keep the last row
                if not view.row:
                    view.row = run_row(run_id, spec=view.spec, status={}, latest={}, summary=None, now=now)

    @staticmethod
    def _refresh_row(run_id: str, view: _RunView, now: _dt.datetime) -> None:
        view.status = view.record.read_status(strict=True)  # damaged: keep the last row
        state = view.status.get("state")
        if not view.spec:  # written after the view started: it also knows the total steps
            view.spec = view.record.read_spec()
            view.total_steps = view.total_steps or int((view.spec.get("train") or {}).get("steps") or 0)
        latest = view.tail.poll() if state != "pending" else {}
        if state == "finished" and view.summary is None:
            view.summary = view.record.read_summary()
        elif state != "finished":
            view.summary = None
        view.row = run_row(run_id, spec=view.spec, status=view.status, latest=latest,
                           summary=view.summary, now=now)

    def steps(self) -> tuple[int, int]:
        """(steps done, steps in all) across the runs as of the last update; a failed run counts
        only the steps it reached."""
        views = self._runs.values()
        return sum(v.steps_done() for v in views), sum(v.steps_total() for v in views)

    def _eta_s(self, now: float) -> float | None:
        done, total = self.steps()
        rate = (done - self._steps_at_start) / (now - self._t0) if now > self._t0 else 0.0
        return (total - done) / rate if rate > 0 and total > done else None

    # ------------------------------------------------------------------ plain lines
    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def _event_line(self, view: _RunView) -> str:
        row = view.row
        text = row["state"]
        if text == "finished":
            if row["val"] is not None:
                text += f" {row['val_metric']}={format_number(row['val'])}"
            if row["elapsed_s"] is not None:
                text += f" in {format_duration(row['elapsed_s'])}"
        elif text == "failed":
            text += f": {format_reason(row['reason'], row['rank']) or 'no reason on record'}"
        elif text == "running" and row["attempt"] > 1:
            text += f" (attempt {row['attempt']}" + (f" after {row['reason']})" if row["reason"] else ")")
        return f"[{_wall()}] {row['name']} ({row['run_id']}) {text}"

    def _event_text(self, view: _RunView):
        from rich.text import Text

        line = self._event_line(view)
        return Text(line, style=STATE_STYLES.get(view.row["state"], ""))

    def _progress_text(self, now: float) -> str:
        c = self.counts()
        done, total = self.steps()
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        eta = self._eta_s(now)
        left = f"; about {format_duration(eta)} left" if eta is not None else ""
        return (f"{c['finished']}/{len(self._runs)} runs finished, {c['running']} running, "
                f"{c['failed']} failed, {c['pending']} pending; steps {done}/{total}{pct}{left}")

    # ------------------------------------------------------------------ terminal
    def _start_live(self):
        if self._live is None:
            from rich.live import Live

            self._live = Live(self._renderable(self._clock()), console=self._console, auto_refresh=False,
                              transient=False)
            self._live.start(refresh=True)
        return self._live

    def _renderable(self, now: float):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        c = self.counts()
        done, total = self.steps()
        n = len(self._runs)
        eta = self._eta_s(now)
        bars = Table.grid(padding=(0, 1))
        bars.add_row("runs ", ProgressBar(total=max(n, 1), completed=c["finished"] + c["failed"], width=30),
                     f"{c['finished'] + c['failed']}/{n} done")
        bars.add_row("steps", ProgressBar(total=max(total, 1), completed=done, width=30),
                     f"{done}/{total}  elapsed {format_duration(now - self._t0)}"
                     + (f"  about {format_duration(eta)} left" if eta is not None else ""))
        counts = Text.assemble(*[part for s in SHOWN_ORDER
                                 for part in ((f"{s} {c[s]}", STATE_STYLES[s]), ("  ", ""))][:-1])
        parts: list[Any] = [bars, counts]
        running = [v.row for v in self._runs.values() if v.row["state"] == "running"]
        if running:
            table = Table(box=None, pad_edge=False, header_style="bold")
            for h, justify in (("run", "left"), ("id", "left"), ("step", "right"), ("loss", "right"),
                               ("val", "right"), ("tok/s", "right")):
                table.add_column(h, justify=justify, no_wrap=True)
            for row in running:
                steps = f"{row['step']}/{row['total_steps']}" if row["total_steps"] else str(row["step"])
                loss = f"{row['loss']:.3f}" if isinstance(row["loss"], (int, float)) else "-"
                tps = f"{row['tokens_per_s']:,.0f}" if isinstance(row["tokens_per_s"], (int, float)) else "-"
                table.add_row(row["name"], row["run_id"], steps, loss, format_val(row), tps)
            parts.append(table)
        return Group(*parts)


def _is_event(before: tuple[str, int], after: tuple[str, int]) -> bool:
    """A new state, or a restart: the attempt counter passing 1 while running (the first
    attempt may be counted only after the run is marked running; that is no event)."""
    return before[0] != after[0] or (after[0] == "running" and after[1] > max(before[1], 1))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _wall() -> str:
    return time.strftime("%H:%M:%S")
