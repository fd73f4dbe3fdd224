"""The DEQ paper's claims (Bai, Kolter, Koltun 2019), judged on this sweep's records with the
rules of ``harness.report.verdicts`` (docs/verdicts.md), each with the figure behind it:

- memory against depth: the growth exponent of ``activation_bytes`` in depth,
  log(act(L_max) / act(L_min)) / log(L_max / L_min), over models that differ only in depth
  (same strategy, task, dataset, cell and other grid values); bytes are counted, not timed,
  so the exponent has no sampling noise. "yes" (flat) under 0.15; "yes" (grows) over 0.7
  (constant parts of the memory keep it under 1 at shallow depths). With three depths or
  more the evidence adds the least-squares growth in bytes per unit of depth with its 95%
  interval;
- quality: each DEQ model against the weight-tied stack matched in parameters (closest in
  cell evaluations), equivalence within the job file's margin: equal / better / worse /
  inconclusive (with the seeds that would decide);
- speed: step and inference time of each DEQ model over the explicit stack matched in
  parameters, a ratio with its 95% interval, against the paper's 2.82x and 1.76x:
  consistent (the interval contains it) / lower / higher; where the step's time goes
  (forward, of which the solver; backward; optimizer) beside it;
- the solver's own cost: each DEQ's step time over the weight-tied stack matched in parameters
  and cell evaluations (no paper figure): slower / faster / no difference shown;
- memory saving: activation memory saved against the explicit stack matched in parameters,
  against the paper's 68-88%: within / below / above, naming DEQ variants that use more
  memory than their stack.

A verdict that rests on a DEQ whose solves ended above tolerance says so. A pair that is
not matched is named with its mismatch and not judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.records.compare import read_compare
from harness.report import verdicts
from harness.report.data import SweepData
from harness.report.tables import Column, Table
from harness.report.verdicts import Pair
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
    keys = [k for k in ("task", "dataset", "cell", "depth_series", *extra) if k in subset
            and not (k in extra and "depth_series" in subset and subset["depth_series"].astype(str).ne("").all())]
    groups = [g for _, g in subset.groupby([subset[k].astype(str) for k in keys], sort=False)] if keys else [subset]
    return [g.dropna(subset=["depth"]) for g in groups if g["depth"].nunique() >= 2]


def _growth(group: pd.DataFrame) -> tuple[float, str]:
    """(exponent, text): log(bytes(L_max) / bytes(L_min)) / log(L_max / L_min), exact for counted
    bytes; with three depths or more, also the least-squares growth in bytes per unit of depth
    (bytes = a + b * depth) with its 95% interval, which says how well a straight line fits."""
    group = group.dropna(subset=["activation_bytes_mean"]).sort_values("depth")
    group = group[(group["activation_bytes_mean"] > 0) & (group["depth"] > 0)]
    if group["depth"].nunique() < 2:
        return math.nan, ""
    first, last = group.iloc[0], group.iloc[-1]
    exponent = (math.log(last["activation_bytes_mean"] / first["activation_bytes_mean"])
                / math.log(last["depth"] / first["depth"]))
    text = (f"exponent {exponent:.2f} over depths {first['depth']:g}-{last['depth']:g} "
            f"({format_value(first['activation_bytes_mean'], 'bytes')} to "
            f"{format_value(last['activation_bytes_mean'], 'bytes')})")
    x, y = [float(d) for d in group["depth"]], [float(b) for b in group["activation_bytes_mean"]]
    if len(set(x)) >= 3:
        mx, my = sum(x) / len(x), sum(y) / len(y)
        sxx = sum((a - mx) ** 2 for a in x)
        slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
        resid = sum((b - my - slope * (a - mx)) ** 2 for a, b in zip(x, y))
        half = verdicts.t_quantile(0.975, len(x) - 2) * math.sqrt(resid / (len(x) - 2) / sxx)
        text += (f"; linear fit over {len(x)} depths: {format_value(slope, 'bytes')} per unit of depth, 95% CI "
                 f"[{format_value(slope - half, 'bytes')}, {format_value(slope + half, 'bytes')}]")
    return exponent, text


def _memory_claim(models: pd.DataFrame, strategies: tuple[str, ...], extra: tuple[str, ...], claim: str,
                  flat: bool) -> Claim:
    evidence, holds = [], []
    for strategy in strategies:
        for group in _depth_series(models, strategy, extra):
            exponent, text = _growth(group)
            if math.isnan(exponent):
                continue
            holds.append(exponent < FLAT_EXPONENT if flat else exponent > LINEAR_EXPONENT)
            evidence.append(f"{strategy}: {text}")
    if not holds:
        return Claim(claim, NOT_MEASURED, "no strategy in the sweep was run at two depths or more")
    return Claim(claim, "yes" if all(holds) else "no", "; ".join(evidence))


def _learned_no(*rows: pd.Series) -> list[str]:
    return [str(m["model"]) for m in rows if str(m.get("learned", "")) == "no"]


def _health_note(pair: Pair) -> str:
    """' [rests on unconverged solves: ...]' when the pair's DEQ solves ended above tol."""
    flagged, text = verdicts.solver_health(pair.model)
    return f" [rests on unconverged solves: {text.removeprefix('unconverged: ')}]" if flagged else ""


def _summarise(words: list[str]) -> str:
    """One verdict for a claim judged on several pairs: the common word, else 'mixed: ...'."""
    unique = list(dict.fromkeys(words))
    return unique[0] if len(unique) == 1 else "mixed: " + ", ".join(unique)


def _deq_pairs(data: SweepData, models: pd.DataFrame, strategies: tuple[str, ...]
               ) -> tuple[list[Pair], list[str]]:
    """(matched pairs of every DEQ model against ``strategies``, notes on DEQ models without one)."""
    settings, _ = read_compare(data.meta)
    names = verdicts.model_names(data)
    pairs, notes = [], []
    for _, deq in models[models["strategy"].astype(str) == "deq"].iterrows():
        pair, closest = verdicts.find_pair(deq, models, strategies, settings, names)
        if pair is not None and pair.params_matched:
            pairs.append(pair)
        elif closest is not None:
            notes.append(f"{closest.label}: not judged, {closest.matched_on()}")
    return pairs, notes


def _quality_claim(data: SweepData, models: pd.DataFrame) -> Claim:
    settings, source = read_compare(data.meta)
    tasks = set(models["task"].astype(str))
    margins = [text for task, text in (("lm", f"\u00b1{settings.ppl_margin_pct:g}% of val ppl"),
                                       ("copy", f"\u00b1{settings.acc_margin_pts:g} points of recall"))
               if task in tasks]
    claim = ("DEQ quality equals a weight-tied stack's at matched parameters (equivalence: the 90% interval "
             f"inside {' / '.join(margins) or 'the margin'}, margins from the {source})")
    pairs, evidence = _deq_pairs(data, models, ("weight_tied",))
    words = []
    for pair in pairs:
        untrained = _learned_no(pair.model, pair.base)
        if untrained:  # comparing two guessers says nothing about implicit depth
            evidence.append(f"{pair.label}: not learned ({', '.join(untrained)} no better than a context-free guess)")
            continue
        verdict = verdicts.quality_verdict(pair.model, pair.base, settings)
        if verdict is None:
            continue
        words.append(verdict.verdict)
        evidence.append(f"{pair.label} [{pair.matched_text()}]: {verdict.text()}{_health_note(pair)}")
    if not words:
        return Claim(claim, NOT_MEASURED, "; ".join(evidence) or "no DEQ and weight-tied models matched in parameters")
    return Claim(claim, _summarise(words), "; ".join(evidence))


def _ratio_claim(data: SweepData, models: pd.DataFrame, metric: str, paper: float, what: str) -> Claim:
    claim = (f"DEQ {what} is about {paper:g}x an explicit stack's matched in parameters (the paper's figure, "
             "judged by whether the 95% interval of the ratio contains it)")
    pairs, evidence = _deq_pairs(data, models, ("explicit",))
    words = []
    for pair in pairs:
        ratio = verdicts.pair_ratio(data, pair, metric)
        if math.isnan(ratio.value):
            evidence.append(f"{pair.label}: {metric} not measured")
            continue
        words.append(ratio.against(paper))
        split = ""
        if metric == "step_time_s":
            split = f"; DEQ {verdicts.time_split(pair.model)}; explicit {verdicts.time_split(pair.base)}"
        evidence.append(f"{pair.label} [{pair.matched_text()}]: {ratio.text()}: {words[-1]} with {paper:g}x"
                        f"{split}{_health_note(pair)}")
    if not words:
        return Claim(claim, NOT_MEASURED, "; ".join(evidence) or f"no DEQ model with an explicit stack matched in "
                                                                 f"parameters that has {metric}")
    return Claim(claim, _summarise(words), "; ".join(evidence))


def _solver_cost_claim(data: SweepData, models: pd.DataFrame) -> Claim:
    """What the root solver itself costs: the DEQ's step time against the weight-tied stack of
    the same cell at about its cell evaluations (no paper figure: a measurement, with its interval)."""
    claim = ("A DEQ's training step costs about what a weight-tied stack matched in parameters and cell "
             "evaluations costs (the solver's own price; slower / faster when the 95% interval excludes 1)")
    pairs, evidence = _deq_pairs(data, models, ("weight_tied",))
    words = []
    for pair in pairs:
        if not pair.nfe_matched:
            evidence.append(f"{pair.label}: not judged, cell evaluations unmatched ({pair.matched_text()})")
            continue
        ratio = verdicts.pair_ratio(data, pair, "step_time_s")
        if math.isnan(ratio.value):
            continue
        word = verdicts.INCONCLUSIVE if math.isnan(ratio.lo) else (
            "slower" if ratio.lo > 1 else "faster" if ratio.hi < 1 else "no difference shown")
        words.append(word)
        evidence.append(f"{pair.label} [{pair.matched_text()}]: {ratio.text()}: {word}; DEQ "
                        f"{verdicts.time_split(pair.model)}; weight-tied {verdicts.time_split(pair.base)}"
                        f"{_health_note(pair)}")
    if not words:
        return Claim(claim, NOT_MEASURED, "; ".join(evidence) or "no DEQ and weight-tied stack matched in "
                                                                 "parameters and cell evaluations")
    return Claim(claim, _summarise(words), "; ".join(evidence))


def _saving_claim(data: SweepData, models: pd.DataFrame) -> Claim:
    lo, hi = PAPER_SAVING_PCT
    claim = (f"A DEQ saves {lo:g}-{hi:g}% of the activation memory of an explicit stack matched in parameters "
             "(the paper's range, both ends)")
    pairs, evidence = _deq_pairs(data, models, ("explicit",))
    words, less = [], []
    for pair in pairs:
        ratio = verdicts.pair_ratio(data, pair, "activation_bytes")
        if math.isnan(ratio.value):
            continue
        saved = 100.0 * (1.0 - ratio.value)
        words.append("within" if lo <= saved <= hi else ("below" if saved < lo else "above"))
        evidence.append(f"{pair.label} [{pair.matched_text()}]: {saved:+.1f}% saved (counted bytes): {words[-1]} "
                        f"{lo:g}-{hi:g}%")
        if saved < 0:
            less.append(str(pair.model["model"]))
    if less:
        evidence.append("saving less than nothing (more activation memory than the stack): " + ", ".join(less))
    if not words:
        return Claim(claim, NOT_MEASURED, "; ".join(evidence) or "no DEQ model with an explicit stack matched in "
                                                                 "parameters and activation memory")
    return Claim(claim, _summarise(words), "; ".join(evidence))


def check_claims(data: SweepData, models: pd.DataFrame) -> list[Claim]:
    if models.empty:
        return []
    extra_fields = data.extra_fields
    return [
        _memory_claim(models, ("deq",), extra_fields, "Activation memory of a DEQ is flat in depth (max_iter)",
                      flat=True),
        _memory_claim(models, ("neural_ode",), extra_fields,
                      "Activation memory of a Neural ODE with the adjoint is flat in depth (steps)", flat=True),
        _memory_claim(models, ("weight_tied", "explicit"), extra_fields,
                      "Activation memory of weight-tied and explicit stacks grows with depth (about linearly)",
                      flat=False),
        _quality_claim(data, models),
        _ratio_claim(data, models, "step_time_s", PAPER_TRAIN_SLOWDOWN, "training step time"),
        _ratio_claim(data, models, "infer_time_s", PAPER_INFER_SLOWDOWN, "inference time"),
        _solver_cost_claim(data, models),
        _saving_claim(data, models),
    ]


def claims_table(data: SweepData, models: pd.DataFrame) -> Table | None:
    claims = check_claims(data, models)
    if not claims:
        return None
    columns = [Column("claim", "claim", "text", "a claim of Bai, Kolter and Koltun (2019)"),
               Column("verdict", "verdict", "text",
                      "memory: yes / no; quality: equal / better / worse / inconclusive; ratios against "
                      "the paper: consistent / lower / higher; the solver's cost: slower / faster / no "
                      "difference shown; saving: within / below / above; or not measured here"),
               Column("evidence", "evidence", "text", "the figure behind the verdict")]
    return Table("Claims check: the DEQ paper on this sweep",
                 "Each claim of the DEQ paper judged on this sweep's records, with the figure behind the verdict "
                 "(rules in docs/verdicts.md). The paper's models, data and devices differ from a "
                 "quick sweep's; a verdict on a tiny CPU sweep says what this sweep measured, not whether the "
                 "paper is right. Only pairs matched in parameters are judged; the evidence names what each pair "
                 "is matched on.", columns, [[c.claim, c.verdict, c.evidence] for c in claims])
