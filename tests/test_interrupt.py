"""Ctrl-C (SIGINT) or SIGTERM to ``harness.submit`` mid-sweep (slow): the runs stop within
seconds, none is left ``running`` in its record (the reason names the signal), the exit code is
130 / 143, and resubmission resumes from the last checkpoints."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from sweep_helpers import read_json, run_step, submit, tiny_job, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_runs_and_resubmission_resumes(tmp_path, sig):
    job = tiny_job(tmp_path, "sigint", [{"kind": "weight_tied", "layers": 2}], steps=30, workers=1,
                   extra_train={"checkpoint_interval": 4, "eval_interval": 0})
    faults = [{"run": "weight_tied2", "kind": "slow", "rank": 0, "step": 1, "delay_s": 0.3}]
    env = {"DEQBENCH_FAULTS": json.dumps(faults)}
    proc = submit(job, tmp_path, env=env, wait=False)
    sweep = tmp_path / "results" / "sigint"
    try:
        wait_for(lambda: run_step(sweep) >= 10, 300, "the run to reach step 10")
        t0 = time.monotonic()
        if sig == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        else:
            os.kill(proc.pid, signal.SIGTERM)  # what SLURM, systemd or a CI runner sends the driver
        out, _ = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    run_dir = next((sweep / "runs").iterdir())
    time.sleep(2)  # nothing may flip the record back afterwards
    status = read_json(run_dir / "status.json")
    assert status["state"] == "pending" and "interrupted" in status["reason"], status
    assert ("Ctrl-C" if sig == "SIGINT" else sig) in status["reason"], status
    stopped_at = int(status["step"])
    assert stopped_at < 30, status  # stopped mid-run (the 60 s wait above only guards a hang: no timing test)

    again = submit(job, tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    status = read_json(run_dir / "status.json")
    assert status["state"] == "finished" and status["attempt"] == 2
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == list(range(2, 31, 2)), steps  # resumed from a checkpoint: no gap, no duplicate
    print(f"Ctrl-C at step {stopped_at}: stopped in {stopped_in:.1f} s; resubmission finished the run")


def test_run_folder_deleted_mid_sweep_fails_that_run_only(tmp_path):
    import shutil

    job = tiny_job(tmp_path, "rmrun", [{"kind": "weight_tied", "layers": 2}, {"kind": "explicit", "layers": 2}],
                   steps=24, extra_train={"checkpoint_interval": 4, "eval_interval": 0},
                   resources={"max_failures": 1})
    faults = [{"run": "weight_tied2", "kind": "slow", "rank": 0, "step": 1, "delay_s": 0.3}]
    proc = submit(job, tmp_path, env={"DEQBENCH_FAULTS": json.dumps(faults)}, wait=False)
    sweep = tmp_path / "results" / "rmrun"
    try:
        wait_for(lambda: run_step(sweep, "weight_tied2") >= 6, 300, "the first run to reach step 6")
        victim = next(d for d in (sweep / "runs").iterdir()
                      if read_json(d / "spec.json")["name"] == "weight_tied2")
        shutil.rmtree(victim)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out[-3000:]  # one run failed, the sweep finished
    assert "Traceback" not in out
    states = {read_json(d / "spec.json")["name"]: read_json(d / "status.json") for d in (sweep / "runs").iterdir()}
    assert states["weight_tied2"]["state"] == "failed"
    reason = states["weight_tied2"]["reason"]  # (the tmp path itself contains "deleted": match phrases)
    assert ("was deleted while the run was in flight" in reason
            or "(its spec.json) does not exist" in reason), reason
    assert states["explicit2"]["state"] == "finished"
    assert (tmp_path / "reports" / "rmrun" / "index.html").exists()
