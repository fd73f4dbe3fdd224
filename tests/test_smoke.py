"""``harness.submit --smoke`` (harness.sweep.smoke): every shipped job file's grid shrunk to a smoke
run that keeps every strategy, task and option, in its own sweep, marked in every spec. The
smoke sweeps themselves run in tests/test_shipped_jobs.py (slow)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.sweep.config import expand_grid, load_job_file, read_raw_job
from harness.sweep.smoke import SMALL_D_MODEL, TRAIN, smoke_overrides
from sweep_helpers import REPO

SHIPPED = sorted((REPO / "jobs").glob("*.yaml"))


def _models(runs) -> set:
    return {(r.task, r.strategy, r.model["depth"].get("grad", "ift")) for r in runs}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_smoke_run_keeps_every_model_kind_in_its_own_sweep(path):
    real, _ = load_job_file(path)
    real_runs = expand_grid(real, path)
    raw, _ = read_raw_job(path)
    sets = smoke_overrides(raw)
    smoke, _ = load_job_file(path, sets)
    runs = expand_grid(smoke, path, smoke=True)
    assert smoke.name == f"{real.name}-smoke" and smoke.train.steps == TRAIN["steps"]
    assert _models(runs) == _models(real_runs)  # every strategy, task and gradient still runs
    assert len(runs) <= len(real_runs) and all(r.train.seed == 0 for r in runs)
    assert all(r.smoke and r.to_json()["smoke"] is True for r in runs)
    assert not {r.run_id for r in runs} & {r.run_id for r in real_runs}
    widths = {r.model.get("d_model") for r in real_runs}
    kept = max(widths) <= SMALL_D_MODEL  # already tiny: widths kept (parameter matching survives)
    assert all(r.model.get("d_model", 16) == (r.model.get("d_model") if kept else 16) for r in runs)
    assert all(r.resources.gpus_per_worker == 0 for r in runs)
    if kept:  # every model keeps its real width: the one-cell/explicit parameter match holds
        by_label = {r.name.split("_s")[0]: r.model.get("d_inner") for r in real_runs}
        assert all(r.model.get("d_inner") == by_label.get(r.name.split("_s")[0], r.model.get("d_inner"))
                   for r in runs)
    assert all(not r.smoke for r in real_runs)


def test_dry_run_smoke_lists_what_it_shrinks_from_a_user_folder(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "harness.submit", str(REPO / "jobs" / "depth_scaling.yaml"),
                           "--dry-run", "--smoke"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("smoke run: depth_scaling-smoke: widths, steps, depths and workers shrunk")
    assert "  --set name=depth_scaling-smoke" in lines and "  --set train.steps=6" in lines
    assert "5 runs:" in proc.stdout  # four depths per strategy shrink to one model each
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
