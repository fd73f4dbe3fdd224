"""The submit command's bookkeeping without a cluster: which runs it would run, --fresh."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.sweep.config import expand_grid, load_job_file
from harness.records import SweepStore
from harness.sweep.submit import open_sweep, runs_to_do

QUICKSTART = Path(__file__).resolve().parent.parent / "jobs" / "quickstart.yaml"


def _sweep(tmp_path):
    job, text = load_job_file(QUICKSTART)
    runs = expand_grid(job, QUICKSTART)
    store = open_sweep(tmp_path, job, text, runs, str(QUICKSTART), fresh=False)
    return job, text, runs, store


def test_open_sweep_writes_meta_job_and_pending_runs(tmp_path):
    job, text, runs, store = _sweep(tmp_path)
    assert store.read_meta()["run_ids"] == [r.run_id for r in runs]
    # the report's rules, fixed before any run: the job file's compare block (docs/verdicts.md)
    compare = store.read_meta()["compare"]
    assert compare["ppl_margin_pct"] == 2.0 and compare["pairs"][0] == {"model": "lm_deq12",
                                                                      "baseline": "lm_weight_tied12"}
    assert store.job_text() == text
    assert {store.run(r.run_id).read_status()["state"] for r in runs} == {"pending"}
    assert store.run(runs[0].run_id).read_spec() == runs[0].to_json()


def test_finished_runs_skipped_failed_only_with_retry(tmp_path):
    _, _, runs, store = _sweep(tmp_path)
    store.run(runs[0].run_id).set_status("finished")
    store.run(runs[1].run_id).set_status("failed", reason="Diverged: non-finite loss (nan) at step 3")
    store.run(runs[2].run_id).set_status("running", step=8)  # interrupted: resumes
    todo = [r.run_id for r in runs_to_do(store, runs, retry_failed=False)]
    assert runs[0].run_id not in todo and runs[1].run_id not in todo
    assert runs[2].run_id in todo and len(todo) == len(runs) - 2
    retry = [r.run_id for r in runs_to_do(store, runs, retry_failed=True)]
    assert runs[1].run_id in retry and runs[0].run_id not in retry


def test_reopening_keeps_states_and_fresh_moves_the_old_folder_aside(tmp_path):
    job, text, runs, store = _sweep(tmp_path)
    store.run(runs[0].run_id).set_status("finished")
    again = open_sweep(tmp_path, job, text, runs, str(QUICKSTART), fresh=False)
    assert again.run(runs[0].run_id).read_status()["state"] == "finished"
    fresh = open_sweep(tmp_path, job, text, runs, str(QUICKSTART), fresh=True)
    assert fresh.dir == store.dir
    assert fresh.run(runs[0].run_id).read_status()["state"] == "pending"
    archived = [p for p in tmp_path.iterdir() if p.name.startswith(f"{job.name}-")]
    assert len(archived) == 1
    assert SweepStore(archived[0]).run(runs[0].run_id).read_status()["state"] == "finished"


def test_one_writer_per_sweep_folder(tmp_path):
    """A live process holding a sweep folder's writer lock refuses a second submit into it in one
    line naming the folder and the holder's pid; once the holder is gone (killed: no clean-up)
    the lock is free again."""
    import json
    import signal
    import subprocess
    import sys

    from harness.records.writer import SweepBusy, hold_sweep

    results = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from harness.records.writer import hold_sweep; "
        f"lock = hold_sweep(Path({str(results)!r}), 'demo'); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepBusy) as busy:
            hold_sweep(results, "demo")
        line = str(busy.value)
        assert "\n" not in line and str(results / "demo") in line and f"process {holder.pid} on " in line
        assert json.loads((results / ".demo.writer.json").read_text())["pid"] == holder.pid
        hold_sweep(results, "other")  # another sweep folder is not blocked
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = hold_sweep(results, "demo")  # a dead holder never blocks
    assert json.loads((results / ".demo.writer.json").read_text())["pid"] == os.getpid()
    lock.release()


_IMPORT_CHECK = """
import sys
from pathlib import Path
from harness.sweep.submit import _import_driver_modules
_import_driver_modules()
repo = Path(sys.argv[1])
names = set()
for root in ("harness", "models", "solvers"):
    for path in (repo / root).rglob("*.py"):
        parts = path.relative_to(repo).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":
            names.add(".".join(parts))
print(sorted(n for n in names if n not in sys.modules))
"""


@pytest.mark.parametrize("in_ray_job", [True, False])
def test_a_ray_job_driver_imports_every_module_before_ray_starts(in_ray_job):
    """Under `ray job submit --working-dir` Ray may remove and unpack the driver's folder
    again as nodes on one machine install the job (see _import_driver_modules): the driver
    imports every project module first, found on disk here independently of its own walk.
    Outside a Ray job there is no such race, and nothing is imported for it."""
    import ast
    import json
    import subprocess
    import sys

    repo = QUICKSTART.parent.parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_JOB_CONFIG_JSON_ENV_VAR"}
    if in_ray_job:
        env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps(
            {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})
    out = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, str(repo)], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    missing = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    if in_ray_job:
        assert missing == []
    else:
        assert "harness.records.writer" in missing and "models.ode" in missing
