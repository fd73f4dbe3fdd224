"""The equilibrium analysis of a recorded run, computed afterwards from its checkpoint.

Runs analyse their trained cell when they finish (``analysis.json``, written with the
summary). Sweeps recorded before that existed, or runs whose analysis was lost, can be
analysed from their newest checkpoint: the run's spec rebuilds the model and its data,
the checkpoint's weights are loaded, and ``DepthModel.analysis`` runs on the same batch a
finished run uses (the first validation batch of rank 0, with the run's own number of
workers sharding the split).

A checkpoint is the last periodic one (``train.checkpoint_interval``): a run does not
checkpoint its final weights, and Ray Train keeps one checkpoint per run. So an analysis
from a checkpoint describes the model at that step, and says so: ``"source":
"checkpoint"`` and ``"step"`` in ``analysis.json`` (the report's caption names them).

    from harness.run.analyze import analyze_run
    outcome = analyze_run(RunRecord("results/quickstart/runs/3c5110da4f"))
    outcome.state, outcome.message        # "analysed", "from the checkpoint at step 20 of 40"
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from harness.records import RunRecord
from harness.run.session import describe_exception
from harness.run.spec import RunSpec

MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's file of the full module weights


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one run: ``analysed``, ``skipped`` (nothing to do, not an error)
    or ``failed`` (the run could not be analysed; ``message`` says why in one line)."""

    run_id: str
    name: str
    state: str
    message: str


class AnalyzeError(Exception):
    """A run that cannot be analysed; the message is one line."""


def analyze_run(record: RunRecord, *, force: bool = False, device: str = "cpu") -> Outcome:
    """Analyse one run from its newest checkpoint and write ``analysis.json``.

    A run that already has an analysis is skipped unless ``force`` (an analysis written at
    the end of training, of the final weights, is never replaced by one of an earlier
    checkpoint, even with ``force``)."""
    raw = record.read_spec()
    name = str(raw.get("name", "?")) if isinstance(raw, dict) else "?"
    try:
        return _analyze(record, raw, name, force=force, device=torch.device(device))
    except AnalyzeError as exc:
        return Outcome(record.run_id, name, "failed", str(exc))


def _analyze(record: RunRecord, raw: dict, name: str, *, force: bool, device: torch.device) -> Outcome:
    run_id = record.run_id
    if not raw:
        damaged = record.problem_with("spec.json")
        raise AnalyzeError(f"{damaged.path}: {damaged.problem}" if damaged else
                           f"{record.dir / 'spec.json'}: missing or empty")
    try:
        spec = RunSpec.from_json(raw)
    except ValueError as exc:
        raise AnalyzeError(f"{record.dir / 'spec.json'}: not a spec this version reads "
                           f"({describe_exception(exc)})") from None
    existing = record.read_analysis()
    if existing and existing.get("source", "end of training") != "checkpoint":
        return Outcome(run_id, name, "skipped", "has the analysis written at the end of training")
    if existing and not force:
        return Outcome(run_id, name, "skipped", f"has an analysis from the checkpoint at step "
                                                f"{existing.get('step', '?')} (--force to redo it)")
    if spec.strategy not in ("deq", "weight_tied", "checkpointed", "explicit"):
        return Outcome(run_id, name, "skipped", f"{spec.strategy or 'this strategy'} has no equilibrium "
                                                "or layers to analyse")
    stage = (spec.deepspeed.model_dump().get("zero_optimization") or {}).get("stage", 0)
    if stage == 3:
        raise AnalyzeError("ZeRO-3 checkpoints hold partitioned parameters; analysing them is not "
                           "supported (the end-of-training analysis is skipped for ZeRO-3 too)")
    checkpoint = record.latest_checkpoint()
    if checkpoint is None:
        return Outcome(run_id, name, "skipped", f"no checkpoint in {record.checkpoint_dir} "
                                                "(train.checkpoint_interval: 0, or none reached)")
    weights, step = _load_weights(checkpoint)
    from harness.data import DataError
    from harness.run.workload import Workload

    try:
        work = Workload(spec, rank=0, world_size=spec.resources.workers, device=device)
    except (OSError, ValueError, DataError) as exc:
        raise AnalyzeError(f"the run's data cannot be read: {describe_exception(exc)}") from None
    model = work.build_model().to(device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise AnalyzeError(f"{checkpoint}: its weights do not fit the model its spec builds "
                           f"({describe_exception(exc)})") from None
    with torch.no_grad():
        result = work.analysis(model, step=step, source="checkpoint")
    if result is None:
        raise AnalyzeError("the first validation batch of rank 0 is empty: nothing to analyse")
    record.write_analysis(result)
    damaged = record.problem_with("analysis.json")
    again = f" (replacing the damaged {damaged.path}: {damaged.problem})" if damaged else ""
    return Outcome(run_id, name, "analysed", f"from the checkpoint at step {step} of {spec.train.steps}{again}")


def _load_weights(checkpoint: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The module's weights and the training step of one DeepSpeed checkpoint folder."""
    from harness.run.trainer import CHECKPOINT_TAG, load_checkpoint_file

    path = checkpoint / CHECKPOINT_TAG / MODEL_STATES
    if not path.is_file():
        raise AnalyzeError(f"{checkpoint}: no DeepSpeed checkpoint {CHECKPOINT_TAG!r} with {MODEL_STATES} in it")
    try:
        states = load_checkpoint_file(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 (torn, truncated or foreign: refused in one line)
        raise AnalyzeError(f"{path}: unreadable checkpoint ({describe_exception(exc)})") from None
    module, step = states.get("module") if isinstance(states, dict) else None, None
    if isinstance(states, dict):
        step = states.get("step", states.get("global_steps"))
    if not isinstance(module, dict) or not isinstance(step, int):
        raise AnalyzeError(f"{path}: no module weights and step in it")
    return module, step

