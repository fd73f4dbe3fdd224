"""Every shipped job file, run the way a user runs it (slow).

From a fresh working folder that is not the repository, with the tiny real-layout corpora of
``tests/data/`` copied to exactly the relative paths the job files and README name
(``data/ptb``, ``data/wikitext-103``; the synthetic corpus is generated into
``data/synthetic``), through the real CLI (``python -m harness.submit jobs/<file>.yaml``,
default relative ``results/`` and ``reports/``), with ``--set`` shrinking sizes and steps and
keeping every grid point that still differs once shrunk (one seed: every strategy, task and
option runs; a depth sweep's depths and the small/medium sizes shrink to one model each). Each must exit 0 with every run finished and the
report written. This is the test that catches a path resolved in the wrong folder: Ray
Train runs every worker in its own working folder.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweep_helpers import REPO, read_json

pytestmark = pytest.mark.slow

# the relative folders the shipped job files name, and the tiny corpus that goes there
CORPORA = {"data/ptb": REPO / "tests" / "data" / "ptb",
           "data/wikitext-103": REPO / "tests" / "data" / "wikitext103"}
SHIPPED = ("quickstart", "ptb_sweep", "wt103_sweep", "copy_memory", "depth_scaling")

TRAIN = {"steps": 6, "batch_size": 2, "eval_interval": 3, "checkpoint_interval": 3, "log_interval": 2,
         "eval_batches": 2, "test_batches": 2, "measure_warmup": 1, "measure_steps": 2, "warmup_steps": 1}
MODEL = {"d_model": 16, "n_head": 2, "d_inner": 32, "max_rel_distance": 32}
FIXED = {"pretrain_steps": 2, "pretrain_depth": 1}
SCALED = ("layers", "max_iter", "backward_max_iter", "steps")


def _small(v: int) -> int:
    """Shrink a depth monotonically, so the grid points of a depth sweep stay distinct."""
    return v if v <= 4 else 4 + math.ceil(math.log2(v / 4))


def _depth_sets(prefix: str, depth: dict) -> list[str]:
    sets = [f"{prefix}.{k}={_small(int(depth[k]))}" for k in SCALED if k in depth]
    return sets + [f"{prefix}.{k}={v}" for k, v in FIXED.items() if k in depth]


def shrink(job: dict) -> list[str]:
    """``--set`` items that make a job file tiny while keeping every grid point (one seed)."""
    sets = [f"train.{k}={v}" for k, v in TRAIN.items()]
    sets += [f"model.{k}={v}" for k, v in MODEL.items() if k in job["model"]]
    sets += _depth_sets("model.depth", job["model"]["depth"])
    if "adaptive_softmax" in job["model"]:
        sets += ["model.adaptive_softmax.cutoffs=[50, 100, 200]", "model.adaptive_softmax.div_value=2.0"]
    data = job["data"]
    sets += [s for key, s in (("seq_len", "data.seq_len=16"), ("blank_len", "data.blank_len=6")) if key in data]
    res = job.get("resources", {})
    sets += ["resources.gpus_per_worker=0", "resources.cpus_per_worker=1"]
    # one worker per run (two runs at once on 2 CPUs); the 8-worker WikiText-103 sweep keeps
    # 2, so data parallelism with ZeRO-1 and the adaptive softmax is exercised as shipped
    sets.append(f"resources.workers={2 if res.get('workers', 1) > 2 else 1}")
    grid = job.get("grid", {})
    if "seed" in grid:
        sets.append("grid.seed=[0]")
    depths = _distinct(grid.get("model.depth", []), lambda d: d)
    if len(depths) < len(grid.get("model.depth", [])):
        sets.append(f"grid.model.depth={_flow(depths)}")
    for i, depth in enumerate(depths):
        sets += _depth_sets(f"grid.model.depth.{i}", depth)
    cases = _distinct(grid.get("cases", []), _case_model)
    if len(cases) < len(grid.get("cases", [])):
        sets.append(f"grid.cases={_flow(cases)}")
    for i, case in enumerate(cases):
        sets += [f"grid.cases.{i}.model.{k}={v}" for k, v in MODEL.items() if f"model.{k}" in case]
        if isinstance(case.get("model.depth"), dict):
            sets += _depth_sets(f"grid.cases.{i}.model.depth", case["model.depth"])
    return sets


def _flow(value: list) -> str:
    """A ``--set`` value as one line of YAML (JSON would write 1e-12, which YAML reads as text)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def _without_sizes(depth: dict) -> dict:
    return {k: v for k, v in depth.items() if k not in SCALED and k not in ("tol", "backward_tol", "segments")}


def _case_model(case: dict) -> dict:
    """What a case trains once shrunk: its depth block without sizes, and its other keys but the
    label and the widths the shrink sets anyway."""
    depth = case.get("model.depth")
    return {**{k: v for k, v in case.items() if k != "label" and k != "model.depth"
               and k.removeprefix("model.") not in MODEL},
            "model.depth": _without_sizes(depth) if isinstance(depth, dict) else depth}


def _distinct(points: list, key) -> list:
    """The grid points that still differ once shrunk (the first of each): a depth sweep's
    depths and a sweep's model sizes shrink to one model, and running it once proves as much
    as running it four times (every strategy, task and option still runs)."""
    seen, out = set(), []
    for point in points:
        k = json.dumps(key(_without_sizes(point) if isinstance(point, dict) and "kind" in point else point),
                       sort_keys=True)
        if k not in seen:
            seen.add(k)
            out.append(point)
    return out


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
    sets = [a for s in shrink(job) for a in ("--set", s)]
    proc = run_cli(workdir, job_file, *sets, "--num-cpus", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]

    sweep = workdir / "results" / job["name"]  # the default, relative to the folder it ran in
    meta = read_json(sweep / "sweep.json")
    assert meta["overrides"] == shrink(job)
    runs = meta["run_ids"]
    assert runs
    for run_id in runs:
        rec = sweep / "runs" / run_id
        status = read_json(rec / "status.json")
        assert status["state"] == "finished", (run_id, status)
        spec = read_json(rec / "spec.json")
        data_dir = spec["data"].get("data_dir")
        if spec["task"] == "lm":  # stored absolute, inside the user's folder, where the corpus is
            assert Path(data_dir).is_absolute() and Path(data_dir).is_relative_to(workdir), data_dir
            assert (Path(data_dir) / "wiki.train.tokens").exists() or any(Path(data_dir).glob("*.txt"))
        summary = read_json(rec / "summary.json")
        assert summary["steps"] == TRAIN["steps"]
        assert summary["wall_time_s"] > 0 and summary["attempts"] == 1
    assert (workdir / "reports" / job["name"] / "index.html").exists()
    if job["data"]["dataset"] == "synthetic":  # generated once, where the job file says
        assert (workdir / "data" / "synthetic" / "synthetic.json").exists()
    lines = [json.loads(x) for x in (sweep / "runs" / runs[0] / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r.get("kind") == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == TRAIN["steps"]
