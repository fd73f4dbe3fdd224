"""``python -m harness.analyze``: the equilibrium analysis of recorded runs from their
checkpoints, for sweeps recorded before runs analysed themselves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.records import RunRecord
from sweep_helpers import REPO, tiny_job

ENV = {**os.environ, "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                            str(REPO / ".cache" / "torch_extensions"))}
DEQ = {"kind": "deq", "max_iter": 6, "backward_max_iter": 6}
# a constant rate and no warm-up: a run of 8 steps has the weights a run of 10 has at step 8
SAME_PATH = {"lr_schedule": "constant", "warmup_steps": 0, "eval_interval": 0}


def _train(tmp: Path, name: str, steps: int) -> RunRecord:
    job = tiny_job(tmp, name, [DEQ], steps=steps, workers=1, extra_train=SAME_PATH)
    proc = subprocess.run([sys.executable, "-m", "harness.train", str(job), "--run", "deq6",
                           "--results", str(tmp / "results")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = (tmp / "results" / name / "runs").iterdir()
    return RunRecord(run_dir)


def _analyze(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.analyze", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two short runs without Ray (about 20 s)
def test_a_checkpoint_is_analysed_as_the_run_that_stopped_there(tmp_path):
    long = _train(tmp_path, "long", steps=10)  # checkpoints at steps 4 and 8 (none at the end)
    short = _train(tmp_path, "short", steps=8)  # ends at step 8: its analysis is of those weights
    final = long.read_analysis()
    assert final["source"] == "end of training" and final["step"] == 10 and final["steps"] == 10
    (long.dir / "analysis.json").unlink()  # as a sweep recorded before analyses existed

    # from a user folder, with the relative paths a user types
    proc = _analyze(tmp_path, "results/long", "--reports", "reports/long")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{long.run_id} deq6: analysed: from the checkpoint at step 8 of 10" in proc.stdout
    got, want = long.read_analysis(), short.read_analysis()
    assert (got["source"], got["step"], got["steps"]) == ("checkpoint", 8, 10)
    for solver, trace in want["rel_residual"].items():
        assert got["rel_residual"][solver] == pytest.approx(trace, rel=1e-4, abs=1e-7), solver
    assert got["rel_residual"]["broyden"] != final["rel_residual"]["broyden"]  # not the final weights
    page = (tmp_path / "reports" / "long" / "index.html").read_text()
    assert "Equilibria of the trained cells" in page and "deq at step 8 of 10" in page

    # a second pass skips it; --force redoes it; an end-of-training analysis is never replaced
    again = _analyze(tmp_path, "results/long", "--no-report")
    assert again.returncode == 0 and "skipped: has an analysis from the checkpoint at step 8" in again.stdout
    kept = _analyze(tmp_path, "results/short", "--force", "--no-report")
    assert kept.returncode == 0 and "skipped: has the analysis written at the end of training" in kept.stdout
    assert short.read_analysis() == want

    # a truncated checkpoint: that run fails in one line, exit 1, its analysis untouched
    (states,) = long.dir.glob("checkpoints/local/*/mp_rank_00_model_states.pt")
    states.write_bytes(states.read_bytes()[:100])
    bad = _analyze(tmp_path, "results/long", "--force", "--no-report")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr + bad.stdout
    assert "failed: " in bad.stdout and "unreadable checkpoint" in bad.stdout
    assert long.read_analysis() == got


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    proc = _analyze(tmp_path, "results/none")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "not a sweep's results folder" in proc.stderr
    (tmp_path / "results" / "s" / "runs" / "abc").mkdir(parents=True)
    proc = _analyze(tmp_path, "results/s", "--run", "xyz")
    assert proc.returncode == 2 and "no run 'xyz'; its runs: abc" in proc.stderr
    # a run folder without a spec fails in one line and nothing is written
    proc = _analyze(tmp_path, "results/s")
    assert proc.returncode == 1 and "abc ?: failed:" in proc.stdout and "spec.json: missing" in proc.stdout
    assert not (tmp_path / "results" / "s" / "runs" / "abc" / "analysis.json").exists()
    assert not (tmp_path / "reports").exists()


def test_latest_checkpoint_follows_ray_trains_snapshot(tmp_path):
    rec = RunRecord(tmp_path / "runs" / "r1")
    storage = rec.checkpoint_dir / "r1"
    assert rec.latest_checkpoint() is None
    for name in ("checkpoint_2026-01-01_00-00-01.000000", "checkpoint_2026-01-01_00-00-02.000000"):
        (storage / name).mkdir(parents=True)
    assert rec.latest_checkpoint().name.endswith("02.000000")  # no snapshot: the newest folder
    snapshot = {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_2026-01-01_00-00-01.000000"}}
    (storage / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    assert rec.latest_checkpoint().name.endswith("01.000000")  # Ray Train's word wins
    (storage / "checkpoint_manager_snapshot.json").write_text("{torn")
    assert rec.latest_checkpoint().name.endswith("02.000000")
    (rec.checkpoint_dir / "local").mkdir()
    assert rec.latest_checkpoint() == rec.checkpoint_dir / "local"  # a run trained without Ray
