"""harness.status: rows built from records, the rendered table, the command line."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness.records import SweepStore
from harness.records import latest_records
from harness.watch.status import NotASweepFolder, format_duration, format_reason, main, render_status, status_rows

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REASON = "Diverged: non-finite loss at step 12"
IDS = {"fin": "f1e2d3c4b5", "run": "a9b8c7d6e5", "fail": "0f1e2d3c4b", "pend": "5a4b3c2d1e", "copy": "c0c1c2c3c4"}
NAMES = {"fin": "deq-d8-s0", "run": "explicit-d8-s0", "fail": "deq-d16-s1", "pend": "weight_tied-d8-s0",
         "copy": "deq-copy-s0"}


def _train(step: int, loss: float) -> dict:
    return {"kind": "train", "step": step, "elapsed_s": step * 0.1, "loss": loss, "lr": 1e-3,
            "step_time_s": 0.1, "tokens_per_s": 4000.0 + step}


def build_sweep(root: Path) -> SweepStore:
    """A sweep caught mid-flight: finished, running (2nd attempt), failed, pending, copy-task runs."""
    store = SweepStore(root / "watch")
    store.write_meta({"name": "watch", "job_file": "jobs/watch.yaml", "created": "2025-01-15T10:00:00+00:00",
                      "run_ids": list(IDS.values())})
    for key, run_id in IDS.items():
        task = "copy" if key == "copy" else "lm"
        store.run(run_id).write_spec({"run_id": run_id, "sweep": "watch", "name": NAMES[key], "task": task,
                                      "grid": {"seed": 0}, "train": {"steps": 60, "batch_size": 8}})
    fin = store.run(IDS["fin"])
    fin.set_status("running", attempt=1)
    fin.append_metrics([_train(s, 6.0 - 0.05 * s) for s in (10, 20, 30, 40, 50, 60)]
                       + [{"kind": "eval", "step": 60, "elapsed_s": 6.5, "val_loss": 4.62, "val_ppl": 101.5}])
    fin.write_summary({"run_id": IDS["fin"], "val_ppl": 101.5, "tokens_per_s": 4321.0, "train_loss": 3.0,
                       "wall_time_s": 6.5})
    fin.set_status("finished", step=60)

    run = store.run(IDS["run"])
    run.set_status("running", attempt=2, step=30, reason="worker restart after RayActorError: node lost", rank=0)
    run.append_metrics([_train(10, 5.5), {"kind": "eval", "step": 20, "elapsed_s": 2.1, "val_ppl": 150.0},
                        _train(20, 5.0), _train(30, 4.5)])
    with open(run.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "train", "step": 40, "lo')  # a writer caught mid-append

    fail = store.run(IDS["fail"])
    fail.set_status("running", attempt=1)
    fail.append_metrics([_train(10, 5.8)])
    fail.set_status("failed", step=12, reason=REASON, rank=1)
    fail.log_dir.mkdir(parents=True)
    (fail.log_dir / "rank1.log").write_text("step 11 loss 5.7\nstep 12 loss nan\nFloatingPointError\n")

    store.run(IDS["pend"]).set_status("pending")

    copy = store.run(IDS["copy"])
    copy.set_status("running", attempt=1)
    copy.append_metrics([_train(60, 0.2), {"kind": "eval", "step": 60, "val_loss": 0.3, "val_acc": 0.875}])
    copy.write_summary({"run_id": IDS["copy"], "val_acc": 0.875, "val_loss": 0.3, "tokens_per_s": 9000.0})
    copy.set_status("finished", step=60)
    return store


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> SweepStore:
    return build_sweep(tmp_path_factory.mktemp("records"))


def test_rows_show_state_step_loss_and_reason(sweep):
    rows = {r["run_id"]: r for r in status_rows(sweep.dir)}
    assert [r["run_id"] for r in status_rows(sweep.dir)] == list(IDS.values())  # the sweep's order
    fin, run, fail, pend, copy = (rows[IDS[k]] for k in ("fin", "run", "fail", "pend", "copy"))
    assert [r["state"] for r in (fin, run, fail, pend, copy)] == ["finished", "running", "failed", "pending",
                                                                   "finished"]
    assert (fin["step"], run["step"], fail["step"], pend["step"]) == (60, 30, 12, 0)  # torn step 40 unseen
    assert all(r["total_steps"] == 60 for r in rows.values())
    assert run["loss"] == pytest.approx(4.5) and fail["loss"] == pytest.approx(5.8)
    assert fin["loss"] == pytest.approx(6.0 - 0.05 * 60)
    assert pend["loss"] is None and pend["val"] is None and pend["elapsed_s"] is None
    assert (fin["val_metric"], fin["val"]) == ("val_ppl", 101.5)
    assert (run["val_metric"], run["val"]) == ("val_ppl", 150.0)       # last eval record so far
    assert (copy["val_metric"], copy["val"]) == ("val_acc", 0.875)
    assert fin["tokens_per_s"] == 4321.0 and run["tokens_per_s"] == 4030.0  # summary, else last record
    assert (fail["reason"], fail["rank"]) == (REASON, 1)
    assert fin["reason"] is None and (run["attempt"], fin["attempt"], pend["attempt"]) == (2, 1, 0)
    assert run["elapsed_s"] >= 0 and fail["ended"] and run["ended"] is None


def test_latest_records_reads_backwards(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "eval", "step": 0, "val_ppl": 999.0})]
    lines += [json.dumps(_train(s, 1.0 / s)) for s in range(1, 400)]
    path.write_text("\n".join(lines) + "\n" + '{"kind": "eval", "ste')  # torn final line
    found = latest_records(path, chunk_bytes=256)  # eval is only at the very start: window must grow
    assert found["train"]["step"] == 399 and found["eval"]["val_ppl"] == 999.0
    assert latest_records(path, ("train",), chunk_bytes=256)["train"]["step"] == 399
    assert latest_records(tmp_path / "missing.jsonl") == {}


def test_formatting_helpers():
    assert format_reason(REASON, 1) == f"{REASON} (rank 1)"
    assert format_reason("FloatingPointError: bad (rank 1)", 1).count("rank 1") == 1
    assert format_reason(None, 3) == ""
    assert [format_duration(s) for s in (41, 192, 7500, None)] == ["41s", "3m12s", "2h05m", "-"]


def test_render_plain_has_footer_and_no_escape_codes(sweep):
    text = render_status(sweep.dir)
    assert not ANSI.search(text)
    assert "5 runs: 2 finished, 1 running, 1 failed, 1 pending" in text
    assert "sweep watch, created 2025-01-15T10:00:00+00:00" in text
    fail_line = next(line for line in text.splitlines() if NAMES["fail"] in line)
    assert "failed" in fail_line and f"{REASON} (rank 1)" in fail_line and "12/60" in fail_line
    run_line = next(line for line in text.splitlines() if NAMES["run"] in line)
    assert "30/60" in run_line and "4.500" in run_line and "ppl 150.0" in run_line
    assert "acc 0.875" in text
    header = text.splitlines()[0].split()
    assert header[:6] == ["run", "id", "state", "step", "loss", "val"]


def test_render_rich_on_a_terminal(sweep):
    console = Console(file=io.StringIO(), force_terminal=True, width=200, color_system="standard")
    text = render_status(sweep.dir, console=console)
    assert ANSI.search(text)  # styled for a terminal
    plain = ANSI.sub("", text)
    for name in NAMES.values():
        assert name in plain
    assert f"{REASON} (rank 1)" in plain and "5 runs: 2 finished" in plain


def test_not_a_sweep_folder(tmp_path):
    with pytest.raises(NotASweepFolder, match="no such folder"):
        status_rows(tmp_path / "nope")
    with pytest.raises(NotASweepFolder, match="not a sweep folder"):
        status_rows(tmp_path)


def test_cli_piped_output_and_errors(sweep, tmp_path):
    cmd = [sys.executable, "-m", "harness.status"]
    done = subprocess.run(cmd + [str(sweep.dir)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert all(name in done.stdout for name in NAMES.values())
    assert "1 failed" in done.stdout.splitlines()[-1]
    bad = subprocess.run(cmd + [str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error:")


def test_cli_json_and_single_run(sweep, capsys):
    assert main([str(sweep.dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sweep"] == "watch" and out["counts"] == {"finished": 2, "running": 1, "failed": 1, "pending": 1}
    assert {r["run_id"]: r["state"] for r in out["rows"]}[IDS["fail"]] == "failed"

    assert main([str(sweep.dir), "--run", NAMES["fail"]]) == 0
    detail = capsys.readouterr().out
    assert f"{REASON} (rank 1)" in detail and "rank1.log" in detail and "step 12 loss nan" in detail

    assert main([str(sweep.dir), "--run", IDS["run"][:6], "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)["rows"]] == [IDS["run"]]

    assert main([str(sweep.dir), "--run", "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --run 'no-such-run'") and len(err.strip().splitlines()) == 1


def test_an_unreadable_record_does_not_hide_the_others(tmp_path):
    store = SweepStore(tmp_path / "broken")
    store.write_meta({"name": "broken", "run_ids": ["good000000", "bad0000000"]})
    store.run("good000000").set_status("running", step=3)
    store.run("bad0000000").dir.mkdir(parents=True)
    (store.run("bad0000000").dir / "status.json").write_text('{"state": "runn')
    problems: list = []
    rows = {r["run_id"]: r for r in status_rows(store.dir, problems=problems)}
    assert rows["good000000"]["state"] == "running" and rows["good000000"]["step"] == 3
    # a torn status is rebuilt from the other records: no summary, so pending (resubmitting resumes it)
    assert rows["bad0000000"]["state"] == "pending"
    assert rows["bad0000000"]["reason"].startswith("status.json: not JSON")
    assert [str(p).split(":")[0] for p in problems] == [str(store.run("bad0000000").dir / "status.json")]
    assert "1 pending" in render_status(store.dir).splitlines()[-1]
