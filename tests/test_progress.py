"""harness.watch.progress: plain log lines off a terminal, a rich Live view on one, cheap re-reads."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from harness.records import MetricsTail
from harness.watch.progress import SweepProgress
from harness.records import SweepStore

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
IDS = ["a1b2c3d4e5", "b2c3d4e5f6", "c3d4e5f6a7"]
NAMES = ["deq16_s0", "explicit16_s0", "weight_tied16_s0"]
REASON = "Diverged: non-finite loss at step 12"
STEPS = 60


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def build_pending_sweep(root: Path) -> SweepStore:
    store = SweepStore(root / "live")
    store.write_meta({"name": "live", "created": "2025-01-15T10:00:00+00:00", "run_ids": IDS})
    for run_id, name in zip(IDS, NAMES):
        rec = store.run(run_id)
        rec.write_spec({"run_id": run_id, "name": name, "task": "lm", "train": {"steps": STEPS}})
        rec.set_status("pending")
    return store


def advance(store: SweepStore, run_id: str, step: int, loss: float) -> None:
    rec = store.run(run_id)
    rec.append_metrics([{"kind": "train", "step": step, "loss": loss, "tokens_per_s": 1234.0}])
    rec.set_status("running", step=step, attempt=max(1, int(rec.read_status().get("attempt") or 0)))


def finish(store: SweepStore, run_id: str, val_ppl: float) -> None:
    rec = store.run(run_id)
    rec.append_metrics([{"kind": "eval", "step": STEPS, "val_ppl": val_ppl}])
    rec.write_summary({"run_id": run_id, "val_ppl": val_ppl, "tokens_per_s": 1200.0})
    rec.set_status("finished", step=STEPS)


@pytest.fixture
def store(tmp_path) -> SweepStore:
    return build_pending_sweep(tmp_path)


def test_plain_lines_once_per_state_change(store):
    out, clock = io.StringIO(), FakeClock()
    progress = SweepProgress(store.dir, IDS, total_steps={i: STEPS for i in IDS}, stream=out,
                             interval_s=2.0, clock=clock)
    assert not progress.is_terminal
    progress.update()
    assert out.getvalue() == ""  # nothing changed, and no progress line is due yet

    store.run(IDS[0]).set_status("running")           # marked running; its attempt counted later
    progress.update()
    advance(store, IDS[0], 10, 5.0)                   # attempt 0 -> 1: the same first attempt
    progress.update()
    progress.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"\[\d\d:\d\d:\d\d\] {NAMES[0]} \({IDS[0]}\) running", lines[0])

    advance(store, IDS[0], 20, 4.0)  # progress within a state is no event
    finish(store, IDS[0], 123.4)
    store.run(IDS[1]).set_status("running", attempt=1)
    store.run(IDS[1]).set_status("failed", step=12, reason=REASON, rank=1)
    progress.update()
    progress.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.search(rf"{NAMES[0]} \({IDS[0]}\) finished val_ppl=123\.4 in \d+s$", lines[1])
    assert lines[2].endswith(f"{NAMES[1]} ({IDS[1]}) failed: {REASON} (rank 1)")

    advance(store, IDS[2], 10, 5.0)                       # a restart is a change too
    store.run(IDS[2]).set_status("running", attempt=2, reason="worker restart after RayActorError", rank=0)
    progress.update()
    new = out.getvalue().splitlines()[3:]
    assert len(new) == 1 and "running (attempt 2 after worker restart after RayActorError)" in new[0]
    assert progress.counts() == {"finished": 1, "running": 1, "failed": 1, "pending": 0}

    progress.close()
    progress.close()
    tail = out.getvalue().splitlines()[4:]
    assert len(tail) == 1 and "done: 1 finished, 1 failed, 1 running, 0 pending" in tail[0]
    assert not ANSI.search(out.getvalue()) and "\x1b" not in out.getvalue()


def test_plain_progress_line_at_most_every_ten_intervals(store):
    out, clock = io.StringIO(), FakeClock()
    progress = SweepProgress(store.dir, IDS, total_steps={i: STEPS for i in IDS}, stream=out,
                             interval_s=1.0, clock=clock)
    advance(store, IDS[0], 30, 4.0)
    progress.update()                                    # the "running" event only
    for _ in range(9):
        clock.t += 1.0
        progress.update()
    assert sum("steps" in line for line in out.getvalue().splitlines()) == 0
    clock.t += 1.0                                       # 10 s = 10 * interval_s since the start
    progress.update()
    progress_lines = [line for line in out.getvalue().splitlines() if "steps" in line]
    assert len(progress_lines) == 1
    # 30 of 180 steps done in 10 s: 150 left at 3 steps/s -> 50 s
    assert "0/3 runs finished, 1 running, 0 failed, 2 pending; steps 30/180 (17%); about 50s left" \
        in progress_lines[0]
    clock.t += 5.0
    progress.update()
    assert sum("steps" in line for line in out.getvalue().splitlines()) == 1
    clock.t += 5.0
    progress.update()
    assert sum("steps" in line for line in out.getvalue().splitlines()) == 2


def test_terminal_view_renders_counts_and_running_runs(store):
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system="standard")
    clock = FakeClock()
    with SweepProgress(store.dir, IDS, total_steps={i: STEPS for i in IDS}, console=console,
                       clock=clock) as progress:
        assert progress.is_terminal
        advance(store, IDS[0], 30, 3.5)
        finish(store, IDS[1], 99.0)
        store.run(IDS[2]).set_status("failed", step=5, reason=REASON, rank=1)
        clock.t += 10.0
        progress.update()
        raw = console.file.getvalue()
    assert ANSI.search(raw)
    text = ANSI.sub("", raw)
    assert "finished 1" in text and "running 1" in text and "failed 1" in text and "pending 0" in text
    running_line = next(line for line in text.splitlines() if NAMES[0] in line and "30/60" in line)
    assert "3.500" in running_line and IDS[0] in running_line
    assert f"{NAMES[2]} ({IDS[2]}) failed: {REASON} (rank 1)" in text   # the event, above the view
    assert "2/3 done" in text and "95/125" in text                     # 30 + 60 + 5 of 60 + 60 + 5
    assert "left" in text                                               # a time-left estimate


def test_metrics_tail_reads_only_new_complete_lines(store):
    rec = store.run(IDS[0])
    rec.append_metrics([{"kind": "train", "step": s, "loss": 1.0 / s} for s in (10, 20, 30)]
                       + [{"kind": "eval", "step": 20, "val_ppl": 50.0}])
    tail = MetricsTail(rec.metrics_path)
    assert tail.poll()["train"]["step"] == 30 and tail.latest["eval"]["val_ppl"] == 50.0
    assert tail.offset == rec.metrics_path.stat().st_size
    with open(rec.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "train", "step": 40, "loss": 0.0')  # torn: no newline yet
    size_before = tail.offset
    assert tail.poll()["train"]["step"] == 30 and tail.offset == size_before
    with open(rec.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('25}\n')
    assert tail.poll()["train"] == {"kind": "train", "step": 40, "loss": 0.025}
    assert tail.latest["eval"]["step"] == 20                            # kept from the earlier read
    rec.truncate_metrics(20)                                            # resume: file rewritten
    latest = tail.poll()
    assert latest["train"]["step"] == 20 and latest["eval"]["step"] == 20
    assert tail.offset == rec.metrics_path.stat().st_size


def test_total_steps_fall_back_to_spec_and_bad_arguments(store):
    out = io.StringIO()
    progress = SweepProgress(store.dir, IDS, total_steps={}, stream=out, clock=FakeClock())
    advance(store, IDS[0], 15, 4.0)
    progress.update()
    assert progress.steps() == (15, 3 * STEPS)
    with pytest.raises(ValueError, match="interval_s"):
        SweepProgress(store.dir, IDS, total_steps={}, stream=out, interval_s=0)
    with pytest.raises(ValueError, match=r"total_steps\['x'\]=-1"):
        SweepProgress(store.dir, IDS, total_steps={"x": -1}, stream=out)


def test_an_unreadable_record_never_stops_the_view(store):
    out = io.StringIO()
    progress = SweepProgress(store.dir, IDS, total_steps={}, stream=out, clock=FakeClock())
    advance(store, IDS[0], 10, 5.0)
    progress.update()
    (store.run(IDS[0]).dir / "status.json").write_text("{not json")
    progress.update()                                   # keeps the last good row, raises nothing
    assert progress.counts()["running"] == 1
    assert sum("running" in line for line in out.getvalue().splitlines()) == 1
