"""One run without Ray (`python -m harness.train`): same function, same records, world size 1."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.records import RunRecord
from sweep_helpers import COMMON_METRICS, DEQ_METRICS, LM_METRICS, REPO, assert_keys_in_schema, finite, tiny_job


def test_one_run_without_ray_writes_the_same_records(tmp_path):
    job = tiny_job(tmp_path, "local", [{"kind": "deq", "max_iter": 6, "backward_max_iter": 6}], steps=8)
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    listed = subprocess.run([sys.executable, "-m", "harness.train", str(job), "--list"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "deq6" in listed.stdout
    # Ray made unimportable: the run must not need it
    code = ("import sys; sys.modules['ray'] = None; from harness.train import main; "
            f"sys.exit(main([{str(job)!r}, '--run', 'deq6', '--results', {str(tmp_path / 'results')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = listed.stdout.split()[0]
    rec = RunRecord(tmp_path / "results" / "local" / "runs" / run_id)
    assert rec.read_status()["state"] == "finished" and rec.read_status()["attempt"] == 1
    summary = rec.read_summary()
    bad = {k: summary.get(k) for k in COMMON_METRICS + LM_METRICS + DEQ_METRICS if not finite(summary.get(k))}
    assert not bad, bad
    assert summary["world_size"] == 1
    assert [r["step"] for r in rec.read_metrics() if r["kind"] == "train"] == [2, 4, 6, 8]
    # every step after the warm-up is timed: the spread brackets the median
    for name in ("step", "fwd", "bwd", "solver"):
        assert summary[f"{name}_time_p10_s"] <= summary[f"{name}_time_s"] <= summary[f"{name}_time_p90_s"]
    assert summary["peak_mem_bytes"] is None  # a CPU has no allocator peak worth recording
    assert summary["spectral_radius"] > 0 and summary["infer_time_s"] > 0
    # the per-step and per-batch times a one-seed ratio's interval is taken over
    import statistics

    assert statistics.median(summary["step_times_s"]) == pytest.approx(summary["step_time_s"], abs=1e-6)
    assert statistics.median(summary["infer_times_s"]) == pytest.approx(summary["infer_time_s"], abs=1e-6)
    assert 0.0 <= summary["fwd_unconverged_frac"] <= 1.0 and 0.0 <= summary["bwd_unconverged_frac"] <= 1.0
    evals = [r for r in rec.read_metrics() if r["kind"] == "eval"]
    assert evals and all(r["spectral_radius"] > 0 for r in evals)
    # TensorBoard's own reader sees the same curves
    from test_tensorboard import scalars

    board = scalars(rec.dir)
    assert [s for s, _ in board["train/loss"]] == [2, 4, 6, 8]
    assert {"train/lr", "train/tokens_per_s", "train/fwd_rel_res", "eval/val_ppl", "eval/spectral_radius"} <= set(board)
    # the trained cell's equilibrium analysis is on record and drawn in the report
    analysis = rec.read_analysis()
    assert analysis["kind"] == "deq" and len(analysis["rel_residual"]["broyden"]) == analysis["max_iter"]
    from harness.report import write_report

    out = write_report(tmp_path / "results" / "local", tmp_path / "report")
    assert (out / "equilibrium.png").is_file() and "Equilibria of the trained cells" in (out / "index.html").read_text()
    assert_keys_in_schema(rec.dir)


def test_deq_with_warmup_reports_equilibrium_activation_memory(tmp_path):
    """activation_bytes of a DEQ with pretrain_steps is measured in equilibrium mode (the
    same as the DEQ without a warm-up); the warm-up mode's figure is recorded beside it."""
    deq = {"kind": "deq", "max_iter": 6, "backward_max_iter": 6}
    job = tiny_job(tmp_path, "warm", [deq, {**deq, "pretrain_steps": 3}], steps=6,
                   extra_train={"measure_steps": 2, "eval_interval": 0, "checkpoint_interval": 0})
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    listed = subprocess.run([sys.executable, "-m", "harness.train", str(job), "--list"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    summaries = []
    for line in listed.stdout.splitlines():
        run_id = line.split()[0]
        proc = subprocess.run([sys.executable, "-m", "harness.train", str(job), "--run", run_id, "--results",
                               str(tmp_path / "results")], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summaries.append(RunRecord(tmp_path / "results" / "warm" / "runs" / run_id).read_summary())
        assert_keys_in_schema(tmp_path / "results" / "warm" / "runs" / run_id)
    plain, warm = summaries
    assert plain["activation_bytes_warmup"] is None
    assert warm["activation_bytes"] == plain["activation_bytes"]
    assert warm["activation_bytes_warmup"] > 0 and warm["activation_bytes_warmup"] != warm["activation_bytes"]


def test_corrupted_checkpoint_is_refused_and_the_run_starts_again(tmp_path):
    """A truncated checkpoint: the resume refuses it in one line (status.checkpoint_refused),
    rebuilds the engine and trains from step 0; the curve is rewritten without gaps or
    duplicates. (Ray Train keeps one checkpoint per run, so there is no older one to use.)"""
    job = tiny_job(tmp_path, "corrupt", [{"kind": "weight_tied", "layers": 2}], steps=8,
                   extra_train={"checkpoint_interval": 4, "eval_interval": 0, "measure_steps": 2})
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    cmd = [sys.executable, "-m", "harness.train", str(job), "--run", "weight_tied2", "--results",
           str(tmp_path / "results")]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = next((tmp_path / "results" / "corrupt" / "runs").iterdir())
    shards = sorted((run_dir / "checkpoints" / "local").rglob("*.pt"))
    assert shards, "the run left no checkpoint"
    for shard in shards:  # truncated, as by a full disk or a kill in mid-write
        shard.write_bytes(shard.read_bytes()[: max(1, shard.stat().st_size // 3)])
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stderr
    rec = RunRecord(run_dir)
    status = rec.read_status()
    assert status["state"] == "finished" and status["attempt"] == 2
    note = status["checkpoint_refused"]
    assert "could not be read" in note and "step 0" in note and "\n" not in note, note
    assert [r["step"] for r in rec.read_metrics() if r["kind"] == "train"] == [2, 4, 6, 8]


def test_the_same_spec_and_seed_give_the_same_figures(tmp_path):
    """Reproducible by seed (docs/verdicts.md): one CPU worker, the same spec, seed and commit,
    twice: every loss and evaluation figure and the trained parameters (their SHA-256) are
    bitwise equal; only timings differ."""
    job = tiny_job(tmp_path, "repro", [{"kind": "deq", "max_iter": 6, "backward_max_iter": 6}], steps=6,
                   extra_train={"measure_steps": 2, "eval_interval": 3, "checkpoint_interval": 0})
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    records = []
    for attempt in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "harness.train", str(job), "--run", "deq6", "--results",
                               str(tmp_path / attempt)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rec = RunRecord(next((tmp_path / attempt / "repro" / "runs").iterdir()))
        records.append(rec)
    first, second = (r.read_summary() for r in records)
    for key in ("train_loss", "val_loss", "val_ppl", "test_loss", "test_ppl", "rank_param_sha", "spectral_radius",
                "fwd_nstep_mean", "fwd_rel_res_mean", "bwd_res_mean", "activation_bytes", "nfe"):
        assert first[key] == second[key], key
    untimed = [[{k: v for k, v in line.items() if "time" not in k and k not in ("elapsed_s", "tokens_per_s")}
                for line in r.read_metrics()] for r in records]
    assert untimed[0] == untimed[1] and len(untimed[0]) > 3
