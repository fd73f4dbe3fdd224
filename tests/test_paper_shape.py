"""jobs/paper_shape.yaml (make paper), shrunk with --set and run as a user runs it (slow).

From a user's folder (jobs/ copied, the synthetic corpus generated where the job file says),
through ``python -m harness.submit jobs/paper_shape.yaml --set ...``: fewer steps and seeds,
every case kept (so every strategy runs, and the short memory runs keep their three depths
each). ``--smoke`` would shrink each depth series to one model and train nothing, so the
claims it cannot judge would read "not measured here"; this run is the check that the job
file, as shipped, gives every claim of the report a verdict. Its figures mean nothing (100
steps); the committed reports/paper_shape/ is the full run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from sweep_helpers import REPO, read_json

pytestmark = pytest.mark.slow

STEPS = 100


def _shrink(job: dict) -> list[str]:
    """--set items: 100 steps for every trained case, two seeds on the headline pair, one elsewhere."""
    sets = [f"train.steps={STEPS}", "train.eval_interval=50", "train.eval_batches=2", "train.test_batches=2",
            "train.checkpoint_interval=0", "train.log_interval=10"]
    pairs = {p["model"] for p in job["compare"]["pairs"]} | {p["baseline"] for p in job["compare"]["pairs"]}
    for i, case in enumerate(job["grid"]["cases"]):
        if "seeds" in case:
            keep = [0, 1] if case["label"] in pairs and case.get("task", "lm") == "lm" else [0]
            sets.append(f"grid.cases.{i}.seeds={keep}")
        if case.get("train.steps", 0) > STEPS:
            sets.append(f"grid.cases.{i}.train.steps={STEPS}")
    return sets


def test_paper_shape_gives_every_claim_a_verdict_from_a_user_folder(tmp_path):
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    job = yaml.safe_load((tmp_path / "jobs" / "paper_shape.yaml").read_text())
    args = ["jobs/paper_shape.yaml", "--num-cpus", "2"]
    for item in _shrink(job):
        args += ["--set", item]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "harness.submit", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / job["data"]["data_dir"] / "synthetic.json").exists()  # data.synthetic, where it says
    assert read_json(tmp_path / job["data"]["data_dir"] / "synthetic.json")["spec"]["vocab_size"] == 256
    page = (tmp_path / "reports" / "paper_shape" / "README.md").read_text()
    claims = page.split("### Claims check")[1].split("\n## ")[0].replace("\\_", "_")
    rows = [line for line in claims.splitlines() if line.startswith("| ") and not line.startswith(("| claim", "| :--"))]
    assert len(rows) == 8, claims
    assert not any("| not measured here |" in row for row in rows), claims
    assert "lm_deq vs lm_weight_tied10" in claims  # the headline pair, named, judged
    for strategy in ("deq", "neural_ode"):  # the depth series judged with a fitted growth
        row = next(r for r in rows if "flat in depth" in r and (strategy == "deq") == ("DEQ" in r))
        assert "linear fit over 3 depths" in row, row
    assert "### Time to quality" in page
    meta = read_json(tmp_path / "results" / "paper_shape" / "sweep.json")
    assert meta["compare"]["target_ppl"] == job["compare"]["target_ppl"]
