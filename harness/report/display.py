"""The report's display tables: :func:`display_tables` turns the model frame
(``harness.report.tables.model_frame``) into :class:`~harness.report.tables.Table` objects in
human units for HTML and Markdown, one set per task (cost; quality and solver behaviour), with
only the columns some model of that task has.
"""
from __future__ import annotations

import pandas as pd

from harness.report import verdicts
from harness.report.tables import (LEARNED_PPL_RATIO, QUALITY_METRIC, RELATIVE_FIELDS, Column, Table)
from harness.report.units import EM_DASH, format_stat, format_value, is_missing

COST_COLUMNS = [
    Column("params", "params_non_embedding", "count", "non-embedding parameters"),
    Column("activations", "activation_bytes", "bytes",
           "bytes saved for backward in one training forward (unique storages, parameters excluded)"),
    Column("act. saved", "activation_saved_pct", "pct", "activation memory saved against the baseline"),
    Column("peak mem", "peak_mem_bytes", "bytes",
           "CUDA peak allocated memory over the measured steps (not measured on a CPU)"),
    Column("peak saved", "peak_mem_saved_pct", "pct", "peak memory saved against the baseline"),
    Column("step time", "step_time_s", "seconds", "median training step time over every step after warm-up"),
    Column("step p90", "step_time_p90_s", "seconds", "90th percentile of the training step times"),
    Column("slowdown", "slowdown_x", "factor",
           "step time divided by the baseline's; in brackets the 95% interval of the ratio (of geometric "
           "means: over seeds, or over the two runs' recorded step times with one seed; docs/verdicts.md)"),
    Column("throughput", "tokens_per_s", "rate", "tokens per second across all data-parallel workers"),
    Column("nfe", "nfe", "plain", "cell evaluations per forward"),
    Column("inference", "infer_time_s", "seconds", "one validation batch's forward pass, no gradients (median)"),
]
# (max over batch and the absolute residual are in summary.csv / models.csv)
SOLVER_COLUMNS = [
    Column("fwd nstep", "fwd_nstep_mean", "plain", "forward solver iterations (mean over batch)"),
    Column("fwd rel. res.", "fwd_rel_res_mean", "sci", "forward relative residual ||f(z)-z||/||f(z)||"),
    Column("bwd nstep", "bwd_nstep_mean", "plain", "adjoint (backward) solver iterations"),
    Column("bwd res.", "bwd_res_mean", "sci", "adjoint solver residual"),
    Column("rho(J)", "spectral_radius", "plain", "spectral radius of the cell's Jacobian at the equilibrium, at the end"),
]
LEARNED = Column("learned", "learned_text", "text",
                 f"did the model learn beyond a context-free guess? LM: val ppl under {LEARNED_PPL_RATIO} x "
                 "the unigram perplexity (the training split's word frequencies); copy: val acc above "
                 "chance (12.5%) by more than the 95% binomial bound over its recalled digits")
VS_BASELINE = Column("vs baseline", "quality_diff", "text",
                     "equivalence against the baseline model matched in parameters: equal when the 90% "
                     "Welch interval of the difference lies inside the job file's margin, better / worse "
                     "when the 95% interval excludes zero, else inconclusive; unmatched pairs are marked "
                     "and not judged")
MATCHED = Column("matched", "matched", "text",
                 "what the model and its baseline are matched on: parameters (non-embedding, within the "
                 "job file's compare.param_tolerance_pct) and cell evaluations (nfe, within "
                 "compare.nfe_tolerance_pct); 'unmatched' pairs are shown, never judged")
HEALTH = Column("solver health", "solver_health", "text",
                f"share of the DEQ's forward / backward solves that ended above tol (at max_iter); "
                f"flagged 'unconverged' above {100 * verdicts.UNCONVERGED_FLAG:g}%")
FWD_ABS_RESIDUAL = Column("fwd abs. res.", "fwd_abs_res_mean", "sci", "forward absolute residual ||f(z)-z||")
LM_QUALITY = [Column("val ppl", "val_ppl", "plain", "validation perplexity exp(mean token NLL)"),
              Column("test ppl", "test_ppl", "plain", "test perplexity exp(mean token NLL)")]
COPY_QUALITY = [Column("val loss", "val_loss", "plain", "validation loss (nats)"),
                Column("val acc", "val_acc", "acc", "validation accuracy on the recalled digits"),
                Column("test loss", "test_loss", "plain", "test loss (nats)"),
                Column("test acc", "test_acc", "acc", "test accuracy on the recalled digits")]


def _has(models: pd.DataFrame, metric: str) -> bool:
    column = f"{metric}_mean"
    return column in models and models[column].notna().any()


def _cell(row: pd.Series, col: Column) -> str:
    if col.field == "slowdown_x" and not is_missing(row.get("slowdown_lo")) and not is_missing(row[col.field]):
        return f"{format_value(row[col.field], col.kind)} [{float(row['slowdown_lo']):.2f}, {float(row['slowdown_hi']):.2f}]"
    if col.field in RELATIVE_FIELDS:
        return format_value(row[col.field], col.kind)
    if col.field == "quality_diff":
        return _difference_cell(row)
    if col.field in ("learned_text", "matched", "solver_health"):
        return str(row.get(col.field) or "") or EM_DASH
    return format_stat(row[f"{col.field}_mean"], row[f"{col.field}_ci95"], col.kind, int(row[f"{col.field}_n"]))


def _difference_cell(row: pd.Series) -> str:
    """'equal (+0.41, 90% CI [-0.2, +1], margin ±0.7)', 'unmatched (params 4.00×)', or a dash."""
    verdict = row.get("quality_verdict")
    if not verdict:
        matched = str(row.get("matched") or "")
        return matched if matched.startswith("unmatched") else EM_DASH
    text = str(row.get("quality_text") or "")
    return f"{verdict} ({text.split(': ', 1)[1]})" if ": " in text else verdict


def _table(title: str, caption: str, models: pd.DataFrame, columns: list[Column]) -> Table:
    head = [Column("model", "model", "text", "runs grouped by everything but the seed"),
            Column("n", "n", "text", "finished runs (seeds) / runs of this model"),
            Column("depth", "depth", "plain", "layers; DEQ: max_iter; Neural ODE: steps")]
    rows, notes = [], []
    for _, row in models.iterrows():
        n = f"{row['n']}/{row['n_runs']}" if row["n"] != row["n_runs"] else str(row["n"])
        depth = EM_DASH if is_missing(row["depth"]) else f"{float(row['depth']):g}"
        rows.append([str(row["model"]), n, depth, *(_cell(row, c) for c in columns)])
        base = row.get("baseline_model")
        notes.append(f"relative columns against: {base}" if isinstance(base, str) else "")
    return Table(title, caption, head + columns, rows, notes)


def display_tables(models: pd.DataFrame, baseline: str | None) -> list[Table]:
    """The report's tables (cost; quality and solver), one set per task, skipping columns
    no model of that task has."""
    if models.empty:
        return []
    tasks = list(dict.fromkeys(models["task"].astype(str)))
    tables = []
    for task in tasks:
        subset = models[models["task"].astype(str) == task]
        suffix = f" \u2014 task {task}" if len(tasks) > 1 else ""
        tables += _task_tables(subset, baseline, suffix)
    return tables


def _learned_caption(models: pd.DataFrame) -> str:
    tasks = set(models["task"].astype(str))
    parts = []
    if "lm" in tasks:
        parts.append(f"val ppl under {LEARNED_PPL_RATIO} x the unigram perplexity (the training split's word "
                     "frequencies: the best guess without context), the ratio in brackets")
    if "copy" in tasks:
        parts.append("recall above the 95% binomial bound of a guesser (chance 12.5%) over the recalled digits, "
                     "the bound in brackets")
    return "whether the model beat a context-free guess: " + "; ".join(parts) + "."


def _task_tables(models: pd.DataFrame, baseline: str | None, suffix: str) -> list[Table]:
    tables = []
    cost = [c for c in COST_COLUMNS if c.field in RELATIVE_FIELDS or _has(models, c.field)]
    for rel, raw in (("activation_saved_pct", "activation_bytes"), ("peak_mem_saved_pct", "peak_mem_bytes"),
                     ("slowdown_x", "step_time_s")):
        if not _has(models, raw) or models[rel].isna().all():
            cost = [c for c in cost if c.field != rel]
    if cost and (models["matched"].astype(str) != "").any():
        cost = cost + [MATCHED]
    if cost:
        tables.append(_table(
            "Cost: size, memory and speed" + suffix,
            f"Mean \u00b1 half-width of its 95% Student-t interval over seeds (n finished runs; one seed: "
            f"the mean alone). Saved % and slowdown are relative to the "
            f"baseline strategy '{baseline}' at the same settings (closest depth where none matches): "
            f"positive % = less memory; {EM_DASH} = not measured. 'matched': what the model and its baseline "
            "share (parameters, cell evaluations); comparisons of unmatched pairs are shown, never judged.",
            models, cost))
    quality = [c for c in LM_QUALITY + COPY_QUALITY if _has(models, c.field)]
    if _has(models, "val_ppl") or _has(models, "test_ppl"):
        quality = [c for c in quality if c.field not in ("val_loss", "test_loss")]
    solver = [c for c in SOLVER_COLUMNS if _has(models, c.field)]
    if not _has(models, "fwd_rel_res_mean") and _has(models, "fwd_abs_res_mean"):  # only the absolute one measured
        solver.insert(min(1, len(solver)), FWD_ABS_RESIDUAL)
    if quality and (models["learned"].astype(str) != "").any():
        quality = quality + [LEARNED]
    if quality and (models["matched"].astype(str) != "").any():  # a verdict, or why there is none
        quality = quality + [VS_BASELINE]
    if solver and (models["solver_health"].astype(str) != "").any():
        solver = solver + [HEALTH]
    if quality or solver:
        tables.append(_table(
            "Quality and solver behaviour" + suffix,
            f"Final evaluation and equilibrium-solver statistics (DEQ only; {EM_DASH} for other "
            "strategies). Mean \u00b1 half-width of the 95% t-interval over seeds. 'vs baseline': the "
            f"model's {'/'.join(m for m, _ in QUALITY_METRIC.values())} minus the baseline model's, judged "
            "only against a baseline matched in parameters: equal (the 90% interval inside the margin the job "
            "file fixed), better / worse (the 95% interval excludes zero), else inconclusive; 'solver health': "
            "the share of the DEQ's solves that ended above tolerance." + (" 'learned': " + _learned_caption(models) if LEARNED in quality else ""),
            models, quality + solver))
    return tables
