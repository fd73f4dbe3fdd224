"""The command line: ``python -m harness.submit jobs/<sweep>.yaml``.

1. Read and check the job file and every run it expands to (structure, models, DeepSpeed,
   data, output folders): any problem is one line on stderr and exit code 2, before
   anything runs.
2. Start an embedded local Ray (every port on 127.0.0.1, the dashboard URL printed), or
   join a cluster with ``--address`` / ``RAY_ADDRESS`` (also how it runs as the entrypoint
   of ``ray job submit``). Check that the cluster can hold a run's workers.
3. Skip runs already finished; rerun failed ones only with ``--retry-failed``; resume
   interrupted ones from their last checkpoint. ``--fresh`` moves the old sweep folder
   aside (``results/<sweep>-<timestamp>``) and starts over.
4. Each run is one Ray Train ``TorchTrainer`` (N workers, gloo on CPU, nccl on CUDA),
   started from a Ray task; Ray's scheduler runs as many at once as resources allow.
5. Write the comparison report (``reports/<sweep>/``).

Exit codes: 0 every run finished, 1 some runs failed (each with its reason on record),
2 the input was rejected before anything ran.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path

from harness.config import JobFileError, expand_grid, load_job_file
from harness.results import SweepStore, atomic_write_text, utc_now

LOOPBACK = "127.0.0.1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.submit",
                                 description="Run a deqbench sweep on Ray and write its records and report.")
    ap.add_argument("job_file", help="a job file, e.g. jobs/quickstart.yaml")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                    help="join this Ray cluster (default: $RAY_ADDRESS, else start an embedded one)")
    ap.add_argument("--dry-run", action="store_true", help="print the expanded runs and resources, then exit")
    ap.add_argument("--fresh", action="store_true", help="move the old sweep folder aside and start over")
    ap.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    ap.add_argument("--results", default="results", help="results root (default: results/)")
    ap.add_argument("--reports", default="reports", help="reports root (default: reports/)")
    ap.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    ap.add_argument("--num-cpus", type=float, default=None, help="CPUs of the embedded Ray (default: all)")
    ap.add_argument("--dashboard-host", default=LOOPBACK,
                    help="address the embedded dashboard listens on (default 127.0.0.1; anything else "
                         "exposes a service that runs code for whoever reaches it)")
    ap.add_argument("--dashboard-port", type=int, default=8265)
    return ap.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[object, str, list[dict]]:
    """Everything that can reject the input, in order; raises JobFileError.

    With ``--dry-run`` the runs are printed before the data check, so the expansion of a
    sweep can be read on a machine that does not hold its corpus.
    """
    from harness import checks

    job, text = load_job_file(args.job_file)
    runs = expand_grid(job, args.job_file)
    counts = checks.check_models(runs, args.job_file)
    checks.check_deepspeed(runs, args.job_file)
    if args.dry_run:
        print_runs(runs, counts)
    checks.check_data(runs, args.job_file)
    return job, text, runs


def print_runs(runs: list[dict], counts: dict[str, dict], out=sys.stdout) -> None:
    print(f"{len(runs)} runs:", file=out)
    for r in runs:
        res = r["resources"]
        n = counts.get(r["run_id"]) or {}
        params = f"{n['non_embedding'] / 1e6:.3g}M non-embedding params" if n else "params unknown"
        depth = ", ".join(f"{k}={v}" for k, v in r["model"].get("depth", {}).items())
        print(f"  {r['run_id']}  {r['name']:<24} {r['task']}/{r['data']['dataset']} "
              f"cell={r['model'].get('cell')} d_model={r['model'].get('d_model')} [{depth}] {params}; "
              f"{r['train']['steps']} steps; {res['workers']} workers x ({res['cpus_per_worker']} CPU, "
              f"{res['gpus_per_worker']} GPU)", file=out)


def open_sweep(results_root: Path, job, text: str, runs: list[dict], job_file: str, fresh: bool) -> SweepStore:
    from harness.envinfo import environment

    sweep_dir = (results_root / job.name).absolute()  # Ray's actors run in other folders
    if fresh and sweep_dir.exists():
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        archived = sweep_dir.with_name(f"{job.name}-{stamp}")
        sweep_dir.rename(archived)
        print(f"--fresh: the previous results were moved to {archived}")
    store = SweepStore(sweep_dir)
    meta = store.read_meta()
    store.write_meta({"name": job.name, "job_file": str(job_file), "created": meta.get("created") or utc_now(),
                      "submitted": utc_now(), "env": environment(),
                      "run_ids": [r["run_id"] for r in runs]})
    atomic_write_text(sweep_dir / "job.yaml", text)
    for spec in runs:
        rec = store.run(spec["run_id"])
        rec.write_spec(spec)
        if not (rec.dir / "status.json").exists():
            rec.set_status("pending")
    return store


def start_ray(args: argparse.Namespace):
    """Join ``--address`` or start an embedded single-node Ray bound to 127.0.0.1."""
    # Decide the auth mode explicitly (Ray 2.59+ would turn token auth on for a local ray.init()
    # and then refuse later CLI calls). Clusters with token auth: export RAY_AUTH_MODE=token and
    # RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) before submitting; see the README, "Security".
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # the dashboard's Train view (runs listed under their run ids) needs Ray Train's state
    # actor; a cluster joined with --address must have been started with this set too
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    # Ray Train's controller collects reports on this period, and every ray.train.report waits
    # for it: the 2 s default made small runs spend most of their time waiting (measured: a
    # 30-step run with a report per step took 81 s at 2 s and 21 s at 0.2 s).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if not args.address:
        # Ray's single-machine mode: the node address is 127.0.0.1 and every Ray server
        # (GCS, raylet, workers, dashboard agent) listens on loopback only. Must be set
        # before Ray is first imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    port = args.dashboard_port
    if not args.address and not _port_free(args.dashboard_host, port):
        port = _free_port(args.dashboard_host)
        print(f"note: port {args.dashboard_port} is taken (another Ray?); the dashboard uses {port}")
    if args.address:
        ctx = ray.init(address=args.address, log_to_driver=False)
        print(f"joined Ray cluster at {args.address}")
    else:
        if args.dashboard_host != LOOPBACK:
            print(f"warning: the Ray dashboard will listen on {args.dashboard_host}:{port}; "
                  "it has no authentication and runs code for whoever reaches it", file=sys.stderr)
        ctx = ray.init(num_cpus=args.num_cpus, include_dashboard=True, dashboard_host=args.dashboard_host,
                       dashboard_port=port, log_to_driver=False,
                       configure_logging=True, logging_level="WARNING")
    url = getattr(ctx, "dashboard_url", None)
    if url:
        print(f"Ray dashboard: http://{url}", flush=True)
    return ray


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def runs_to_do(store: SweepStore, runs: list[dict], retry_failed: bool) -> list[dict]:
    todo = []
    for spec in runs:
        state = store.run(spec["run_id"]).read_status().get("state")
        if state == "finished" or (state == "failed" and not retry_failed):
            continue
        todo.append(spec)
    return todo


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from harness.dsops import name_cpu_accelerator

    name_cpu_accelerator()
    try:
        job, text, runs = prepare(args)
        if args.dry_run:
            return 0
        from harness.checks import check_output_dir

        check_output_dir(Path(args.results), "results", args.job_file)
        if not args.no_report:
            check_output_dir(Path(args.reports), "reports", args.job_file)
    except JobFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

    sweep_dir = Path(args.results) / job.name
    todo = runs if args.fresh else runs_to_do(SweepStore(sweep_dir), runs, args.retry_failed)
    ray = None
    if todo:
        from harness.dsops import prebuild_cpu_ops

        prebuild_cpu_ops()
        ray = start_ray(args)
        try:
            from harness.checks import check_resources

            check_resources(todo, ray.nodes(), args.job_file)
        except JobFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            ray.shutdown()
            return 2
    # from here on the sweep is accepted: its folder is written
    store = open_sweep(Path(args.results), job, text, runs, args.job_file, args.fresh)
    print(f"sweep {job.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, "
          f"{len(todo)} to run -> {store.dir}")
    if ray is not None:
        from harness.launch import run_all

        try:
            run_all(ray, store, todo, single_node=not args.address)
        finally:
            ray.shutdown()
    failed = [r for r in runs if store.run(r["run_id"]).read_status().get("state") != "finished"]
    if not args.no_report:
        try:
            from harness.report import write_report

            out = write_report(store.dir, Path(args.reports) / job.name)
            print(f"report: {out}")
        except Exception as exc:  # a report problem never hides the runs' outcome
            print(f"warning: the report could not be written: {type(exc).__name__}: {exc}", file=sys.stderr)
    for r in failed:
        st = store.run(r["run_id"]).read_status()
        print(f"failed: {r['name']} ({r['run_id']}): {st.get('reason')}", file=sys.stderr)
    print(f"done: {len(runs) - len(failed)} finished, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
