"""Fault injection for the reliability tests (never active unless asked for).

``DEQBENCH_FAULTS`` holds a JSON list of faults; each names a run (its name or id), a rank,
a step and a kind:

- ``kill``: the worker process kills itself with SIGKILL before that step (first attempt
  only: a marker file in the run folder records that it fired), as a lost node would;
  ``delay_s`` makes it wait that long first (its peers block in the next collective), which
  gives Ray Train time to commit the checkpoints reported before;
- ``nan``: that step's loss becomes NaN on that rank, as a diverging model's would; the
  NaN then spreads through the gradient all-reduce like a real divergence;
- ``slow``: every step from that one on waits ``delay_s`` first (a slow node; the cluster
  tests use it to keep a run going while they take a node away).

Example: ``DEQBENCH_FAULTS='[{"run": "lm_deq12", "kind": "kill", "rank": 1, "step": 7}]'``.
Job files cannot name faults; only the environment of the submitting process can.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from harness.records import RunRecord
from harness.run.spec import RunSpec

KINDS = ("kill", "nan", "slow")


def faults_for(spec: RunSpec, rank: int) -> list[dict]:
    raw = os.environ.get("DEQBENCH_FAULTS")
    if not raw:
        return []
    faults = json.loads(raw)
    return [f for f in faults if f.get("run") in (spec.run_id, spec.name)
            and int(f.get("rank", 0)) == rank and f.get("kind") in KINDS]


def before_step(faults: list[dict], step: int, run_dir: Path) -> bool:
    """Fire the faults due at ``step``; returns True when the loss must become NaN."""
    poison = False
    for fault in faults:
        if fault["kind"] == "slow" and step >= int(fault["step"]):
            time.sleep(float(fault.get("delay_s", 0)))
            continue
        if int(fault["step"]) != step:
            continue
        if fault["kind"] == "nan":
            poison = True
        elif fault["kind"] == "kill":
            if RunRecord(run_dir).claim_marker(f".fault-kill-r{fault.get('rank', 0)}-s{step}"):
                time.sleep(float(fault.get("delay_s", 0)))
                os.kill(os.getpid(), signal.SIGKILL)
    return poison
