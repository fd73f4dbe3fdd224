"""Every figure a run records: its key, unit, where it is recorded, for whom, what it means.

This is the one list. The worker (``harness.run``) records under these keys, the report
(``harness.report``) reads its columns and glossary from here, ``docs/records.md``'s tables
are printed from here (``python -m harness.records.schema`` prints them; a test compares),
and tests check that every key a real run writes is listed.

Where a figure is recorded (``records``): ``summary`` (summary.json, one flat row per run),
``train`` (a ``kind: train`` line of metrics.jsonl, every ``log_interval`` steps),
``eval`` (a ``kind: eval`` line). ``only`` says which runs have it (empty: every run).

One name per figure from the solver to the report: the forward solve's time is
``solvers.SolveStats.time_s`` -> the DEQ's step statistic ``solver_time_s`` -> the
summary's ``solver_time_s`` (median over the timed steps) -> the report's column.
"""
from __future__ import annotations

from dataclasses import dataclass

RECORD_KINDS = ("summary", "train", "eval")


@dataclass(frozen=True)
class Figure:
    key: str
    unit: str                      # "bytes", "s", "tokens/s", "count", "nats", "" (a ratio or text)
    group: str                     # identity, size, memory, speed, time, depth, quality, replicas, record
    records: tuple[str, ...]       # a subset of RECORD_KINDS
    meaning: str
    only: str = ""                 # which runs have it; "" = every run


# One row per figure; a row whose key is empty continues the meaning above it. "-" is empty.
_TABLE = """
key                     | unit     | group    | records       | only                    | meaning
kind                    | -        | record   | train eval    | -                       | `train` or `eval`
step                    | count    | record   | train eval    | -                       | the global training step the line
                        |          |          |               |                         | belongs to
elapsed_s               | s        | time     | train eval    | -                       | seconds since this attempt's
                        |          |          |               |                         | training started
run_id                  | -        | identity | summary       | -                       | hash of the run spec (stable
                        |          |          |               |                         | across submissions)
sweep                   | -        | identity | summary       | -                       | the job file's name
name                    | -        | identity | summary       | -                       | the grid labels joined; unique
                        |          |          |               |                         | within a sweep
task                    | -        | identity | summary       | -                       | `lm` or `copy`
dataset                 | -        | identity | summary       | -                       | the corpus (`synthetic`, `ptb`,
                        |          |          |               |                         | `wikitext103`, `copy_memory`)
cell                    | -        | identity | summary       | -                       | the cell (`transformer`,
                        |          |          |               |                         | `trellisnet`)
strategy                | -        | identity | summary       | -                       | the depth strategy (`deq`,
                        |          |          |               |                         | `weight_tied`, ...)
depth                   | count    | identity | summary       | -                       | the strategy's size: layers, or
                        |          |          |               |                         | max_iter for deq, or ODE steps
                        |          |          |               |                         | (models.depth_size)
seed                    | count    | identity | summary       | -                       | train.seed
world_size              | count    | identity | summary       | -                       | data-parallel workers
device                  | -        | identity | summary       | -                       | the accelerator's name, or `cpu`
params_total            | count    | size     | summary       | -                       | parameters in all
params_embedding        | count    | size     | summary       | -                       | parameters of the token embedding
params_non_embedding    | count    | size     | summary       | -                       | parameters besides the embedding
activation_bytes        | bytes    | memory   | summary       | -                       | bytes of tensors saved for
                        |          |          |               |                         | backward during one training
                        |          |          |               |                         | forward (unique storages,
                        |          |          |               |                         | parameters excluded); the same on
                        |          |          |               |                         | any device up to a few auxiliary
                        |          |          |               |                         | bytes of some CUDA kernels; shows
                        |          |          |               |                         | O(1) against O(L); a DEQ with a
                        |          |          |               |                         | warm-up is measured in equilibrium
                        |          |          |               |                         | mode
activation_bytes_warmup | bytes    | memory   | summary       | deq with pretrain_steps | activation_bytes of a DEQ in its
                        |          |          |               |                         | weight-tied warm-up mode (null for
                        |          |          |               |                         | every other run)
peak_mem_bytes          | bytes    | memory   | summary train | CUDA                    | CUDA:
                        |          |          |               |                         | torch.cuda.max_memory_allocated
                        |          |          |               |                         | over the measure_steps steps after
                        |          |          |               |                         | the warm-up, the largest rank's;
                        |          |          |               |                         | not measured on a CPU (no
                        |          |          |               |                         | allocator statistic there; a dash)
static_mem_bytes        | bytes    | memory   | summary       | -                       | parameters + gradients + optimizer
                        |          |          |               |                         | state
step_time_s             | s        | speed    | summary train | -                       | one training step, device
                        |          |          |               |                         | synchronised; summary: median over
                        |          |          |               |                         | every step after the warm-up
                        |          |          |               |                         | (measure_warmup steps of each
                        |          |          |               |                         | attempt), train line: mean since
                        |          |          |               |                         | the last line
step_time_p10_s         | s        | speed    | summary       | -                       | 10th percentile of the timed
                        |          |          |               |                         | steps' times (linear
                        |          |          |               |                         | interpolation)
step_time_p90_s         | s        | speed    | summary       | -                       | 90th percentile of the timed
                        |          |          |               |                         | steps' times
fwd_time_s              | s        | speed    | summary       | -                       | the forward part of a step (median
                        |          |          |               |                         | over the timed steps); includes
                        |          |          |               |                         | the DEQ solve
fwd_time_p10_s          | s        | speed    | summary       | -                       | 10th percentile of the forward
                        |          |          |               |                         | times
fwd_time_p90_s          | s        | speed    | summary       | -                       | 90th percentile of the forward
                        |          |          |               |                         | times
bwd_time_s              | s        | speed    | summary       | -                       | the backward part of a step
                        |          |          |               |                         | (median); includes the adjoint
                        |          |          |               |                         | solve
bwd_time_p10_s          | s        | speed    | summary       | -                       | 10th percentile of the backward
                        |          |          |               |                         | times
bwd_time_p90_s          | s        | speed    | summary       | -                       | 90th percentile of the backward
                        |          |          |               |                         | times
solver_time_s           | s        | speed    | summary       | deq                     | the DEQ's forward solve, part of
                        |          |          |               |                         | fwd_time_s (median over the timed
                        |          |          |               |                         | steps)
solver_time_p10_s       | s        | speed    | summary       | deq                     | 10th percentile of the forward
                        |          |          |               |                         | solve times
solver_time_p90_s       | s        | speed    | summary       | deq                     | 90th percentile of the forward
                        |          |          |               |                         | solve times
tokens_per_s            | tokens/s | speed    | summary train | -                       | tokens processed per second across
                        |          |          |               |                         | all data-parallel workers
infer_time_s            | s        | speed    | summary       | -                       | inference: one validation batch's
                        |          |          |               |                         | forward pass without gradients,
                        |          |          |               |                         | device synchronised (median over
                        |          |          |               |                         | the final validation pass)
infer_peak_mem_bytes    | bytes    | memory   | summary       | CUDA                    | inference: peak allocated memory
                        |          |          |               |                         | during the final validation pass
                        |          |          |               |                         | (CUDA; not measured on a CPU)
step_times_s            | s        | samples  | summary       | -                       | rank 0's timed step times, in
                        |          |          |               |                         | order (a list: the steps after
                        |          |          |               |                         | the warm-up of the last attempt):
                        |          |          |               |                         | the spread a one-seed step-time
                        |          |          |               |                         | ratio's interval is taken over
infer_times_s           | s        | samples  | summary       | -                       | rank 0's per-batch inference times
                        |          |          |               |                         | of the final validation pass (a
                        |          |          |               |                         | list)
lr                      | -        | speed    | train         | -                       | the learning rate at that step
wall_time_s             | s        | speed    | summary       | -                       | the run's training time, summed
                        |          |          |               |                         | over its attempts (time waiting
                        |          |          |               |                         | between attempts excluded)
steps                   | count    | speed    | summary       | -                       | training steps (train.steps)
attempt_wall_s          | s        | time     | summary       | -                       | each attempt's time (a list)
attempts                | count    | time     | summary       | -                       | how many times the workers started
                        |          |          |               |                         | this run
setup_time_s            | s        | time     | summary       | -                       | the worker's set-up before the
                        |          |          |               |                         | first step of the last attempt:
                        |          |          |               |                         | data, model, DeepSpeed engine,
                        |          |          |               |                         | resume, memory measurement
eval_time_s             | s        | time     | summary       | -                       | time spent evaluating (periodic
                        |          |          |               |                         | and final), part of wall_time_s
checkpoint_time_s       | s        | time     | summary       | -                       | time spent saving and reporting
                        |          |          |               |                         | checkpoints, part of wall_time_s
worker_started_at       | s        | time     | summary       | -                       | when the workers began the last
                        |          |          |               |                         | attempt (seconds since the epoch;
                        |          |          |               |                         | mean over ranks, as every summary
                        |          |          |               |                         | figure is)
training_started_at     | s        | time     | summary       | -                       | when their first training step
                        |          |          |               |                         | began (seconds since the epoch,
                        |          |          |               |                         | mean over ranks)
training_ended_at       | s        | time     | summary       | -                       | when their final evaluation ended
                        |          |          |               |                         | (seconds since the epoch, mean
                        |          |          |               |                         | over ranks)
nfe                     | count    | depth    | summary train | -                       | cell evaluations per forward: L
                        |          |          |               |                         | for weight-tied; for DEQ the
                        |          |          |               |                         | solver's steps plus the
                        |          |          |               |                         | evaluations that build the
                        |          |          |               |                         | differentiable output; ODE
                        |          |          |               |                         | function evaluations
fwd_nstep               | count    | depth    | train         | deq                     | forward solver iterations (mean
                        |          |          |               |                         | since the last line)
fwd_abs_res             | -        | depth    | train         | deq                     | forward solver absolute residual
                        |          |          |               |                         | ||f(z)-z|| (mean)
fwd_rel_res             | -        | depth    | train         | deq                     | forward solver relative residual
                        |          |          |               |                         | ||f(z)-z||/||f(z)|| (mean)
bwd_nstep               | count    | depth    | train         | deq, grad ift           | adjoint (backward) solver
                        |          |          |               |                         | iterations (mean)
bwd_res                 | -        | depth    | train         | deq, grad ift           | adjoint solver relative residual
                        |          |          |               |                         | (mean)
fwd_nstep_mean          | count    | depth    | summary       | deq                     | forward solver iterations, mean
                        |          |          |               |                         | over steps and ranks
fwd_nstep_max           | count    | depth    | summary       | deq                     | forward solver iterations, the
                        |          |          |               |                         | most of any step
fwd_abs_res_mean        | -        | depth    | summary       | deq                     | forward absolute residual, mean of
                        |          |          |               |                         | the batch means
fwd_abs_res_max         | -        | depth    | summary       | deq                     | forward absolute residual, largest
                        |          |          |               |                         | per-sample value
fwd_rel_res_mean        | -        | depth    | summary       | deq                     | forward relative residual, mean of
                        |          |          |               |                         | the batch means
fwd_rel_res_max         | -        | depth    | summary       | deq                     | forward relative residual, largest
                        |          |          |               |                         | per-sample value
bwd_nstep_mean          | count    | depth    | summary       | deq, grad ift           | adjoint solver iterations, mean
bwd_nstep_max           | count    | depth    | summary       | deq, grad ift           | adjoint solver iterations, the
                        |          |          |               |                         | most
bwd_res_mean            | -        | depth    | summary       | deq, grad ift           | adjoint relative residual, mean of
                        |          |          |               |                         | the batch means
bwd_res_max             | -        | depth    | summary       | deq, grad ift           | adjoint relative residual, largest
                        |          |          |               |                         | per-sample value
fwd_unconverged_frac    | -        | depth    | summary       | deq                     | share of the forward solves
                        |          |          |               |                         | (samples x training steps, every
                        |          |          |               |                         | rank) that ended above tol, at
                        |          |          |               |                         | max_iter: 0 is every solve
                        |          |          |               |                         | converged
bwd_unconverged_frac    | -        | depth    | summary       | deq, grad ift           | the same for the adjoint
                        |          |          |               |                         | (backward) solves
spectral_radius         | -        | depth    | summary eval  | deq                     | rho(J_f(z*)): spectral radius of
                        |          |          |               |                         | the cell's Jacobian at the
                        |          |          |               |                         | equilibrium, power iteration on
                        |          |          |               |                         | the first validation batch of each
                        |          |          |               |                         | rank, mean (eval lines and the
                        |          |          |               |                         | end)
loss                    | nats     | quality  | train         | -                       | training loss (mean token NLL
                        |          |          |               |                         | since the last line)
train_loss              | nats     | quality  | summary       | -                       | the last train line's loss
val_loss                | nats     | quality  | summary eval  | -                       | validation loss (mean token NLL;
                        |          |          |               |                         | copy: recalled digits)
val_ppl                 | -        | quality  | summary eval  | lm                      | exp(val_loss)
test_loss               | nats     | quality  | summary       | -                       | test loss, at the end
test_ppl                | -        | quality  | summary       | lm                      | exp(test_loss)
val_acc                 | -        | quality  | summary eval  | copy                    | accuracy on the recalled digits
test_acc                | -        | quality  | summary       | copy                    | test accuracy on the recalled
                        |          |          |               |                         | digits
val_tokens              | count    | quality  | summary eval  | -                       | how many target tokens (lm) or
                        |          |          |               |                         | recalled digits (copy) the
                        |          |          |               |                         | validation figures average over,
                        |          |          |               |                         | all ranks together
test_tokens             | count    | quality  | summary       | -                       | the same for the test figures
unigram_ppl             | -        | quality  | summary       | lm                      | perplexity on the validation split
                        |          |          |               |                         | of the training split's word
                        |          |          |               |                         | frequencies (add-one smoothed):
                        |          |          |               |                         | the best a model can do without
                        |          |          |               |                         | context; a model not clearly below
                        |          |          |               |                         | it has learned nothing
chance_acc              | -        | quality  | summary       | copy                    | recall accuracy of a guesser (the
                        |          |          |               |                         | digits are uniform over 8 symbols:
                        |          |          |               |                         | 12.5%)
optimal_ppl             | -        | quality  | summary       | synthetic corpus        | the synthetic corpus's true
                        |          |          |               |                         | perplexity (its entropy rate): the
                        |          |          |               |                         | best any model can do
rank_param_sha          | -        | replicas | summary       | ZeRO stage < 3          | a short SHA-256 of the parameters
                        |          |          |               |                         | per data-parallel rank after
                        |          |          |               |                         | training; equal: replicas agree
rank_nodes              | -        | replicas | summary       | -                       | the Ray node id (host name without
                        |          |          |               |                         | Ray) of each rank, last attempt
"""


def _parse(table: str) -> tuple[Figure, ...]:
    rows: list[list[str]] = []
    for text in table.strip().splitlines()[1:]:
        cells = [c.strip() for c in text.split(" | ")]
        if cells[0]:
            rows.append(cells)
        else:
            rows[-1][5] += " " + cells[5]
    return tuple(Figure(key, "" if unit == "-" else unit, group, tuple(records.split()), meaning,
                        "" if only == "-" else only)
                 for key, unit, group, records, only, meaning in rows)


FIGURES: tuple[Figure, ...] = _parse(_TABLE)
BY_KEY: dict[str, Figure] = {f.key: f for f in FIGURES}
assert len(BY_KEY) == len(FIGURES), "a key is listed twice"


def keys(record: str | None = None, group: str | None = None) -> tuple[str, ...]:
    """Keys recorded in ``record`` (summary, train, eval) and/or of ``group``, in list order."""
    return tuple(f.key for f in FIGURES
                 if (record is None or record in f.records) and (group is None or f.group == group))


def unknown_keys(record: str, values: dict) -> list[str]:
    """The keys of one recorded dict (a summary, or a metrics line of kind ``record``) that
    the schema does not list for that record."""
    allowed = set(keys(record))
    return sorted(k for k in values if k not in allowed)


def unit_of(key: str) -> str | None:
    figure = BY_KEY.get(key)
    return figure.unit if figure else None


def markdown_table(record: str) -> str:
    """The table of ``docs/records.md`` for one record kind."""
    lines = ["| key | unit | runs | meaning |", "|---|---|---|---|"]
    for f in FIGURES:
        if record in f.records:
            lines.append(f"| `{f.key}` | {f.unit or '-'} | {f.only or 'all'} | {f.meaning.replace('|', '/')} |")
    return "\n".join(lines)


def docs_block(record: str) -> str:
    """The generated block of docs/records.md, with the markers that delimit it."""
    return f"<!-- schema:{record} (python -m harness.records.schema) -->\n{markdown_table(record)}\n<!-- /schema -->"


if __name__ == "__main__":
    for kind in RECORD_KINDS:
        print(docs_block(kind), end="\n\n")
