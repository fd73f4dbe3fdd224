"""Faults injected into real sweeps (embedded Ray, 2 DeepSpeed workers per run).

- a worker process killed mid-run: Ray Train restarts the workers and the run resumes from
  its last checkpoint; its curve has neither a gap nor a duplicate step;
- a diverging DEQ (NaN loss): the run stops, is recorded as failed with the reason, and the
  sweep goes on;
- out of memory under a CPU memory cap: recorded as failed with the reason;
- the driver killed mid-sweep: resubmitting resumes; no finished run reruns; no torn record.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import yaml

from harness.records import RunRecord, load_sweep
from sweep_helpers import REPO, poll_json, read_json, submit, tiny_job

pytestmark = pytest.mark.slow


def _train_steps(run_dir):
    return [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def _all_json_parse(sweep):
    for path in sweep.rglob("*.json"):
        if "checkpoint" in path.parts[-2] or "checkpoints" in path.parts:
            continue
        json.loads(path.read_text())  # a torn file would raise


def test_killed_worker_divergence_and_oom(tmp_path):
    job = tiny_job(tmp_path, "faults", [{"kind": "weight_tied", "layers": 2}], steps=12)
    spec = yaml.safe_load(job.read_text())
    spec["grid"] = {"cases": [
        {"label": "kill", "model.depth": {"kind": "weight_tied", "layers": 2}},
        {"label": "nan", "model.depth": {"kind": "deq", "max_iter": 6, "backward_max_iter": 6}},
        {"label": "oom", "model.depth": {"kind": "explicit", "layers": 8}, "model.d_model": 256,
         "model.n_head": 4, "model.d_inner": 4096, "train.batch_size": 64, "data.seq_len": 256,
         "resources.memory_cap_gb": 0.25, "resources.max_failures": 0},
    ]}
    job.write_text(yaml.safe_dump(spec))
    # the kill waits 2 s, so the checkpoint of step 4 is committed by Ray Train first (a
    # checkpoint reported a few milliseconds before a crash may legitimately be lost)
    faults = [{"run": "kill", "kind": "kill", "rank": 1, "step": 7, "delay_s": 2},
              {"run": "nan", "kind": "nan", "rank": 0, "step": 3}]
    proc = submit(job, tmp_path, env={"DEQBENCH_FAULTS": json.dumps(faults)})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some runs failed, the sweep finished
    sweep = tmp_path / "results" / "faults"
    df = load_sweep(sweep).set_index("name")

    kill = df.loc["kill"]
    assert kill["state"] == "finished"
    assert kill["attempt"] == 2  # one restart of the worker group
    run_dir = sweep / "runs" / kill["run_id"]
    assert _train_steps(run_dir) == list(range(2, 13, 2))  # resumed at 4: no gap, no duplicate
    assert "resumed from checkpoint at step 4" in (run_dir / "logs" / "rank0.log").read_text()

    nan = df.loc["nan"]
    assert nan["state"] == "failed"
    assert nan["reason"].startswith("Diverged: non-finite loss"), nan["reason"]
    assert not (sweep / "runs" / nan["run_id"] / "summary.json").exists()

    oom = df.loc["oom"]
    assert oom["state"] == "failed"
    assert "out of memory" in oom["reason"], oom["reason"]
    assert "failed: oom" in proc.stderr and "failed: nan" in proc.stderr
    _all_json_parse(sweep)
    assert (tmp_path / "reports" / "faults" / "index.html").is_file()


def test_driver_killed_mid_sweep_resumes(tmp_path):
    depths = [{"kind": "weight_tied", "layers": 2}, {"kind": "explicit", "layers": 2}]
    job = tiny_job(tmp_path, "driverkill", depths, steps=200,
                   extra_train={"checkpoint_interval": 4, "log_interval": 4, "eval_interval": 0},
                   resources={"max_concurrent_runs": 1})
    proc = submit(job, tmp_path, wait=False)
    sweep = tmp_path / "results" / "driverkill"
    deadline = time.time() + 420
    first = second = None
    try:
        while time.time() < deadline:  # wait: first run finished, second has a checkpoint
            if (sweep / "sweep.json").exists():
                ids = poll_json(sweep / "sweep.json").get("run_ids", [])
                states = [poll_json(sweep / "runs" / i / "status.json") for i in ids]  # may not exist yet
                done = [i for i, st in zip(ids, states) if st.get("state") == "finished"]
                if done:
                    first = done[0]
                    second = [i for i in ids if i != first][0]
                    # a checkpoint counts once its report reached the records (step >= 8)
                    st2 = poll_json(sweep / "runs" / second / "status.json")
                    step = st2.get("step") or 0
                    if (st2.get("state") == "running" and step >= 8
                            and RunRecord(sweep / "runs" / second).latest_checkpoint() is not None):
                        break
            time.sleep(0.5)
        else:
            pytest.fail("the sweep never reached a checkpoint of its second run")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait(timeout=60)
    assert read_json(sweep / "runs" / second / "status.json")["state"] == "running"
    _all_json_parse(sweep)
    first_status = (sweep / "runs" / first / "status.json").read_bytes()

    again = submit(job, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 already done, 1 to run" in again.stdout
    assert (sweep / "runs" / first / "status.json").read_bytes() == first_status
    st = read_json(sweep / "runs" / second / "status.json")
    assert st["state"] == "finished"
    assert _train_steps(sweep / "runs" / second) == list(range(4, 201, 4))  # no gap, no duplicate
    log = (sweep / "runs" / second / "logs" / "rank0.log").read_text()
    resumed = [int(m) for m in re.findall(r"resumed from checkpoint at step (\d+)", log)]
    assert resumed and resumed[0] >= 4, log
