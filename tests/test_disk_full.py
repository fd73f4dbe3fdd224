"""The results disk fills up mid-run (slow; needs root to mount a small tmpfs as the results
folder, as on CI): the run is recorded failed with "no space left on device", the records
already written stay readable, the finished run is untouched and the report still renders."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.records import RunRecord
from harness.records.store import RESERVE_NAME
from sweep_helpers import read_json, run_step, submit, tiny_job, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MiB tmpfs (harness.submit wants 200 MiB free at the start)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> int:
    """Write zeros into ``folder`` until the disk refuses; returns the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as fh:
        block = b"\0" * (1 << 20)
        while True:
            try:
                written += fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_a_full_results_disk_fails_the_run_and_keeps_every_record(tmp_path, small_disk):
    job = tiny_job(tmp_path, "full", [{"kind": "weight_tied", "layers": 2}], workers=1,
                   extra_train={"eval_interval": 0, "checkpoint_interval": 0, "log_interval": 1})
    raw = yaml.safe_load(job.read_text())
    raw["grid"] = {"cases": [{"label": "short", "train.steps": 12},
                             {"label": "long", "train.steps": 5000}]}
    raw["resources"]["max_concurrent_runs"] = 1
    job.write_text(yaml.safe_dump(raw, sort_keys=False))
    results = small_disk / "results"
    proc = submit(job, tmp_path, "--results", str(results), wait=False)
    sweep = results / "full"
    try:
        wait_for(lambda: run_step(sweep, "long") >= 5, 300, "the long run to reach step 5")
        short = next(p for p in (sweep / "runs").iterdir() if read_json(p / "spec.json")["name"] == "short")
        assert read_json(short / "status.json")["state"] == "finished"
        before = _files(short)
        assert _fill(small_disk) > 0
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    long = next(p for p in (sweep / "runs").iterdir() if read_json(p / "spec.json")["name"] == "long")
    status = read_json(long / "status.json")
    assert status["state"] == "failed" and status["reason"].startswith("no space left on device"), status
    # every line of what was written parses (no half line left by the failed append)
    lines = (long / "metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["kind"] in ("train", "eval") for line in lines)
    assert RunRecord(long).read_metrics()[-1]["step"] >= 5
    assert _files(short) == before  # the finished run is untouched
    html = (tmp_path / "reports" / "full" / "index.html").read_text()
    assert "no space left on device" in html
    assert not (sweep / RESERVE_NAME).exists()  # the reserve was spent on the verdict
