"""A sweep's timeline: where each run's time on the clock went, from its records.

Phases of a run's last attempt, each from two timestamps on record:

- queued: the submission (``sweep.json`` ``submitted_at``) to the run's task starting
  (``status.json`` ``task_started``);
- start-up: the task starting to the workers beginning (``worker_started_at``): Ray
  Train's controller, the worker group, the process group;
- set-up: the worker beginning to its first training step (``training_started_at``):
  data, model, DeepSpeed engine, resume, memory measurement;
- training, eval, checkpoint: the first step to the end of the final evaluation
  (``training_ended_at``), split by the worker's own eval and checkpoint times;
- wrap-up: the end of the final evaluation to the task ending (``task_ended``): the last
  message written, Ray Train shutting the run down (its placement-group cleaner, whose stop
  alone took 12 s or more per run, is told to stop within 2 s:
  ``harness.sweep.launch.shorten_cleaner_stop``).

The harness's fixed overhead of a run is everything but training, eval and checkpoint
(:func:`overhead_summary`, printed by ``harness.submit`` at the end of a sweep).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.report.data import SweepData, _first

PHASES = ("queued", "start-up", "set-up", "training", "eval", "checkpoint", "wrap-up")


@dataclass(frozen=True)
class RunTimeline:
    run_id: str
    name: str
    start: float            # seconds since the epoch at which the first drawn phase begins
    phases: dict[str, float]  # phase -> seconds, in PHASES order (queued only when known)
    total_s: float          # task_started -> task_ended, on the driver's clock

    @property
    def overhead_s(self) -> float:
        return sum(v for k, v in self.phases.items() if k not in ("queued", "training", "eval", "checkpoint"))


def run_timelines(data: SweepData) -> list[RunTimeline]:
    """One timeline per run that has every timestamp on record (finished runs of this code)."""
    submitted = data.meta.get("submitted_at")
    out = []
    for _, run in data.runs.iterrows():
        status = data.statuses.get(run["run_id"], {})
        stamps = [status.get("task_started"), *(_first(run.get(k)) for k in
                                                  ("worker_started_at", "training_started_at", "training_ended_at")),
                  status.get("task_ended")]
        if any(s is None for s in stamps):
            continue
        task, worker, first_step, trained, ended = (float(s) for s in stamps)
        eval_s = float(_first(run.get("eval_time_s")) or 0.0)
        ckpt_s = float(_first(run.get("checkpoint_time_s")) or 0.0)
        phases: dict[str, float] = {}
        if submitted is not None and float(submitted) <= task:  # started by this submission
            phases["queued"] = task - float(submitted)
        phases.update({"start-up": worker - task, "set-up": first_step - worker,
                       "training": max(trained - first_step - eval_s - ckpt_s, 0.0), "eval": eval_s,
                       "checkpoint": ckpt_s, "wrap-up": ended - trained})
        start = float(submitted) if "queued" in phases else task
        out.append(RunTimeline(str(run["run_id"]), str(run["name"]), start, phases, ended - task))
    return out


def overhead_summary(timelines: list[RunTimeline]) -> str | None:
    """One line: the median per-run overhead and its phases, or None without timelines."""
    if not timelines:
        return None
    med = {p: statistics.median(t.phases.get(p, 0.0) for t in timelines) for p in ("start-up", "set-up", "wrap-up")}
    overhead = statistics.median(t.overhead_s for t in timelines)
    useful = statistics.median(t.phases["training"] + t.phases["eval"] + t.phases["checkpoint"] for t in timelines)
    return (f"per-run overhead (median of {len(timelines)}): {overhead:.1f} s "
            f"(start-up {med['start-up']:.1f} s, set-up {med['set-up']:.1f} s, wrap-up {med['wrap-up']:.1f} s) "
            f"against {useful:.1f} s of training, eval and checkpoints")
