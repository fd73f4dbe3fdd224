"""Watching a live sweep through the Ray dashboard's HTTP API, and what it listens on.

A tiny sweep runs on an embedded Ray (dashboard on 127.0.0.1). While it runs, the test
checks that the dashboard lists the sweep's lanes (the Ray Train runs that train its runs one
after another, named ``<sweep>-lane<k>-<id>``), the sweep's Ray job by
the sweep's name (``deqbench <sweep>``, the Jobs page's Name column), that the project's
metrics (``ray_deqbench_*``, exported with ``ray.util.metrics``) reach the metrics endpoint the
dashboard advertises for Prometheus, and that every listening socket of the sweep's process
tree is on loopback.
"""
from __future__ import annotations

import json
import re
import time
import urllib.request

import psutil
import pytest

from sweep_helpers import read_json, submit, tiny_job

pytestmark = pytest.mark.slow
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return resp.read()


def _listening(root_pid: int) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket in the process tree."""
    try:
        procs = [psutil.Process(root_pid)] + psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = {p.pid: p for p in procs}
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = pids[conn.pid].name()
            except psutil.NoSuchProcess:
                name = "?"
            out.append((conn.laddr.ip, conn.laddr.port, name))
    return out


def test_dashboard_shows_runs_and_metrics_and_only_loopback(tmp_path):
    job = tiny_job(tmp_path, "dash", [{"kind": "weight_tied", "layers": 2}], steps=400,
                   extra_train={"log_interval": 1, "eval_interval": 0, "checkpoint_interval": 0},
                   workers=2)
    proc = submit(job, tmp_path, wait=False)
    sweep = tmp_path / "results" / "dash"
    url, run_ids, seen_runs, metric_line, sockets, job_meta = None, [], False, None, [], None
    deadline = time.time() + 300
    try:
        for line in proc.stdout:  # the CLI prints the dashboard URL first
            m = re.search(r"Ray dashboard: (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url and url.startswith("http://127.0.0.1:"), url
        while time.time() < deadline and not (seen_runs and metric_line and job_meta):
            time.sleep(2)
            if not run_ids and (sweep / "sweep.json").exists():
                run_ids = read_json(sweep / "sweep.json")["run_ids"]
            if proc.poll() is not None:
                break
            try:
                # Ray Train V2 runs (the "/api/train/v2/runs" route serves Train V1)
                runs = json.loads(_get(f"{url}/api/train/v2/runs/v1"))
                names = json.dumps(runs)
                seen_runs = '"dash-lane1-' in names
                if job_meta is None:  # the Jobs page's rows: the driver's job named after the sweep
                    jobs = json.loads(_get(f"{url}/api/jobs/"))
                    job_meta = next((j.get("metadata") for j in jobs
                                     if (j.get("metadata") or {}).get("job_name") == "deqbench dash"), None)
                targets = json.loads(_get(f"{url}/api/prometheus/sd"))
                for group in targets:
                    for target in group.get("targets", []):
                        text = _get(f"http://{target}/metrics").decode()
                        for metric in text.splitlines():
                            # Ray prefixes application metrics with "ray_"
                            if metric.startswith("ray_deqbench_loss{") and run_ids and run_ids[0] in metric:
                                metric_line = metric
            except (OSError, ValueError):
                continue
            sockets = _listening(proc.pid) or sockets
    finally:
        sockets = _listening(proc.pid) or sockets
        proc.kill()
        import os
        import signal

        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    assert seen_runs, "the dashboard never listed the sweep's lane"
    assert job_meta and job_meta["deqbench_results"] == str(tmp_path / "results"), job_meta
    assert metric_line and 'strategy="weight_tied"' in metric_line, metric_line
    assert sockets, "no listening socket found (cannot inspect the process tree?)"
    exposed = [s for s in sockets if s[0] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"
