"""A real sweep end to end: job file -> embedded Ray -> 2 DeepSpeed workers per run -> records.

Checks the records (every run finished, every metric present and finite, both ranks hold
the same parameters after training, the per-step curve has no gap or duplicate), the
report, and that resubmitting the same job file reruns nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.records import load_metrics, load_sweep
from sweep_helpers import (COMMON_METRICS, DEQ_METRICS, LM_METRICS, assert_keys_in_schema, finite, read_json,
                           submit, tiny_job)

pytestmark = pytest.mark.slow


def test_sweep_records_and_resubmission(tmp_path):
    depths = [{"kind": "deq", "max_iter": 8, "tol": 1e-3, "backward_max_iter": 8},
              {"kind": "weight_tied", "layers": 2}]
    job = tiny_job(tmp_path, "itest", depths, steps=12)
    proc = submit(job, tmp_path, relative=True)  # relative folders, as in `make run`
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ray dashboard: http://127.0.0.1:" in proc.stdout

    sweep = tmp_path / "results" / "itest"
    df = load_sweep(sweep)
    assert len(df) == 2 and set(df["state"]) == {"finished"}
    for run_id, strategy in zip(df["run_id"], df["strategy"]):
        run = sweep / "runs" / run_id
        summary = read_json(run / "summary.json")
        wanted = COMMON_METRICS + LM_METRICS + (DEQ_METRICS if strategy == "deq" else ())
        bad = {k: summary.get(k) for k in wanted if not finite(summary.get(k))}
        assert not bad, f"{strategy}: missing or non-finite metrics {bad}"
        assert summary["world_size"] == 2
        # data parallelism kept the replicas identical
        assert len(summary["rank_param_sha"]) == 2
        assert len(set(summary["rank_param_sha"])) == 1, summary["rank_param_sha"]
        env = read_json(run / "env.json")
        for key in ("git_commit", "python", "torch", "ray", "deepspeed", "devices", "started"):
            assert key in env
        train_steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                       if r["kind"] == "train"]
        assert train_steps == list(range(2, 13, 2))
        assert_keys_in_schema(run)
    metrics = load_metrics(sweep)
    assert {"train", "eval"} <= set(metrics["kind"])
    assert (tmp_path / "reports" / "itest" / "index.html").is_file()
    # the sweep timeline: every phase on record, in order, and the training phases cover the
    # worker's own wall time (two clocks: the worker's timer and the timestamps) within 5%
    from harness.report import load_report_data
    from harness.report.timeline import PHASES, run_timelines

    timelines = run_timelines(load_report_data(sweep))
    assert len(timelines) == 2
    for line in timelines:
        assert list(line.phases) == [p for p in PHASES if p in line.phases] and min(line.phases.values()) >= 0
        summary = read_json(sweep / "runs" / line.run_id / "summary.json")
        covered = line.phases["training"] + line.phases["eval"] + line.phases["checkpoint"]
        assert abs(covered - summary["attempt_wall_s"][-1]) <= 0.05 * summary["attempt_wall_s"][-1] + 0.05, \
            (line, summary["attempt_wall_s"])
        assert abs(sum(v for k, v in line.phases.items() if k != "queued") - line.total_s) < 1e-6
    assert "per-run overhead (median of 2)" in proc.stdout
    assert (tmp_path / "reports" / "itest" / "timeline.png").is_file()

    # the same job file again: nothing reruns, no record changes
    before = {p: p.read_bytes() for p in sweep.glob("runs/*/*") if p.is_file() and p.suffix in (".json", ".jsonl")}
    again = submit(job, tmp_path, relative=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 already done, 0 to run" in again.stdout
    assert "Ray dashboard" not in again.stdout  # no cluster was even started
    after = {p: p.read_bytes() for p in before}
    assert before == after

    # a sweep recorded before runs analysed themselves: harness.analyze finds Ray Train's
    # latest checkpoint (step 8 of 12) of each 2-worker run and analyses it
    for run_id in df["run_id"]:
        (sweep / "runs" / run_id / "analysis.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "harness.analyze", "results/itest"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("analysed: from the checkpoint at step 8 of 12") == 2, proc.stdout
    kinds = {read_json(sweep / "runs" / r / "analysis.json")["kind"] for r in df["run_id"]}
    assert kinds == {"deq", "layers"}
    assert "at step 8 of 12" in (tmp_path / "reports" / "itest" / "index.html").read_text()
