"""Every shipped job file, run the way a user runs it (slow).

From a fresh working folder that is not the repository, with the tiny real-layout corpora of
``tests/data/`` copied to exactly the relative paths the job files and README name
(``data/ptb``, ``data/wikitext-103``; the synthetic corpus is generated into
``data/synthetic``, or where a job file says), through the real CLI (``python -m harness.submit jobs/<file>.yaml
--smoke``, default relative ``results/`` and ``reports/``): every grid point that still
differs once shrunk (one seed: every strategy, task and option runs; a depth sweep's depths
and the small/medium sizes shrink to one model each, ``harness.sweep.smoke``). Each must exit 0 with every run finished and the
report written. This is the test that catches a path resolved in the wrong folder: Ray
Train runs every worker in its own working folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.sweep.smoke import TRAIN as SMOKE_TRAIN
from sweep_helpers import REPO, read_json

pytestmark = pytest.mark.slow

# the relative folders the shipped job files name, and the tiny corpus that goes there
CORPORA = {"data/ptb": REPO / "tests" / "data" / "ptb",
           "data/wikitext-103": REPO / "tests" / "data" / "wikitext103"}
# jobs/paper_shape.yaml runs shrunk with --set in tests/test_paper_shape.py instead (its smoke run
# would collapse the depth series its claims need)
SHIPPED = ("quickstart", "ptb_sweep", "wt103_sweep", "copy_memory", "depth_scaling")

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder: jobs/ copied from the repo, the tiny corpora at the documented paths."""
    root = tmp_path_factory.mktemp("user")
    shutil.copytree(REPO / "jobs", root / "jobs")
    for rel, src in CORPORA.items():
        shutil.copytree(src, root / rel)
    return root


def run_cli(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "harness.submit", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_job_runs_from_a_user_folder(workdir, name):
    job_file = f"jobs/{name}.yaml"
    job = yaml.safe_load((workdir / job_file).read_text())
    proc = run_cli(workdir, job_file, "--smoke", "--num-cpus", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert f"smoke run: {job['name']}-smoke:" in proc.stdout

    sweep = workdir / "results" / f"{job['name']}-smoke"  # the default, relative to the folder it ran in
    assert not (workdir / "results" / job["name"]).exists()  # never mixed with the real sweep's records
    meta = read_json(sweep / "sweep.json")
    assert meta["smoke"] and meta["smoke"][0] == f"name={job['name']}-smoke" and meta["overrides"] == []
    runs = meta["run_ids"]
    assert runs
    for run_id in runs:
        rec = sweep / "runs" / run_id
        status = read_json(rec / "status.json")
        assert status["state"] == "finished", (run_id, status)
        spec = read_json(rec / "spec.json")
        assert spec["smoke"] is True
        data_dir = spec["data"].get("data_dir")
        if spec["task"] == "lm":  # stored absolute, inside the user's folder, where the corpus is
            assert Path(data_dir).is_absolute() and Path(data_dir).is_relative_to(workdir), data_dir
            assert (Path(data_dir) / "wiki.train.tokens").exists() or any(Path(data_dir).glob("*.txt"))
        summary = read_json(rec / "summary.json")
        assert summary["steps"] == SMOKE_TRAIN["steps"]
        assert summary["wall_time_s"] > 0 and summary["attempts"] == 1
    page = (workdir / "reports" / f"{job['name']}-smoke" / "README.md").read_text()
    assert "Smoke run (harness.submit --smoke): sizes shrunk, figures not comparable" in page
    if job["data"]["dataset"] == "synthetic":  # generated once, where the job file says
        assert (workdir / job["data"]["data_dir"] / "synthetic.json").exists()
    lines = [json.loads(x) for x in (sweep / "runs" / runs[0] / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r.get("kind") == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == SMOKE_TRAIN["steps"]
