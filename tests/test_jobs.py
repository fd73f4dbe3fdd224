"""Every job file shipped in jobs/ is valid, and the paper sweep compares models of one size."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.sweep import checks
from harness.sweep.config import expand_grid, load_job_file

JOBS = sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_shipped_job_file_is_valid(path):
    job, _ = load_job_file(path)
    runs = expand_grid(job, path)
    assert runs and job.name == path.stem
    counts = checks.check_models(runs, path)  # builds every model on the meta device
    checks.check_deepspeed(runs, path)
    assert set(counts) == {r.run_id for r in runs}


def test_quickstart_covers_every_strategy_on_both_tasks():
    job, _ = load_job_file(JOBS[0].with_name("quickstart.yaml"))
    runs = expand_grid(job)
    pairs = {(r.task, r.model["depth"]["kind"]) for r in runs}
    strategies = {"deq", "weight_tied", "checkpointed", "neural_ode", "explicit"}
    assert pairs == {(t, s) for t in ("lm", "copy") for s in strategies}
    assert all(r.resources.workers == 2 for r in runs)


def test_wt103_sweep_matches_non_embedding_parameters():
    path = JOBS[0].with_name("wt103_sweep.yaml")
    job, _ = load_job_file(path)
    runs = expand_grid(job, path)
    counts = checks.check_models(runs, path)
    for size in ("small", "medium"):
        group = [counts[r.run_id]["non_embedding"] for r in runs if r.name.startswith(size)]
        assert len(group) == 5 * 3  # five strategies, three seeds (a quality verdict needs an interval)
        assert max(group) / min(group) < 1.01, (size, group)  # matched within 1%
    assert {r.data.seq_len for r in runs} == {150}
    assert all(r.model["adaptive_softmax"] for r in runs)
