"""The DEQ paper's claims (Bai, Kolter, Koltun 2019), judged on this sweep's records.

Each claim gets a verdict ("yes", "no" or "not measured here") and the figure behind it:

- memory: the growth exponent of ``activation_bytes`` against depth,
  log(act(L_max) / act(L_min)) / log(L_max / L_min), over models that differ only in depth
  (same strategy, task, dataset, cell and other grid values): about 0 is flat (< 0.15:
  "flat"), about 1 is linear (> 0.7: "grows with depth"; constant parts of the memory keep
  it a little under 1 at shallow depths);
- quality: a DEQ model's quality minus a weight-tied model's with the same parameter count
  (the same cell), Welch's 95% interval over seeds (``harness.report.stats``): "yes" when
  it covers zero;
- speed: the DEQ's training step time and inference time over the explicit baseline's at
  the same settings, against the paper's 2.82x and 1.76x: "yes" when within a factor of two
  of the paper's figure (this harness's models and devices differ from the paper's);
- memory saving: the DEQ's activation memory saved against the explicit baseline, at the
  deepest baseline, against the paper's 68-88%: "yes" at 68% or more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.report import stats
from harness.report.tables import QUALITY_METRIC, Column, Table
from harness.report.units import format_value, is_missing

NOT_MEASURED = "not measured here"
PAPER_TRAIN_SLOWDOWN, PAPER_INFER_SLOWDOWN = 2.82, 1.76
PAPER_SAVING_PCT = (68.0, 88.0)
FLAT_EXPONENT, LINEAR_EXPONENT = 0.15, 0.7


@dataclass(frozen=True)
class Claim:
    claim: str
    verdict: str
    evidence: str


def _mean(row: pd.Series, metric: str) -> float:
    value = row.get(f"{metric}_mean")
    return math.nan if value is None or is_missing(value) else float(value)


def _depth_series(models: pd.DataFrame, strategy: str, extra: tuple[str, ...]) -> list[pd.DataFrame]:
    """Groups of one strategy's models that differ only in depth (two depths or more)."""
    subset = models[models["strategy"].astype(str) == strategy]
    keys = [k for k in ("task", "dataset", "cell", *extra) if k in subset]
    groups = [g for _, g in subset.groupby([subset[k].astype(str) for k in keys], sort=False)] if keys else [subset]
    return [g.dropna(subset=["depth"]) for g in groups if g["depth"].nunique() >= 2]


def _growth(group: pd.DataFrame) -> tuple[float, str]:
    group = group.dropna(subset=["activation_bytes_mean"]).sort_values("depth")
    if len(group) < 2:
        return math.nan, ""
    lo, hi = group.iloc[0], group.iloc[-1]
    exponent = math.log(hi["activation_bytes_mean"] / lo["activation_bytes_mean"]) / math.log(hi["depth"] / lo["depth"])
    return exponent, (f"exponent {exponent:.2f} over depths {lo['depth']:g}-{hi['depth']:g} "
                      f"({format_value(lo['activation_bytes_mean'], 'bytes')} to "
                      f"{format_value(hi['activation_bytes_mean'], 'bytes')})")


def _memory_claim(models: pd.DataFrame, strategies: tuple[str, ...], extra: tuple[str, ...], claim: str,
                  flat: bool) -> Claim:
    evidence, verdicts = [], []
    for strategy in strategies:
        for group in _depth_series(models, strategy, extra):
            exponent, text = _growth(group)
            if math.isnan(exponent):
                continue
            verdicts.append(exponent < FLAT_EXPONENT if flat else exponent > LINEAR_EXPONENT)
            evidence.append(f"{strategy}: {text}")
    if not verdicts:
        return Claim(claim, NOT_MEASURED, "no strategy in the sweep was run at two depths or more")
    return Claim(claim, "yes" if all(verdicts) else "no", "; ".join(evidence))


def _quality_claim(models: pd.DataFrame) -> Claim:
    claim = "DEQ quality equals a weight-tied stack's at matched parameters (within the seeds' 95% interval)"
    evidence, verdicts = [], []
    for _, deq in models[models["strategy"].astype(str) == "deq"].iterrows():
        metric, higher = QUALITY_METRIC.get(str(deq["task"]), (None, False))
        if metric is None:
            continue
        tied = models[(models["strategy"].astype(str) == "weight_tied") & (models["task"] == deq["task"])
                      & (models["dataset"] == deq["dataset"])
                      & (models["params_non_embedding_mean"] == deq["params_non_embedding_mean"])]
        if tied.empty:
            continue
        other = tied.sort_values("depth").iloc[-1]  # the deepest weight-tied stack of the same cell
        untrained = [str(m["model"]) for m in (deq, other) if str(m.get("learned", "")) == "no"]
        if untrained:  # comparing two guessers says nothing about implicit depth
            evidence.append(f"{deq['model']} vs {other['model']}: not learned ({', '.join(untrained)} no better "
                            "than a context-free guess)")
            continue
        diff, half = stats.difference_ci95(_mean(deq, metric), float(deq[f"{metric}_std"]), int(deq[f"{metric}_n"]),
                                           _mean(other, metric), float(other[f"{metric}_std"]),
                                           int(other[f"{metric}_n"]))
        verdict = stats.verdict(diff, half, higher)
        if verdict in ("", stats.ONE_SEED):
            evidence.append(f"{deq['model']} vs {other['model']}: one seed, no interval")
            continue
        verdicts.append(verdict == stats.NO_DIFFERENCE)
        evidence.append(f"{deq['model']} vs {other['model']}: {metric} {diff:+.3g} \u00b1 {half:.2g} ({verdict})")
    if not verdicts:
        return Claim(claim, NOT_MEASURED, "; ".join(evidence) or "no DEQ and weight-tied models of the same cell")
    return Claim(claim, "yes" if all(verdicts) else "no", "; ".join(evidence))


def _deq_vs_baseline(models: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """(DEQ model, its explicit baseline model) pairs, the baseline from model_frame's matching."""
    by_label = {str(r["model"]): r for _, r in models.iterrows()}
    pairs = []
    for _, deq in models[models["strategy"].astype(str) == "deq"].iterrows():
        base = by_label.get(str(deq.get("baseline_model")))
        if base is not None and str(base["strategy"]) == "explicit":
            pairs.append((deq, base))
    return pairs


def _ratio_claim(models: pd.DataFrame, metric: str, paper: float, what: str) -> Claim:
    claim = f"DEQ {what} is about {paper:g}x an explicit stack's (the paper's figure)"
    ratios = [(d, b, _mean(d, metric) / _mean(b, metric)) for d, b in _deq_vs_baseline(models)
              if _mean(b, metric) > 0 and not math.isnan(_mean(d, metric))]
    if not ratios:
        return Claim(claim, NOT_MEASURED, f"no DEQ model with an explicit baseline that has {metric}")
    ok = all(paper / 2 <= r <= paper * 2 for _, _, r in ratios)
    evidence = "; ".join(f"{d['model']} vs {b['model']}: {r:.2f}x" for d, b, r in ratios)
    return Claim(claim, "yes" if ok else "no", f"{evidence} (yes: within a factor of 2 of {paper:g}x)")


def _saving_claim(models: pd.DataFrame) -> Claim:
    lo, hi = PAPER_SAVING_PCT
    claim = f"A DEQ saves {lo:g}-{hi:g}% of an explicit stack's memory (the paper's figure)"
    pairs = [(d, b) for d, b in _deq_vs_baseline(models) if not is_missing(d.get("activation_saved_pct"))]
    if not pairs:
        return Claim(claim, NOT_MEASURED, "no DEQ model with an explicit baseline and activation memory")
    deq, base = max(pairs, key=lambda p: float(p[1]["depth"]) if not is_missing(p[1]["depth"]) else -1.0)
    saved = float(deq["activation_saved_pct"])
    return Claim(claim, "yes" if saved >= lo else "no",
                 f"{deq['model']} vs {base['model']} (the deepest baseline): activation memory {saved:+.1f}% saved")


def check_claims(models: pd.DataFrame, extra_fields: tuple[str, ...] = ()) -> list[Claim]:
    if models.empty:
        return []
    return [
        _memory_claim(models, ("deq",), extra_fields, "Activation memory of a DEQ is flat in depth (max_iter)",
                      flat=True),
        _memory_claim(models, ("neural_ode",), extra_fields,
                      "Activation memory of a Neural ODE with the adjoint is flat in depth (steps)", flat=True),
        _memory_claim(models, ("weight_tied", "explicit"), extra_fields,
                      "Activation memory of weight-tied and explicit stacks grows with depth (about linearly)",
                      flat=False),
        _quality_claim(models),
        _ratio_claim(models, "step_time_s", PAPER_TRAIN_SLOWDOWN, "training step time"),
        _ratio_claim(models, "infer_time_s", PAPER_INFER_SLOWDOWN, "inference time"),
        _saving_claim(models),
    ]


def claims_table(models: pd.DataFrame, extra_fields: tuple[str, ...] = ()) -> Table | None:
    claims = check_claims(models, extra_fields)
    if not claims:
        return None
    columns = [Column("claim", "claim", "text", "a claim of Bai, Kolter and Koltun (2019)"),
               Column("verdict", "verdict", "text", "yes / no / not measured here, on this sweep's records"),
               Column("evidence", "evidence", "text", "the figure behind the verdict")]
    return Table("Claims check: the DEQ paper on this sweep",
                 "Each claim of the DEQ paper judged on this sweep's records, with the figure behind the verdict "
                 "(rules in harness/report/claims.py). The paper's models, data and devices differ from a "
                 "quick sweep's; a 'no' on a tiny CPU sweep says what this sweep measured, not that the paper "
                 "is wrong.", columns, [[c.claim, c.verdict, c.evidence] for c in claims])
