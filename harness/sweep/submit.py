"""The command line: ``python -m harness.submit jobs/<sweep>.yaml``.

1. Read and check the job file and every run it expands to (structure, models, DeepSpeed,
   data, output folders): any problem is one line on stderr and exit code 2, before
   anything runs.
2. Start an embedded local Ray (every port on 127.0.0.1, the dashboard URL printed), or
   join a cluster with ``--address`` / ``RAY_ADDRESS`` (also how it runs as the entrypoint
   of ``ray job submit``). Check that the cluster can hold a run's workers.
3. Skip runs already finished; rerun failed ones only with ``--retry-failed``; resume
   interrupted ones from their last checkpoint. ``--fresh`` moves the old sweep folder
   aside (``results/<sweep>-<timestamp>``) and starts over. ``--smoke`` runs the grid shrunk
   to seconds into the sweep ``<sweep>-smoke`` (``harness.sweep.smoke``).
4. Each run is one Ray Train data-parallel trainer (N workers, gloo on CPU, nccl on CUDA),
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
import time
import tempfile
from pathlib import Path

from harness.sweep.config import JobFileError, expand_grid, load_job_file
from harness.records import SweepStore, utc_now
from harness.run.spec import RunSpec

LOOPBACK = "127.0.0.1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.submit",
                                 description="Run a deqbench sweep on Ray and write its records and report.")
    ap.add_argument("job_file", help="a job file, e.g. jobs/quickstart.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a job-file value (dotted key as written, YAML value), repeatable: "
                         "--set train.steps=100 --set grid.seed=[0]")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                    help="join this Ray cluster ('auto': the one on this node; default: $RAY_ADDRESS, "
                         "which `ray job submit` sets; without either, an embedded Ray is started, "
                         "whatever else runs on the machine)")
    ap.add_argument("--dry-run", action="store_true", help="print the expanded runs and resources, then exit")
    ap.add_argument("--fresh", action="store_true", help="move the old sweep folder aside and start over")
    ap.add_argument("--smoke", action="store_true",
                    help="every grid point shrunk to run in seconds (tiny sizes, a few steps, one seed), through "
                         "the real path, into the sweep <name>-smoke; with --dry-run, print it")
    ap.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    ap.add_argument("--results", default=None,
                    help="results root (default: results/ in the current folder; under `ray job submit` "
                         "an absolute path on storage every node shares is required)")
    ap.add_argument("--reports", default=None, help="reports root (default: reports/; absolute under a Ray job)")
    ap.add_argument("--node-local-results", action="store_true",
                    help="under `ray job submit`: accept a relative or default --results/--reports "
                         "(they then live in the job's unpacked working folder on one node)")
    ap.add_argument("--git-commit", default=None,
                    help="the commit to record (default: $DEQBENCH_GIT_COMMIT, else read from git here); "
                         "for `ray job submit`, whose upload has no .git: --git-commit $(git rev-parse HEAD)")
    ap.add_argument("--git-dirty", default=None, choices=("yes", "no"),
                    help="whether the tree had uncommitted changes (default: $DEQBENCH_GIT_DIRTY, else git)")
    ap.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    ap.add_argument("--num-cpus", type=float, default=None, help="CPUs of the embedded Ray (default: all)")
    ap.add_argument("--dashboard-host", default=LOOPBACK,
                    help="address the embedded dashboard listens on (default 127.0.0.1; anything else "
                         "exposes a service that runs code for whoever reaches it)")
    ap.add_argument("--dashboard-port", type=int, default=8265)
    return ap.parse_args(argv)


RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a job's entrypoint


def resolve_outputs(args: argparse.Namespace) -> None:
    """Make ``--results``/``--reports`` absolute, from the folder the CLI runs in.

    Under ``ray job submit`` that folder is Ray's unpacked copy of ``--working-dir`` on one
    node, removed with the job: a relative or default output folder there is refused in one
    line unless ``--node-local-results`` says that is what the user wants.
    """
    under_job = RAY_JOB_ENV in os.environ
    for what in ("results", "reports"):
        value = getattr(args, what)
        if what == "reports" and args.no_report:
            value = value or what
        elif under_job and not args.node_local_results and (value is None or not Path(value).expanduser().is_absolute()):
            given = f"--{what} {value}" if value else f"no --{what}"
            raise JobFileError(args.job_file, "", f"{given} under `ray job submit`: relative folders resolve inside "
                                                  f"the job's unpacked working folder on one node; pass --{what} "
                                                  f"/an/absolute/path on storage every node shares (or "
                                                  f"--node-local-results to keep them there)")
        setattr(args, what, Path(value or what).expanduser().absolute())


def record_git(args: argparse.Namespace) -> None:
    """Fix the commit and dirty flag where the user submits; workers read them from the environment."""
    from harness.run.envinfo import GIT_COMMIT_ENV, GIT_DIRTY_ENV, git_state

    if args.git_commit:
        os.environ[GIT_COMMIT_ENV] = args.git_commit
    if args.git_dirty:
        os.environ[GIT_DIRTY_ENV] = args.git_dirty
    commit, dirty = git_state()
    os.environ.setdefault(GIT_COMMIT_ENV, commit or "")
    os.environ.setdefault(GIT_DIRTY_ENV, "" if dirty is None else ("yes" if dirty else "no"))
    if not commit and RAY_JOB_ENV in os.environ:
        print("note: no git commit is known (Ray's job upload leaves .git out); pass "
              "--git-commit $(git rev-parse HEAD) to record it", file=sys.stderr)


def prepare(args: argparse.Namespace) -> tuple[object, str, list[RunSpec]]:
    """Everything that can reject the input, in order; raises JobFileError.

    With ``--dry-run`` the runs are printed before the data check, so the expansion of a
    sweep can be read on a machine that does not hold its corpus.
    """
    from harness.sweep import checks

    overrides = list(getattr(args, "overrides", ()))
    if getattr(args, "smoke", False):
        args.smoke_sets = smoke_sets(args.job_file, overrides, listed=args.dry_run)
        overrides += args.smoke_sets
    job, text = load_job_file(args.job_file, overrides)
    runs = expand_grid(job, args.job_file, base_dir=Path.cwd(), smoke=bool(getattr(args, "smoke", False)))
    counts = checks.check_models(runs, args.job_file)
    checks.check_deepspeed(runs, args.job_file)
    if args.dry_run:
        print_runs(runs, counts)
    checks.check_data(runs, args.job_file)
    return job, text, runs


def smoke_sets(job_file: str | Path, overrides: list[str], listed: bool = False) -> list[str]:
    """The ``--set`` items that make the job file (with the user's overrides) a smoke run; says
    so in a line (``listed``: then every item, one per line)."""
    import torch

    from harness.sweep.config import read_raw_job
    from harness.sweep.smoke import smoke_overrides

    raw, _ = read_raw_job(job_file, overrides)
    sets = smoke_overrides(raw, cuda=torch.cuda.is_available())
    cut = any(s.startswith(("grid.cases=", "grid.model.depth=", "grid.seed=")) for s in sets)
    widths = any(s.split("=")[0].split(".")[-1] in ("d_model", "d_inner") for s in sets)
    print(f"smoke run: {raw.get('name')}-smoke: {'widths, ' if widths else ''}steps, depths and workers shrunk"
          f"{', grid cut to one seed and the points that still differ' if cut else ''}"
          f"; figures not comparable; {len(sets)} --set items, kept in sweep.json"
          + ("" if listed else " (--dry-run --smoke lists them)"))
    for item in sets if listed else ():
        print(f"  --set {item}")
    return sets


def prepare_data(runs: list[RunSpec], file: str | Path) -> None:
    """Generate each synthetic corpus once, into its ``data_dir``, before any run starts.

    The workers then only read it (a lock makes a concurrent submit wait, not regenerate).
    """
    from harness.data import DataError
    from harness.data.synthetic_corpus import ensure_synthetic_corpus
    from harness.sweep.checks import synthetic_specs

    for data_dir, spec in sorted(synthetic_specs(runs, file).items()):
        try:
            if ensure_synthetic_corpus(data_dir, spec):
                print(f"generated the synthetic corpus in {data_dir}")
        except (DataError, OSError) as exc:
            raise JobFileError(file, "data.data_dir", f"{data_dir}: {exc}".splitlines()[0]) from None


def _flat_items(block: dict, prefix: str = "") -> list[str]:
    """``key=value`` of a mapping, nested mappings as dotted keys (``solver_options.memory=8``)."""
    out: list[str] = []
    for key, value in block.items():
        if isinstance(value, dict):
            out += _flat_items(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def print_runs(runs: list[RunSpec], counts: dict[str, dict], out=sys.stdout) -> None:
    print(f"{len(runs)} runs:", file=out)
    for r in runs:
        res = r.resources
        n = counts.get(r.run_id) or {}
        params = f"{n['non_embedding'] / 1e6:.3g}M non-embedding params" if n else "params unknown"
        depth = ", ".join(_flat_items(r.model.get("depth", {})))
        print(f"  {r.run_id}  {r.name:<24} {r.task}/{r.data.dataset} "
              f"cell={r.model.get('cell')} d_model={r.model.get('d_model')} [{depth}] {params}; "
              f"{r.train.steps} steps; {res.workers} workers x ({res.cpus_per_worker:g} CPU, "
              f"{res.gpus_per_worker:g} GPU)", file=out)


def open_sweep(results_root: Path, job, text: str, runs: list[RunSpec], job_file: str, fresh: bool,
               overrides: list[str] | tuple[str, ...] = (), smoke: list[str] | None = None) -> SweepStore:
    from harness.run.envinfo import environment

    store = SweepStore((results_root / job.name).absolute())  # Ray's actors run in other folders
    if fresh:
        archived = store.archive(_dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        if archived is not None:
            print(f"--fresh: the previous results were moved to {archived}")
    store.reserve_space()  # a full disk later still takes the failed run's verdict
    meta = store.read_meta()
    store.write_meta({"name": job.name, "job_file": str(Path(job_file).absolute()),
                      "created": meta.get("created") or utc_now(), "submitted": utc_now(),
                      "submitted_at": time.time(),
                      "overrides": list(overrides), "env": environment(),
                      "compare": job.compare.model_dump(mode="json"),  # fixed before the data
                      **({"smoke": list(smoke)} if smoke is not None else {}),  # --smoke: what it shrank
                      "run_ids": [r.run_id for r in runs]})
    store.write_job_text(text)
    for spec in runs:
        rec = store.run(spec.run_id)
        rec.write_spec(spec.to_json())
        if not (rec.dir / "status.json").exists():
            rec.set_status("pending")
    return store


def _import_driver_modules() -> None:
    """Under ``ray job submit --working-dir``, import every module of the project before Ray starts.

    There the driver runs from Ray's unpacked copy of the working directory, and Ray installs
    the job's runtime env on every node as the job's driver connects (``eager_install``).
    Nodes that share one machine share that folder, and each installs with
    ``overwrite=True``: it removes the folder and unpacks it again. A module first imported
    in that window is not found (seen in tests/test_cluster.py: "No module named
    'harness.sweep.launch'" about one job in two, and later 'harness.records.writer', a
    module added after a hand-kept list of them). Modules already imported do not care, so
    the driver imports them all here: every module of ``harness``, ``models`` and
    ``solvers``, found by walking the packages, so that no new module can be missed. That
    costs a few seconds, so it is done only where the race exists: in a Ray job whose
    runtime env has a working_dir."""
    import importlib
    import json
    import pkgutil

    try:
        job_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    except (ValueError, AttributeError):
        job_env = {}
    if not job_env.get("working_dir"):
        return
    for root in ("harness", "models", "solvers"):
        package = importlib.import_module(root)
        for info in pkgutil.walk_packages(package.__path__, f"{root}."):
            if not info.name.endswith(".__main__"):
                importlib.import_module(info.name)


def start_ray(args: argparse.Namespace):
    """Join ``--address`` or start an embedded single-node Ray bound to 127.0.0.1.

    Without an address the embedded Ray is always a new one (Ray's ``address="local"``): a
    cluster already running on this machine is never joined silently. Joining prints the
    cluster's size and its dashboard.
    """
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
    if not args.address or _loopback_address(args.address):
        # Ray's single-machine mode: the node address is 127.0.0.1 and every Ray server
        # (GCS, raylet, workers, dashboard agent) listens on loopback only. Must be set
        # before Ray is first imported. A cluster joined at a loopback address (nodes
        # started on 127.0.0.1) is one machine's too: without this the driver would
        # rewrite 127.0.0.1 to the machine's network address and never reach it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    port = args.dashboard_port
    if not args.address and not _port_free(args.dashboard_host, port):
        port = _free_port(args.dashboard_host)
        print(f"note: port {args.dashboard_port} is taken (another Ray?); the dashboard uses {port}")
    # the dashboard's Jobs page names the driver's job after the sweep (its Name column reads
    # metadata["job_name"]); the rest of the metadata says where its records go
    from ray.job_config import JobConfig

    meta = {"job_name": f"deqbench {getattr(args, 'sweep_name', '') or Path(args.job_file).stem}",
            "deqbench_job_file": str(Path(args.job_file).absolute()),
            "deqbench_results": str(Path(args.results).absolute()),
            "deqbench_commit": str(os.environ.get("DEQBENCH_GIT_COMMIT") or "")}
    job_config = JobConfig(metadata=meta)
    if args.address:
        ctx = ray.init(address=args.address, log_to_driver=False, job_config=job_config)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        print(f"joined Ray cluster at {args.address} ({ctx.address_info.get('gcs_address', '?')}): "
              f"{len(nodes)} nodes, {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU", flush=True)
    else:
        if args.dashboard_host != LOOPBACK:
            print(f"warning: the Ray dashboard will listen on {args.dashboard_host}:{port}; "
                  "it has no authentication and runs code for whoever reaches it", file=sys.stderr)
        ctx = ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=True, job_config=job_config,
                       dashboard_host=args.dashboard_host,
                       dashboard_port=port, log_to_driver=False,
                       configure_logging=True, logging_level="WARNING")
    url = getattr(ctx, "dashboard_url", None)
    if url:
        print(f"Ray dashboard: http://{url}", flush=True)
    return ray


def _loopback_address(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``ray://...``, or ``auto``) names this machine's loopback."""
    import ipaddress

    if address == "auto":  # $RAY_ADDRESS, else the file where `ray start` records its address
        # (read here, not through Ray: this must be decided before Ray is imported)
        address = os.environ.get("RAY_ADDRESS") or ""
        if not address or address == "auto":
            record = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"
            try:
                address = record.read_text().strip()
            except OSError:
                return False
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def runs_to_do(store: SweepStore, runs: list[RunSpec], retry_failed: bool) -> list[dict]:
    todo = []
    for spec in runs:
        state = store.run(spec.run_id).read_status().get("state")
        if state == "finished" or (state == "failed" and not retry_failed):
            continue
        todo.append(spec)
    return todo


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from harness.run.dsops import name_cpu_accelerator

    name_cpu_accelerator()
    try:
        job, text, runs = prepare(args)
        from solvers._native import choice as native_choice

        try:  # read by every solve in every worker: a bad value fails here, not in each of them
            native_choice()
        except ValueError as exc:
            raise JobFileError(args.job_file, "", str(exc)) from None
        if args.dry_run:
            return 0
        from harness.sweep.checks import check_output_dir

        if args.address and args.num_cpus is not None:
            raise JobFileError(args.job_file, "", "--num-cpus sizes the embedded Ray only; a joined cluster "
                                                  "(--address or $RAY_ADDRESS) has the CPUs its nodes were started with")
        resolve_outputs(args)
        check_output_dir(args.results, "results", args.job_file)
        if not args.no_report:
            check_output_dir(args.reports, "reports", args.job_file)
    except JobFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    record_git(args)

    sweep_dir = args.results / job.name
    todo = runs if args.fresh else runs_to_do(SweepStore(sweep_dir), runs, args.retry_failed)
    ray = None
    if todo:
        from harness.run.dsops import prebuild_cpu_ops

        prebuild_cpu_ops()
        _import_driver_modules()
        args.sweep_name = job.name
        ray = start_ray(args)
        from harness.sweep.launch import install_stop_signals

        install_stop_signals()  # SIGTERM / SIGHUP from here on stop the sweep as Ctrl-C does
        try:
            from harness.sweep.checks import check_resources

            check_resources(todo, ray.nodes(), args.job_file)
            prepare_data(todo, args.job_file)  # the last check: it writes the synthetic corpus
        except JobFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            ray.shutdown()
            return 2
    from harness.records.writer import SweepBusy, hold_sweep

    try:
        writer = hold_sweep(args.results.absolute(), job.name)  # noqa: F841 (held until the process ends)
    except SweepBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        if ray is not None:
            ray.shutdown()
        return 2
    # from here on the sweep is accepted: its folder is written
    store = open_sweep(args.results, job, text, runs, args.job_file, args.fresh, args.overrides,
                       smoke=getattr(args, "smoke_sets", None))
    print(f"sweep {job.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, "
          f"{len(todo)} to run -> {store.dir}")
    if ray is not None:
        from harness.sweep.launch import run_all

        from harness.sweep.launch import interrupt_exit_code, interrupt_name

        try:
            run_all(ray, store, todo, single_node=not args.address)
        except KeyboardInterrupt:
            print(f"interrupted ({interrupt_name()}): the runs in flight were stopped and set "
                  "back to pending; resubmit to resume them from their last checkpoints", file=sys.stderr)
            return interrupt_exit_code()
        finally:
            ray.shutdown()
    failed = [r for r in runs if store.run(r.run_id).read_status().get("state") != "finished"]
    if not args.no_report:
        try:
            from harness.report import write_report

            from harness.report import load_report_data
            from harness.report.timeline import overhead_summary, run_timelines

            data = load_report_data(store.dir)  # read once: the report and the overhead line
            out = write_report(store.dir, args.reports / job.name, data=data)
            print(f"report: {out}")
            overhead = overhead_summary(run_timelines(data))
            if overhead:
                print(overhead)
        except Exception as exc:  # a report problem never hides the runs' outcome
            print(f"warning: the report could not be written: {type(exc).__name__}: {exc}", file=sys.stderr)
    for r in failed:
        st = store.run(r.run_id).read_status()
        print(f"failed: {r.name} ({r.run_id}): {st.get('reason')}", file=sys.stderr)
    print(f"done: {len(runs) - len(failed)} finished, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
