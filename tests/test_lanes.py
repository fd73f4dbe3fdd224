"""Lanes without Ray: the run queue's hand-out and per-run restart budget, the checkpoint swap,
and the messages a lane adds (fast). The lanes themselves run in every sweep test; a killed
worker resuming under them is tests/test_faults.py::test_killed_worker_divergence_and_oom."""
from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given, settings, strategies as st

from harness.records import RunRecord, apply_message
from harness.sweep.config import expand_grid, load_job_file
from harness.sweep.lanes import RunQueue, close_lane_runs, shape_of
from sweep_helpers import REPO

QUICKSTART = REPO / "jobs" / "quickstart.yaml"


def _runs(tmp_path, sets=()):
    job, _ = load_job_file(QUICKSTART, list(sets))
    runs = expand_grid(job, QUICKSTART)
    out = []
    for spec in runs:
        record = RunRecord(tmp_path / "runs" / spec.run_id)
        record.write_spec(spec.to_json())
        record.set_status("pending")
        out.append((spec, str(record.dir)))
    return out


def test_a_lane_takes_runs_in_order_and_gets_its_run_in_flight_back_after_a_restart(tmp_path):
    runs = _runs(tmp_path, ["resources.max_failures=1"])
    queue = RunQueue(runs)
    shape = shape_of(runs[0][0])
    t0 = time.time()
    queue.start_lane("a")
    time.sleep(0.05)
    t1 = time.time()
    first = queue.take("a", shape, finished=False)
    assert first[1] == runs[0][1]
    status = RunRecord(first[1]).read_status()
    # the first run of a lane's trainer starts when the lane did (it pays the worker group's start)
    assert status["state"] == "running" and t0 <= status["task_started"] < t1
    # a restart (the workers ask again without having finished it): the same run, once
    RunRecord(first[1]).set_status("running", reason="worker error: RuntimeError: boom", rank=1)
    assert queue.take("a", shape, finished=False)[1] == first[1]
    # a second restart exceeds max_failures=1: recorded failed with the worker's error, next run
    nxt = queue.take("a", shape, finished=False)
    assert nxt[1] == runs[1][1]
    failed = RunRecord(first[1]).read_status()
    assert failed["state"] == "failed" and failed["reason"] == "RuntimeError: boom" and failed["rank"] == 1
    assert failed["task_ended"] is not None
    # finished: the next one, started when it is handed out, and its restart budget is its own
    t2 = time.time()
    assert queue.take("a", shape, finished=True)[1] == runs[2][1]
    assert RunRecord(runs[2][1]).read_status()["task_started"] >= t2
    assert queue.take("a", shape, finished=False)[1] == runs[2][1]  # one restart: allowed
    assert queue.handed_out("a") == [r[1] for r in runs[:3]]
    assert queue.current_of("a") == runs[2][1]


def test_a_run_that_ended_before_the_restart_is_not_trained_again(tmp_path):
    runs = _runs(tmp_path)
    queue = RunQueue(runs)
    shape = shape_of(runs[0][0])
    run = queue.take("a", shape, finished=False)
    RunRecord(run[1]).set_status("finished")
    assert queue.take("a", shape, finished=False)[1] == runs[1][1]
    assert RunRecord(run[1]).read_status()["state"] == "finished"


@settings(max_examples=30, deadline=None)
@given(workers=st.lists(st.sampled_from([1, 2]), min_size=1, max_size=6),
       capped=st.lists(st.booleans(), min_size=6, max_size=6), lanes=st.integers(1, 3))
def test_every_run_is_handed_out_once_to_a_lane_of_its_shape(tmp_path_factory, workers, capped, lanes):
    """Whatever the mix of shapes: lanes started while next_lane_shape names one, each taking
    runs until none is left for it, train every run exactly once, each in a lane of its own
    shape, and a run with a memory cap alone in its lane."""
    tmp_path = tmp_path_factory.mktemp("q")
    base = _runs(tmp_path)
    runs = []
    for i, w in enumerate(workers):
        res = {"workers": w, "memory_cap_gb": 1.0 if capped[i] else None}
        spec = base[i][0].model_copy(update={"resources": base[i][0].resources.model_copy(update=res),
                                             "run_id": f"r{i}"})
        record = RunRecord(tmp_path / "runs" / f"r{i}")
        record.set_status("pending")
        runs.append((spec, str(record.dir)))
    queue = RunQueue(runs)
    taken: dict[str, list[str]] = {}
    active: list[tuple[str, tuple]] = []
    k = 0
    while True:
        while len(active) < lanes:
            shape = queue.next_lane_shape([s for _, s in active])
            if shape is None:
                break
            k += 1
            active.append((f"lane{k}", shape))
        if not active:
            break
        lane, shape = active.pop(0)  # one lane runs until it has nothing left
        finished = False
        while (job := queue.take(lane, shape, finished)) is not None:
            assert shape_of(job[0]) == tuple(shape)
            taken.setdefault(lane, []).append(job[0].run_id)
            finished = True
    flat = [r for rs in taken.values() for r in rs]
    assert sorted(flat) == sorted(s.run_id for s, _ in runs)
    for lane_runs in taken.values():
        caps = [r for r in lane_runs if capped[int(r[1:])]]
        assert not caps or lane_runs == caps[:1]


def test_closing_a_lane_gives_every_run_a_final_state_and_the_last_its_end(tmp_path):
    runs = _runs(tmp_path)[:3]
    RunRecord(runs[0][1]).set_status("finished", task_ended=1.0)
    RunRecord(runs[1][1]).set_status("finished")
    RunRecord(runs[2][1]).set_status("running")
    close_lane_runs([r[1] for r in runs])
    s0, s1, s2 = (RunRecord(r[1]).read_status() for r in runs)
    assert s0["state"] == "finished" and s0["task_ended"] == 1.0
    assert s1["state"] == "finished" and s1["task_ended"] > 1.0
    assert s2["state"] == "failed" and s2["reason"] == "training ended without a final report"


def _staged(record: RunRecord, tag: str, payload: str) -> Path:
    staged = record.stage_checkpoint(tag)
    (staged / "weights").write_text(payload)
    return staged


def test_a_staged_checkpoint_becomes_the_latest_only_with_its_message(tmp_path):
    record = RunRecord(tmp_path / "run")
    record.set_status("running")
    first = _staged(record, "01", "step 4")
    assert record.latest_checkpoint() is None  # staged, its records not written yet
    apply_message(record, {"records": [{"kind": "train", "step": 4, "loss": 1.0}],
                           "status": {"state": "running", "step": 4}, "checkpoint": str(first)})
    assert (record.latest_checkpoint() / "weights").read_text() == "step 4"
    lost = _staged(record, "02", "step 8")  # the driver died before this message arrived
    newer = _staged(record, "03", "step 12")
    apply_message(record, {"status": {"state": "running", "step": 12}, "checkpoint": str(newer)})
    assert (record.latest_checkpoint() / "weights").read_text() == "step 12"
    assert not lost.exists()  # an older, never committed staging folder is cleared
    # a writer killed between the two renames of the swap: the previous one is still read
    (record.checkpoint_dir / "local").rename(record.checkpoint_dir / "local.old")
    assert (record.latest_checkpoint() / "weights").read_text() == "step 12"


def test_the_end_of_a_run_in_its_lane_keeps_its_state(tmp_path):
    record = RunRecord(tmp_path / "run")
    for state in ("finished", "failed"):
        record.set_status(state, reason="Diverged: x" if state == "failed" else None)
        apply_message(record, {"task_ended": 123.5})
        status = record.read_status()
        assert status["state"] == state and status["task_ended"] == 123.5
