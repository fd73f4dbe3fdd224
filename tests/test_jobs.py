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


def test_paper_shape_has_the_seeds_depths_and_matches_it_promises():
    """jobs/paper_shape.yaml (make paper): the headline LM pair 5 seeds each and matched in
    parameters; every other strategy 2 seeds or more; copy memory's weight-tied stack and both DEQ
    gradients 3 seeds each; every strategy at 3 depths or more in the short memory runs."""
    from harness.records.compare import model_name

    path = JOBS[0].with_name("paper_shape.yaml")
    job, _ = load_job_file(path)
    runs = expand_grid(job, path)
    counts = checks.check_models(runs, path)
    models: dict[str, list] = {}
    for r in runs:
        models.setdefault(model_name(r.name, r.train.seed), []).append(r)
    seeds = {name: len({r.train.seed for r in rs}) for name, rs in models.items()}
    pairs = {(p.model, p.baseline) for p in job.compare.pairs}
    assert ("lm_deq", "lm_weight_tied10") in pairs and ("copy_deq", "copy_weight_tied10") in pairs
    assert seeds["lm_deq"] >= 5 and seeds["lm_weight_tied10"] >= 5
    lm = {r.strategy for name in seeds if name.startswith("lm_") for r in models[name]}
    assert lm == {"deq", "weight_tied", "checkpointed", "neural_ode", "explicit"}
    assert all(n >= 2 for name, n in seeds.items() if name.startswith("lm_"))
    assert all(seeds[name] >= 3 for name in ("copy_deq", "copy_deq-phantom", "copy_weight_tied10"))
    params = {name: {counts[r.run_id]["non_embedding"] for r in rs} for name, rs in models.items()}
    one_cell = [p for name, ps in params.items() if name.startswith(("lm_", "copy_")) for p in ps]
    assert max(one_cell) / min(one_cell) < 1.01, params  # every quality model matched in parameters
    from models import depth_size
    mem = [r for r in runs if r.name.startswith("mem_")]
    depths = {s: {depth_size(r.model["depth"]) for r in mem if r.strategy == s} for s in {r.strategy for r in mem}}
    assert set(depths) == lm and all(len(d) >= 3 for d in depths.values()), depths
    assert {r.data.seq_len for r in mem} != {r.data.seq_len for r in runs if r.name.startswith("lm_")}
