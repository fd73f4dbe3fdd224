"""Multi-node Ray on one machine (slow): a real cluster of several Ray nodes on 127.0.0.1.

``ray.cluster_utils.Cluster`` starts a head node (no CPUs, so every worker lands on a worker
node) and 1-CPU worker nodes, all bound to 127.0.0.1; the tests stop them through the Cluster
object only (never ``ray stop``). ``harness.submit --address`` joins it as on a real cluster:
the TCP rendezvous, node placement, node loss and the Ray Jobs API are all real. What one
machine cannot show: separate filesystems (here every node sees the same results and data
folders) and real network partitions.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweep_helpers import REPO, read_json, run_step, tiny_job, wait_for

pytestmark = pytest.mark.slow

ENV = {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
       "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cluster():
    """A head (0 CPU, dashboard on 127.0.0.1) plus worker nodes added by each test."""
    from ray.cluster_utils import Cluster

    os.environ.update({k: v for k, v in ENV.items() if k == "RAY_AUTH_MODE"})
    port = _free_port()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": port})
    c.dashboard_port = port
    try:
        yield c
    finally:
        c.shutdown()


def add_worker(cluster, cpus: int = 1):
    return cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1")


def node_ids(cluster) -> set[str]:
    nodes = [cluster.head_node, *cluster.worker_nodes]
    return {n.node_id for n in nodes}


def submit_cmd(job: Path, tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "harness.submit", str(job), "--results", str(tmp / "results"),
            "--reports", str(tmp / "reports"), *args]


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 600, wait: bool = True):
    full = {**os.environ, **ENV, **(env or {})}
    full.pop("RAY_ADDRESS", None)
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout)


def train_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["kind"] == "train"]


def test_runs_span_nodes_two_at_once_and_resubmission_skips(cluster, tmp_path):
    for _ in range(4):
        add_worker(cluster)
    job = tiny_job(tmp_path, "span", [{"kind": "weight_tied", "layers": 2},
                                      {"kind": "deq", "max_iter": 4, "backward_max_iter": 4}], steps=8)
    t0 = time.monotonic()
    proc = run(submit_cmd(job, tmp_path, "--address", cluster.address))
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "joined Ray cluster" in out and "5 nodes" in out
    sweep = tmp_path / "results" / "span"
    meta = read_json(sweep / "sweep.json")
    placed: list[set[str]] = []
    spans = []
    for run_id in meta["run_ids"]:
        summary = read_json(sweep / "runs" / run_id / "summary.json")
        status = read_json(sweep / "runs" / run_id / "status.json")
        assert status["state"] == "finished"
        nodes = set(summary["rank_nodes"])
        assert len(nodes) == 2 and nodes <= node_ids(cluster), summary["rank_nodes"]  # one worker per node
        assert len(set(summary["rank_param_sha"])) == 1  # the replicas stayed identical across nodes
        placed.append(nodes)
        spans.append((status["started"], status["ended"]))
    assert placed[0].isdisjoint(placed[1])  # both at once, on all four worker nodes
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # their lives overlap
    print(f"two 2-worker runs on four nodes: {took:.0f} s")

    again = run(submit_cmd(job, tmp_path, "--address", cluster.address))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 already done, 0 to run" in again.stdout


def test_node_lost_and_back_resumes_without_gap(cluster, tmp_path):
    workers = [add_worker(cluster), add_worker(cluster)]
    job = tiny_job(tmp_path, "lost", [{"kind": "weight_tied", "layers": 2}], steps=24,
                   extra_train={"checkpoint_interval": 4, "log_interval": 2},
                   resources={"max_failures": 2, "node_timeout_s": 120})
    faults = [{"run": "weight_tied2", "kind": "slow", "rank": 0, "step": 1, "delay_s": 0.4}]
    proc = run(submit_cmd(job, tmp_path, "--address", cluster.address),
               env={"DEQBENCH_FAULTS": json.dumps(faults)}, wait=False)
    sweep = tmp_path / "results" / "lost"
    try:
        wait_for(lambda: run_step(sweep) >= 10, 300, "the run to pass step 10")
        t_lost = time.monotonic()
        cluster.remove_node(workers[1])
        time.sleep(8)
        add_worker(cluster)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    run_dir = next((sweep / "runs").iterdir())
    status = read_json(run_dir / "status.json")
    summary = read_json(run_dir / "summary.json")
    assert status["state"] == "finished" and status["attempt"] >= 2, status
    steps = train_steps(run_dir)
    assert steps == list(range(2, 25, 2)), steps  # no gap, no duplicate
    assert summary["attempts"] == status["attempt"] == len(summary["attempt_wall_s"])
    assert summary["wall_time_s"] == pytest.approx(sum(summary["attempt_wall_s"]))
    assert summary["wall_time_s"] > summary["attempt_wall_s"][-1]  # earlier attempts count too
    print(f"node lost and back: resumed; attempts {summary['attempt_wall_s']}, "
          f"{time.monotonic() - t_lost:.0f} s from the loss to the end")


def test_node_lost_for_good_fails_after_timeout_and_sweep_goes_on(cluster, tmp_path):
    workers = [add_worker(cluster), add_worker(cluster)]
    job = tiny_job(tmp_path, "gone", [{"kind": "weight_tied", "layers": 2}], steps=30,
                   extra_train={"checkpoint_interval": 4},
                   resources={"max_failures": 1, "node_timeout_s": 15})
    spec = yaml.safe_load(job.read_text())
    spec["grid"] = {"cases": [{"label": "wide", "resources.workers": 2},
                              {"label": "narrow", "resources.workers": 1, "train.steps": 8}]}
    job.write_text(yaml.safe_dump(spec))
    faults = [{"run": "wide", "kind": "slow", "rank": 0, "step": 1, "delay_s": 0.4}]
    proc = run(submit_cmd(job, tmp_path, "--address", cluster.address),
               env={"DEQBENCH_FAULTS": json.dumps(faults)}, wait=False)
    sweep = tmp_path / "results" / "gone"
    try:
        wait_for(lambda: run_step(sweep, "wide") >= 6, 300, "the wide run to pass step 6")
        cluster.remove_node(workers[1])
        t_lost = time.monotonic()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    waited = time.monotonic() - t_lost
    assert proc.returncode == 1, out[-4000:]  # some runs failed, the sweep itself finished
    by_name = {}
    for run_dir in (sweep / "runs").iterdir():
        by_name[read_json(run_dir / "spec.json")["name"]] = read_json(run_dir / "status.json")
    assert by_name["wide"]["state"] == "failed"
    reason = by_name["wide"]["reason"]
    assert reason.startswith("node lost") and "15 s" in reason and "node_timeout_s" in reason, reason
    assert by_name["narrow"]["state"] == "finished", by_name["narrow"]
    assert waited < 15 + 240, waited  # bounded: the timeout plus the narrow run, not forever
    print(f"node lost for good: recorded failed, sweep went on; {waited:.0f} s from the loss to the end")


def test_without_address_never_joins_a_running_cluster(cluster, tmp_path):
    add_worker(cluster)
    job = tiny_job(tmp_path, "alone", [{"kind": "weight_tied", "layers": 2}], steps=4, workers=1,
                   extra_train={"measure_steps": 2, "measure_warmup": 1, "eval_interval": 0,
                                "checkpoint_interval": 0})
    proc = run(submit_cmd(job, tmp_path, "--num-cpus", "1", "--no-report"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "joined" not in out
    assert f":{cluster.dashboard_port}" not in out.split("Ray dashboard:")[1].splitlines()[0]
    run_dir = next((tmp_path / "results" / "alone" / "runs").iterdir())
    ran_on = set(read_json(run_dir / "summary.json")["rank_nodes"])
    assert ran_on.isdisjoint(node_ids(cluster)), ran_on  # its own embedded Ray, not the cluster
    # --num-cpus with a joined cluster is refused in one line, before anything runs
    bad = run(submit_cmd(job, tmp_path, "--address", cluster.address, "--num-cpus", "1"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--num-cpus" in bad.stderr, bad.stderr


@pytest.fixture
def ray_start_cluster(tmp_path):
    """A cluster made the way an operator makes one: ``ray start --head`` and ``ray start
    --address`` on 127.0.0.1, each with ``--block`` so the test owns the processes and stops
    them by PID (SIGTERM to each ``ray start``, which stops its node), never ``ray stop``."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port, dash = _free_port(), _free_port()
    env = {**os.environ, **ENV}
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    procs = [subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "0",
                               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), *common],
                              env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)]
    try:
        from ray.job_submission import JobSubmissionClient

        url = f"http://127.0.0.1:{dash}"

        def head_up() -> bool:
            try:
                JobSubmissionClient(url).list_jobs()
                return True
            except Exception:  # noqa: BLE001 (not up yet)
                return False
        wait_for(head_up, 120, "the head node's Jobs API")
        procs.append(subprocess.Popen([ray_cli, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2",
                                       *common], env=env, stdout=open(tmp_path / "worker.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        yield url
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def test_ray_job_submit_records_where_asked_with_the_commit(ray_start_cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    job = tiny_job(tmp_path, "viajob", [{"kind": "weight_tied", "layers": 2}], steps=6)
    client = JobSubmissionClient(ray_start_cluster)
    # what `ray job submit --working-dir .` uploads from the repository root
    runtime_env = {"working_dir": str(REPO), "env_vars": dict(ENV),
                   "excludes": [".venv", ".git", ".cache", ".hypothesis", ".pytest_cache", "data", "results",
                                "reports", "tests"]}

    def wait_job(job_id: str) -> JobStatus:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = client.get_job_status(job_id)
            if status.is_terminal():
                return status
            time.sleep(1)
        raise AssertionError("the Ray job did not end")

    # a relative (default) --results under a Ray job is refused in one line
    t0 = time.monotonic()
    refused = client.submit_job(entrypoint=f"{sys.executable} -m harness.submit {job} --address auto",
                                runtime_env=runtime_env)
    assert wait_job(refused) == JobStatus.FAILED
    logs = client.get_job_logs(refused)
    assert "under `ray job submit`" in logs and "--results" in logs and "Traceback" not in logs, logs[-2000:]

    results, reports = tmp_path / "shared" / "results", tmp_path / "shared" / "reports"
    entry = (f"{sys.executable} -m harness.submit {job} --address auto --results {results} "
             f"--reports {reports} --git-commit 0123abc --git-dirty no")
    job_id = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    status = wait_job(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "joined Ray cluster" in logs
    sweep = results / "viajob"
    meta = read_json(sweep / "sweep.json")
    assert meta["env"]["git_commit"] == "0123abc" and meta["env"]["git_dirty"] is False
    for run_id in meta["run_ids"]:
        rec = sweep / "runs" / run_id
        assert read_json(rec / "status.json")["state"] == "finished"
        env = read_json(rec / "env.json")  # written by rank 0, inside the job's uploaded copy
        assert env["git_commit"] == "0123abc" and env["git_dirty"] is False
    assert (reports / "viajob" / "index.html").exists()
    print(f"ray job submit (a refusal, then a 1-run sweep): {time.monotonic() - t0:.0f} s")
