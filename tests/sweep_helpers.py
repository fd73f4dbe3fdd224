"""Helpers for tests that run real sweeps: tiny job files and a CLI runner.

The sweeps run through the real command (``python -m harness.submit``) in a subprocess,
with a real embedded Ray and real DeepSpeed workers, so these tests are marked ``slow``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

# Every summary figure a finished run must carry (harness.records.schema), finite;
# tests/test_schema.py checks that the schema lists them all.
COMMON_METRICS = ("activation_bytes", "static_mem_bytes", "step_time_s", "step_time_p10_s", "step_time_p90_s",
                  "fwd_time_s", "bwd_time_s", "tokens_per_s", "infer_time_s", "nfe", "wall_time_s", "train_loss",
                  "params_total", "params_embedding", "params_non_embedding")
LM_METRICS = ("val_loss", "val_ppl", "test_loss", "test_ppl", "optimal_ppl")
COPY_METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")
DEQ_METRICS = ("fwd_nstep_mean", "fwd_nstep_max", "fwd_abs_res_mean", "fwd_abs_res_max",
               "fwd_rel_res_mean", "fwd_rel_res_max", "bwd_nstep_mean", "bwd_nstep_max",
               "bwd_res_mean", "bwd_res_max", "solver_time_s", "spectral_radius")


def assert_keys_in_schema(run_dir: Path) -> None:
    """Every key a run recorded (summary.json, each metrics.jsonl line) is listed in the schema
    for that record: a producer that invents a name fails here."""
    from harness.records import RunRecord, schema

    rec = RunRecord(run_dir)
    problems = {}
    if rec.read_summary() is not None:
        problems["summary.json"] = schema.unknown_keys("summary", rec.read_summary())
    for line in rec.read_metrics():
        problems.setdefault(f"metrics.jsonl {line.get('kind')}", []).extend(
            schema.unknown_keys(line.get("kind"), line))
    problems = {where: sorted(set(keys)) for where, keys in problems.items() if keys}
    assert not problems, f"keys not in harness.records.schema: {problems}"


def tiny_job(tmp: Path, name: str, depths: list[dict], *, task: str = "lm", steps: int = 12,
             workers: int = 2, extra_train: dict | None = None, resources: dict | None = None,
             model: dict | None = None) -> Path:
    """Write a tiny job file (d_model 16, seq 16, batch 4) and return its path."""
    data_dir = REPO / "data" / "synthetic"  # generated on first use, shared by the tests
    job = {
        "name": name,
        "task": task,
        "data": {"dataset": "synthetic" if task == "lm" else "copy_memory", "data_dir": str(data_dir),
                 "seq_len": 16, "blank_len": 6},
        "model": {"cell": "transformer", "d_model": 16, "n_head": 2, "d_inner": 32, "dropout": 0.0,
                  "depth": depths[0], **(model or {})},
        "grid": {"model.depth": depths},
        "train": {"steps": steps, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "eval_interval": 6,
                  "eval_batches": 2, "test_batches": 2, "log_interval": 2, "checkpoint_interval": 4,
                  "measure_warmup": 2, "measure_steps": 3, **(extra_train or {})},
        "resources": {"workers": workers, "cpus_per_worker": 1, "max_failures": 1, **(resources or {})},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def submit(job: Path, tmp: Path, *args: str, env: dict | None = None, timeout: float = 600,
           wait: bool = True, relative: bool = False):
    """Run the real CLI; returns CompletedProcess (or the Popen when ``wait`` is False).

    ``relative``: run from ``tmp`` with relative results/reports folders, as a user would.
    """
    root = Path(".") if relative else tmp
    cmd = [sys.executable, "-m", "harness.submit", str(job), "--results", str(root / "results"),
           "--reports", str(root / "reports"), "--num-cpus", "2", *args]
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
                "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                       str(REPO / ".cache" / "torch_extensions")),
                **(env or {})}
    if not wait:  # a sweep a test signals (Ctrl-C is SIGINT to the whole group)
        return subprocess.Popen(cmd, cwd=tmp if relative else REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=_default_sigint)
    return subprocess.run(cmd, cwd=tmp if relative else REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _default_sigint() -> None:
    """SIGINT as a terminal's process would have it. A suite started in the background by a
    non-interactive shell (``make test &``) inherits SIGINT *ignored*, and a Python started
    with SIGINT ignored never raises KeyboardInterrupt: the Ctrl-C test would see a sweep
    that ignores Ctrl-C, which is the shell's doing, not the sweep's."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def poll_json(path: Path) -> dict:
    """A record read while a sweep writes it: {} until it exists (the sweep writes sweep.json
    before each run's status.json; every JSON record is replaced atomically, never torn)."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return {}


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_step(sweep: Path, name: str | None = None) -> int:
    """The step on record of the run called ``name`` (the first run if None); 0 until it starts."""
    for path in sorted(sweep.glob("runs/*/status.json")):
        if name is None or (read_json(path.parent / "spec.json") or {}).get("name") == name:
            return int((read_json(path) or {}).get("step") or 0)
    return 0


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
