"""What a report says besides its tables and figures, as plain strings for any renderer.

:func:`build_content` gathers, from the records alone: the sweep's identity (name, job
file, creation date, commit and dirty flag, run time span), run counts by state, the
failed runs with their reasons and ranks, the runs still pending or running, the
environment (``sweep.json`` "env" and what the runs' ``env.json`` agree or differ on),
the job file text and a list of every run. ``html.py`` and ``markdown.py`` render it;
neither escapes nor formats anything on their own beyond their markup.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from harness.records import schema
from harness.report.data import SweepData
from harness.report.figures import ReportFigure
from harness.report.tables import LEARNED_PPL_RATIO, Column, Table
from harness.report.units import EM_DASH, format_value, is_missing

ENV_ORDER = ("git_commit", "git_dirty", "python", "torch", "ray", "deepspeed", "platform", "hostname",
             "devices", "device_count", "seeds", "started", "ended")
PER_RUN_ENV_SKIP = ("seeds", "started", "ended")  # expected to differ between runs

# The report's glossary: the figures its tables show, with their meaning from the schema.
GLOSSARY_KEYS = ("activation_bytes", "activation_bytes_warmup", "peak_mem_bytes", "static_mem_bytes",
                 "step_time_s", "step_time_p90_s", "fwd_time_s", "bwd_time_s", "solver_time_s", "tokens_per_s",
                 "infer_time_s", "nfe", "fwd_nstep_mean", "fwd_rel_res_mean", "bwd_nstep_mean", "bwd_res_mean",
                 "spectral_radius",
                 "val_loss", "val_ppl", "val_acc", "optimal_ppl")
METRIC_GLOSSARY = tuple(
    (k, schema.BY_KEY[k].meaning + (f" ({schema.BY_KEY[k].only} only)" if schema.BY_KEY[k].only else ""))
    for k in GLOSSARY_KEYS)


@dataclass
class ReportContent:
    """Everything the page shows, already formatted as text."""

    title: str
    facts: list[tuple[str, str]]
    counts: str
    baseline: str | None
    tables: list[Table]
    figures: list[ReportFigure]
    failed: Table | None
    unfinished: Table | None
    env: list[tuple[str, str]]
    run_env: list[tuple[str, str]]
    env_warnings: list[str]
    job_name: str
    job_text: str | None
    all_runs: Table | None
    notes: list[str] = field(default_factory=list)
    generated: str = ""


def text(value: object) -> str:
    """A record value as text; missing -> em dash; lists and dicts as compact JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and is_missing(value)):
        return EM_DASH
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _env_rows(env: dict) -> list[tuple[str, str]]:
    keys = [k for k in ENV_ORDER if k in env] + sorted(k for k in env if k not in ENV_ORDER)
    return [(k, text(env[k])) for k in keys]


def _run_env(data: SweepData) -> tuple[list[tuple[str, str]], list[str]]:
    """Per key: the value all runs share, or each distinct value with its run count."""
    envs = [e for e in data.envs.values() if e]
    rows, warnings = [], []
    keys = [k for k in ENV_ORDER if any(k in e for e in envs)]
    keys += sorted({k for e in envs for k in e} - set(ENV_ORDER))
    for key in keys:
        if key in PER_RUN_ENV_SKIP:
            continue
        counts = Counter(text(e.get(key)) for e in envs)
        if len(counts) == 1:
            rows.append((key, next(iter(counts))))
        else:
            rows.append((key, "; ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items()))))
    commits = {e.get("git_commit") for e in envs if e.get("git_commit")}
    sweep_commit = (data.meta.get("env") or {}).get("git_commit")
    if len(commits) > 1 or (sweep_commit and commits and commits != {sweep_commit}):
        warnings.append("runs were made from different git commits; compare with care")
    if any(e.get("git_dirty") for e in envs):
        warnings.append("some runs were made from a git tree with uncommitted changes (dirty)")
    return rows, warnings


def _span(runs: pd.DataFrame) -> str:
    started = sorted(s for s in runs.get("started", pd.Series(dtype=object)).dropna().astype(str))
    ended = sorted(s for s in runs.get("ended", pd.Series(dtype=object)).dropna().astype(str))
    if not started:
        return EM_DASH
    return f"{started[0]} \u2192 {ended[-1] if ended else '(running)'}"


def _plain_table(title: str, caption: str, headers: list[str], rows: list[list[str]]) -> Table:
    return Table(title, caption, [Column(h, h, "text") for h in headers], rows)


def _failed_table(runs: pd.DataFrame) -> Table | None:
    failed = runs[runs["state"] == "failed"]
    if failed.empty:
        return None
    rows = [[text(r["name"]), text(r["run_id"]), text(r["model"]), text(r["seed"]), text(r["failed_rank"]),
             text(r["attempt"]), text(r["step"]), text(r["reason"])] for _, r in failed.iterrows()]
    return _plain_table("Failed runs", "Each failed run with the reason on record and the worker rank that failed.",
                        ["run", "run_id", "model", "seed", "rank", "attempt", "step", "reason"], rows)


def _unfinished_table(runs: pd.DataFrame) -> Table | None:
    waiting = runs[runs["state"].isin(["pending", "running"])]
    if waiting.empty:
        return None
    rows = [[text(r["name"]), text(r["run_id"]), text(r["model"]), text(r["seed"]), text(r["state"]),
             text(r["step"]), text(r["started"])] for _, r in waiting.iterrows()]
    return _plain_table("Runs not finished yet", "Pending or running when this report was generated; "
                        "their numbers are not in the tables.",
                        ["run", "run_id", "model", "seed", "state", "step", "started"], rows)


def _all_runs_table(runs: pd.DataFrame) -> Table | None:
    if runs.empty:
        return None
    quality = "val_ppl" if runs["val_ppl"].notna().any() else "val_loss"
    rows = [[text(r["name"]), text(r["run_id"]), text(r["model"]), text(r["seed"]), text(r["state"]),
             text(r["step"]), format_value(r["activation_bytes"], "bytes"), format_value(r["step_time_s"], "seconds"),
             format_value(r[quality], "plain")] for _, r in runs.iterrows()]
    return _plain_table("All runs", "Every run of the sweep; summary.csv has every field.",
                        ["run", "run_id", "model", "seed", "state", "step", "activations", "step time",
                         quality.replace("_", " ")], rows)


def _unlearned_note(models: pd.DataFrame | None) -> str | None:
    """The warning for models that did no better than a context-free guess (``learned`` no)."""
    if models is None or models.empty or "learned" not in models:
        return None
    judged = models[models["learned"].astype(str) != ""]
    failed = judged[judged["learned"].astype(str) == "no"]
    if failed.empty:
        return None
    names = ", ".join(f"{r['model']} ({r['learned_text'].removeprefix('no (').rstrip(')')})"
                      for _, r in failed.iterrows())
    return (f"Not learned: {len(failed)} of {len(judged)} models did no better than a context-free guess "
            f"(LM: val ppl not under {LEARNED_PPL_RATIO} x the unigram perplexity; copy: recall within chance's "
            f"95% bound): "
            f"{names}. Their quality figures compare untrained models, and the claims check does not judge "
            "quality on them; train longer (train.steps) or tune train.lr before reading the quality columns.")


def build_content(data: SweepData, tables: list[Table], figures: list[ReportFigure], baseline: str | None,
                  generated: str, models: pd.DataFrame | None = None) -> ReportContent:
    """Gather the report's text from the sweep records (see the module docstring); ``models``
    (``tables.model_frame``) for the note on models that learned nothing."""
    runs, meta = data.runs, data.meta
    env = meta.get("env") or {}
    commit = env.get("git_commit") or next((e.get("git_commit") for e in data.envs.values() if e.get("git_commit")), None)
    dirty = env.get("git_dirty")
    commit_text = EM_DASH if not commit else f"{commit}" + (" (dirty tree)" if dirty else "")
    states = runs["state"].value_counts().to_dict() if len(runs) else {}
    n_models = runs.loc[runs["state"] == "finished", "model_key"].nunique() if len(runs) else 0
    counts = (f"{len(runs)} runs: " + ", ".join(f"{states.get(s, 0)} {s}" for s in ("finished", "failed", "running",
                                                                                     "pending"))
              + f"; {n_models} models with finished runs")
    facts = [("sweep", data.name), ("job file", text(meta.get("job_file"))), ("sweep created", text(meta.get("created"))),
             ("runs started \u2192 ended", _span(runs)), ("git commit", commit_text),
             ("records", data.sweep_dir.name)]
    if baseline:
        facts.append(("baseline strategy", baseline))
    run_env, warnings = _run_env(data)
    notes = []
    if "spec.smoke" in runs and runs["spec.smoke"].fillna(False).astype(bool).any():
        notes.append("Smoke run (harness.submit --smoke): sizes shrunk, figures not comparable. It checks "
                     "that the job file runs end to end; its numbers measure nothing.")
    optimal = runs["optimal_ppl"].dropna()
    if len(optimal):
        notes.append(f"Synthetic corpus: the optimal (entropy-rate) perplexity is {optimal.mean():.4g}; "
                     "no model can do better on average.")
    unlearned = _unlearned_note(models)
    if unlearned:
        notes.append(unlearned)
    notes += [f"Damaged record: {problem}" for problem in data.problems]
    return ReportContent(title=f"deqbench report: {data.name}", facts=facts, counts=counts, baseline=baseline,
                         tables=tables, figures=figures, failed=_failed_table(runs),
                         unfinished=_unfinished_table(runs), env=_env_rows(env), run_env=run_env,
                         env_warnings=warnings, job_name=text(meta.get("job_file") or "job.yaml"),
                         job_text=data.job_text, all_runs=_all_runs_table(runs), notes=notes, generated=generated)
