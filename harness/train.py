"""``python -m harness.train``: one run of a job file in this process, without Ray (world size 1).

For debugging, profiling, or machines where Ray is not installed::

    python -m harness.train jobs/quickstart.yaml --list              # the runs it holds
    python -m harness.train jobs/quickstart.yaml --run deq12_s0      # name or run id

The run goes through the same checks as ``harness.submit`` (``harness.sweep``) and writes
the same records (docs/records.md) under ``--results``; the training itself is
``harness.run.worker.run_training``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from harness.records import RecordsFull
from harness.run.session import LocalSession
from harness.run.worker import run_training


def main(argv: list[str] | None = None) -> int:
    """Run one run of a job file in this process, without Ray (world size 1)."""
    from harness.sweep import checks
    from harness.sweep.config import JobFileError, expand_grid, load_job_file
    from harness.records import SweepStore
    from harness.sweep.submit import prepare_data

    ap = argparse.ArgumentParser(prog="python -m harness.train", description=main.__doc__)
    ap.add_argument("job_file")
    ap.add_argument("--run", help="run name or run id (see --list)")
    ap.add_argument("--list", action="store_true", help="list the runs of the job file and exit")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a job-file value, as harness.submit --set")
    ap.add_argument("--results", default="results", help="results root (default: results/)")
    args = ap.parse_args(argv)
    from harness.run.dsops import name_cpu_accelerator

    name_cpu_accelerator()
    try:
        job, text = load_job_file(args.job_file, args.overrides)
        runs = expand_grid(job, args.job_file, base_dir=Path.cwd())
    except JobFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list or not args.run:
        for r in runs:
            print(f"{r.run_id}  {r.name}")
        return 0 if args.list else 2
    matches = [r for r in runs if args.run in (r.run_id, r.name)]
    if not matches:
        print(f"error: {args.job_file}: no run named {args.run!r}; see --list", file=sys.stderr)
        return 2
    try:  # the same checks as harness.submit, for this run
        checks.check_models(matches[:1], args.job_file)
        checks.check_deepspeed(matches[:1], args.job_file)
        checks.check_data(matches[:1], args.job_file)
        checks.check_output_dir(Path(args.results), "results", args.job_file)
        prepare_data(matches[:1], args.job_file)
    except JobFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = matches[0]
    spec = spec.with_resources(workers=1)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    store = SweepStore(Path(args.results).absolute() / job.name)
    store.reserve_space()
    record = store.run(spec.run_id)
    record.write_spec(spec.to_json())
    record.set_status("running", reason=None, rank=None)
    # a one-process group through a file: DeepSpeed needs one, and no port is opened
    with tempfile.TemporaryDirectory(prefix="deqbench-local-") as tmp:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.FileStore(str(Path(tmp) / "store"), 1), rank=0,
                                world_size=1)
        try:
            summary = run_training(spec, record.dir, LocalSession(record))
        except RecordsFull as exc:  # recorded failed already
            print(f"error: {spec.name} ({spec.run_id}): {exc.strerror}", file=sys.stderr)
            return 1
        finally:
            dist.destroy_process_group()
    print(f"{spec.name} ({spec.run_id}): {record.read_status()['state']} -> {record.dir}")
    return 0 if summary is not None else 1


if __name__ == "__main__":
    sys.exit(main())
