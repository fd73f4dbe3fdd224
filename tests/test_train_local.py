"""One run without Ray (`python -m harness.train`): same function, same records, world size 1."""
from __future__ import annotations

import os
import subprocess
import sys

from harness.results import RunRecord
from sweep_helpers import COMMON_METRICS, DEQ_METRICS, LM_METRICS, REPO, finite, tiny_job


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
