"""Verdicts a reviewer accepts: matched pairs, equivalence within a margin, an interval on
every ratio, solver health beside quality. The rules, in words, are in docs/verdicts.md.

- **Pairs** (:func:`find_pair`): a verdict compares a model only with a baseline of the same
  task, dataset and cell that is *matched in parameters* (non-embedding counts within
  ``compare.param_tolerance_pct``); among those it takes the one closest in forward cell
  evaluations (nfe), and says whether that is within ``compare.nfe_tolerance_pct`` too. A
  job file's ``compare.pairs`` names pairs outright; they are used as named and their
  match is still reported. A model with no matched baseline stays in the tables, marked
  "unmatched", and no verdict uses it.
- **Equivalence** (:func:`quality_verdict`): "equal" only when the 90% Welch interval of
  the difference lies inside +-margin (two one-sided tests at 5%), the margin fixed in the
  job file before the data (``compare.ppl_margin_pct`` of the baseline's val ppl, or
  ``compare.acc_margin_pts`` points of recall); "better" / "worse" when the 95% interval
  excludes zero; otherwise "inconclusive", with about how many seeds per model the
  observed spread would need. One seed: inconclusive, no interval.
- **Ratios** (:func:`pair_ratio`): over seeds when both models have two or more, the ratio of
  the means with a 95% interval (delta method on the logs, Welch's t,
  :func:`ratio_interval`); with one seed each, the ratio of the two runs' medians (the
  figure their summaries record) with a 95% bootstrap interval over their recorded per-step
  (or per-batch) times (:func:`median_ratio_interval`), which shows the noise within the
  runs only, and says so. Compared with a published figure by whether the interval contains it:
  consistent / lower / higher.
- **Solver health** (:func:`solver_health`): the share of a DEQ's forward and backward
  solves that ended above tolerance (at max_iter), flagged above ``UNCONVERGED_FLAG``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from harness.records.compare import CompareSettings, model_name
from harness.report.stats import t_quantile
from harness.report.units import is_missing

EQUAL, BETTER, WORSE, INCONCLUSIVE = "equal", "better", "worse", "inconclusive"
CONSISTENT, LOWER, HIGHER = "consistent", "lower", "higher"
UNCONVERGED_FLAG = 0.01          # more than 1% of the solves above tol: flagged
QUALITY_METRIC = {"lm": ("val_ppl", False), "copy": ("val_acc", True)}   # task -> (figure, higher is better)
Z_ALPHA, Z_POWER = 1.645, 0.842  # one-sided 5% test, 80% power: the seeds estimate's normal quantiles
Z_TWO_SIDED = 1.960


def _value(row: pd.Series, field: str) -> float:
    value = row.get(field)
    return math.nan if value is None or is_missing(value) else float(value)


def _mean(row: pd.Series, metric: str) -> float:
    return _value(row, f"{metric}_mean")


# --- pairs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """A model and the baseline a verdict compares it with, and how well they are matched."""

    model: pd.Series
    base: pd.Series
    params_ratio: float   # baseline / model, non-embedding parameters
    nfe_ratio: float      # baseline / model, forward cell evaluations
    params_matched: bool
    nfe_matched: bool
    named: bool           # named in the job file's compare.pairs

    @property
    def label(self) -> str:
        return f"{self.model['model']} vs {self.base['model']}"

    def matched_text(self) -> str:
        """'params 1.00x, nfe 11.8 vs 12': what the pair is matched on, in figures (model first)."""
        parts = [f"params {self.params_ratio:.2f}\u00d7" + ("" if self.params_matched else " (unmatched)")]
        if not math.isnan(self.nfe_ratio):
            parts.append(f"nfe {_mean(self.model, 'nfe'):.3g} vs {_mean(self.base, 'nfe'):.3g}"
                         + ("" if self.nfe_matched else " (unmatched)"))
        return ", ".join(parts) + ("; named in the job file" if self.named else "")

    def matched_on(self) -> str:
        """'parameters and cell evaluations' / 'parameters' / 'unmatched (params 4.00x)'."""
        if not self.params_matched:
            return f"unmatched (params {self.params_ratio:.2f}\u00d7)"
        return "parameters and cell evaluations" if self.nfe_matched else "parameters"


def _ratio(a: float, b: float) -> float:
    return b / a if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _within(ratio: float, tolerance_pct: float) -> bool:
    return math.isfinite(ratio) and abs(math.log(ratio)) <= math.log1p(tolerance_pct / 100.0) + 1e-12


def make_pair(model: pd.Series, base: pd.Series, settings: CompareSettings, named: bool = False) -> Pair:
    params = _ratio(_mean(model, "params_non_embedding"), _mean(base, "params_non_embedding"))
    nfe = _ratio(_mean(model, "nfe"), _mean(base, "nfe"))
    return Pair(model, base, params, nfe, _within(params, settings.param_tolerance_pct),
                _within(nfe, settings.nfe_tolerance_pct), named)


def model_names(data) -> dict[str, str]:
    """model_key -> the model's name (its first run's name without the seed label)."""
    out: dict[str, str] = {}
    for _, run in data.runs.iterrows():
        out.setdefault(run["model_key"], model_name(run.get("name"), run.get("seed")))
    return out


def _same_setting(row: pd.Series, candidates: pd.DataFrame) -> pd.DataFrame:
    for field in ("task", "dataset", "data_setting", "cell"):
        if field in candidates and field in row:
            candidates = candidates[[str(c) == str(row[field]) for c in candidates[field]]]
    return candidates


def find_pair(model: pd.Series, models: pd.DataFrame, strategies: tuple[str, ...], settings: CompareSettings,
              names: dict[str, str]) -> tuple[Pair | None, Pair | None]:
    """(the matched pair, the closest unmatched candidate) of ``model`` against a model of one of
    ``strategies``. A pair the job file names for this model wins; otherwise the candidates of
    the same task, data (``data_setting``) and cell, matched in parameters, closest in nfe (then deeper)."""
    own = names.get(model["model_key"])
    by_name = {names.get(r["model_key"]): r for _, r in models.iterrows()}
    for pair in settings.pairs:
        base = by_name.get(pair.baseline)
        if pair.model == own and base is not None and str(base["strategy"]) in strategies:
            made = make_pair(model, base, settings, named=True)
            return made, None
    candidates = models[models["strategy"].astype(str).isin(strategies)
                        & (models["model_key"] != model["model_key"])]
    pairs = [make_pair(model, c, settings) for _, c in _same_setting(model, candidates).iterrows()]
    if not pairs:
        return None, None

    def closeness(p: Pair) -> tuple:
        nfe = abs(math.log(p.nfe_ratio)) if math.isfinite(p.nfe_ratio) else math.inf
        depth = _value(p.base, "depth")
        return (nfe, -(depth if math.isfinite(depth) else -math.inf), str(p.base["model"]))

    matched = sorted((p for p in pairs if p.params_matched), key=closeness)
    if matched:
        return matched[0], None
    params = lambda p: abs(math.log(p.params_ratio)) if math.isfinite(p.params_ratio) else math.inf  # noqa: E731
    return None, min(pairs, key=lambda p: (params(p), closeness(p)))


# --- equivalence -------------------------------------------------------------------------------

@dataclass(frozen=True)
class QualityVerdict:
    verdict: str          # equal / better / worse / inconclusive
    metric: str
    diff: float           # model - baseline
    ci90: tuple[float, float]
    ci95: tuple[float, float]
    margin: float         # absolute, in the metric's units
    seeds_needed: int | None   # inconclusive: about how many seeds per model would decide
    note: str = ""

    def text(self) -> str:
        scale, unit = (100.0, " pp") if self.metric == "val_acc" else (1.0, "")
        diff = f"{scale * self.diff:+.3g}{unit}"
        margin = f"margin \u00b1{scale * self.margin:.3g}{unit}"
        if any(math.isnan(v) for v in self.ci90):
            return f"{self.verdict}: {self.metric} {diff}, {self.note or 'no interval'} ({margin})"
        lo, hi = (scale * v for v in self.ci90)
        out = f"{self.verdict}: {self.metric} {diff}, 90% CI [{lo:+.3g}, {hi:+.3g}]{unit}, {margin}"
        if self.seeds_needed:
            out += f"; about {self.seeds_needed} seeds per model would decide at this spread"
        return out + (f"; {self.note}" if self.note else "")


def margin_of(metric: str, base_mean: float, settings: CompareSettings) -> float:
    """The equivalence margin in the metric's units: a % of the baseline's ppl, or points of recall."""
    if metric == "val_acc":
        return settings.acc_margin_pts / 100.0
    return settings.ppl_margin_pct / 100.0 * abs(base_mean)


def _welch(mean: float, std: float, n: int, base_mean: float, base_std: float,
           base_n: int) -> tuple[float, float, float]:
    """(difference, its standard error, Welch-Satterthwaite df); NaN se with one seed."""
    diff = mean - base_mean
    if n < 2 or base_n < 2 or not (math.isfinite(std) and math.isfinite(base_std)):
        return diff, math.nan, math.nan
    a, b = std ** 2 / n, base_std ** 2 / base_n
    se = math.sqrt(a + b)
    denominator = a ** 2 / (n - 1) + b ** 2 / (base_n - 1)
    df = (a + b) ** 2 / denominator if denominator > 0 else n + base_n - 2
    return diff, se, df


def seeds_needed(diff: float, pooled_sd: float, margin: float) -> int | None:
    """About how many seeds per model would decide, at the observed difference and spread (normal
    approximation, 80% power): for equivalence when |diff| < margin, else to show the difference."""
    if not (math.isfinite(pooled_sd) and pooled_sd > 0):
        return None
    room = margin - abs(diff)
    if room > 0:
        n = 2 * pooled_sd ** 2 * (Z_ALPHA + Z_POWER) ** 2 / room ** 2
    elif diff != 0:
        n = 2 * pooled_sd ** 2 * (Z_TWO_SIDED + Z_POWER) ** 2 / diff ** 2
    else:
        return None
    return max(2, math.ceil(n))


def equivalence(mean: float, std: float, n: int, base_mean: float, base_std: float, base_n: int,
                margin: float, higher_is_better: bool, metric: str) -> QualityVerdict:
    """The quality verdict of a model against its baseline (module docstring)."""
    diff, se, df = _welch(mean, std, n, base_mean, base_std, base_n)
    nan2 = (math.nan, math.nan)
    if not math.isfinite(diff):
        return QualityVerdict(INCONCLUSIVE, metric, diff, nan2, nan2, margin, None, "not measured")
    if math.isnan(se):
        return QualityVerdict(INCONCLUSIVE, metric, diff, nan2, nan2, margin, None,
                              f"one seed (n={n} and {base_n}): no interval")
    if se == 0:
        ci90 = ci95 = (diff, diff)
    else:
        t90, t95 = t_quantile(0.95, df), t_quantile(0.975, df)
        ci90, ci95 = (diff - t90 * se, diff + t90 * se), (diff - t95 * se, diff + t95 * se)
    if -margin < ci90[0] and ci90[1] < margin:
        note = "the difference is significant but inside the margin" if ci95[0] > 0 or ci95[1] < 0 else ""
        return QualityVerdict(EQUAL, metric, diff, ci90, ci95, margin, None, note)
    if ci95[0] > 0 or ci95[1] < 0:
        return QualityVerdict(BETTER if (diff > 0) == higher_is_better else WORSE, metric, diff, ci90, ci95,
                              margin, None)
    pooled = math.sqrt((std ** 2 + base_std ** 2) / 2)
    return QualityVerdict(INCONCLUSIVE, metric, diff, ci90, ci95, margin, seeds_needed(diff, pooled, margin))


def quality_verdict(model: pd.Series, base: pd.Series, settings: CompareSettings) -> QualityVerdict | None:
    """The equivalence verdict of two model-frame rows on their task's quality figure."""
    metric, higher = QUALITY_METRIC.get(str(model.get("task")), (None, False))
    if metric is None or f"{metric}_mean" not in model or f"{metric}_mean" not in base:
        return None
    base_mean = _mean(base, metric)

    def count(row: pd.Series) -> int:
        n = _value(row, f"{metric}_n")
        return int(n) if math.isfinite(n) else 0

    return equivalence(_mean(model, metric), _value(model, f"{metric}_std"), count(model),
                       base_mean, _value(base, f"{metric}_std"), count(base),
                       margin_of(metric, base_mean, settings), higher, metric)


# --- ratios ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    value: float
    lo: float
    hi: float
    basis: str

    def text(self) -> str:
        if math.isnan(self.lo):
            return f"{self.value:.2f}\u00d7 ({self.basis})"
        if self.lo == self.hi:
            return f"{self.value:.2f}\u00d7 ({self.basis})"
        return f"{self.value:.2f}\u00d7 [{self.lo:.2f}, {self.hi:.2f}] ({self.basis})"

    def against(self, paper: float) -> str:
        """consistent / lower / higher: where the paper's figure lies against the interval."""
        if math.isnan(self.lo):
            return INCONCLUSIVE
        if self.hi < paper:
            return LOWER
        if self.lo > paper:
            return HIGHER
        return CONSISTENT


def ratio_interval(values: list[float], base_values: list[float], basis: str) -> Ratio:
    """Ratio of the means of ``values`` and ``base_values`` (one value per seed) with a 95%
    interval: the delta method on the log of each mean, Welch's t (NaN bounds with fewer than
    two values on a side)."""
    a = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    b = [float(v) for v in base_values if v is not None and math.isfinite(v) and v > 0]
    if not a or not b:
        return Ratio(math.nan, math.nan, math.nan, "not measured")
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    value = mean_a / mean_b
    if len(a) < 2 or len(b) < 2:
        return Ratio(value, math.nan, math.nan, basis + ": fewer than two values, no interval")
    sd_a = math.sqrt(sum((x - mean_a) ** 2 for x in a) / (len(a) - 1)) / mean_a  # of log(mean), to first order
    sd_b = math.sqrt(sum((x - mean_b) ** 2 for x in b) / (len(b) - 1)) / mean_b
    diff, se, df = _welch(math.log(mean_a), sd_a, len(a), math.log(mean_b), sd_b, len(b))
    if se == 0:
        return Ratio(value, value, value, basis)
    half = t_quantile(0.975, df) * se
    return Ratio(value, math.exp(diff - half), math.exp(diff + half), basis)


def median_ratio_interval(samples: list[float], base_samples: list[float], basis: str,
                          resamples: int = 2000) -> Ratio:
    """Ratio of the medians of two runs' per-step (per-batch) times, the figure the summaries
    record, with a 95% percentile bootstrap interval (each run resampled on its own; a fixed
    seed, so a report is the same when rebuilt)."""
    import numpy as np

    a = np.asarray([v for v in samples if math.isfinite(v) and v > 0], dtype=float)
    b = np.asarray([v for v in base_samples if math.isfinite(v) and v > 0], dtype=float)
    if len(a) < 2 or len(b) < 2:
        return Ratio(math.nan, math.nan, math.nan, "not measured")
    value = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(0)
    boot = (np.median(rng.choice(a, (resamples, len(a))), axis=1)
            / np.median(rng.choice(b, (resamples, len(b))), axis=1))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return Ratio(value, float(min(lo, value)), float(max(hi, value)), basis)


SAMPLES = {"step_time_s": "step_times_s", "infer_time_s": "infer_times_s"}
SAMPLE_WORDS = {"step_time_s": "step times", "infer_time_s": "validation-batch inference times"}


def _runs_of(data, row: pd.Series) -> pd.DataFrame:
    finished = data.finished
    return finished[finished["model_key"] == row["model_key"]]


def _samples(data, runs: pd.DataFrame, metric: str) -> list[float]:
    """Every recorded per-step (per-batch) value of ``metric`` in ``runs``; for step times of
    runs recorded before ``step_times_s`` existed, the train lines' step-time means (each
    run's first line, which holds the warm-up, left out)."""
    out: list[float] = []
    column = SAMPLES.get(metric)
    for _, run in runs.iterrows():
        values = run.get(column) if column else None
        if isinstance(values, (list, tuple)) and values:
            out += [float(v) for v in values if isinstance(v, (int, float))]
        elif metric == "step_time_s" and len(data.metrics) and "step_time_s" in data.metrics:
            lines = data.metrics[(data.metrics["run_id"] == run["run_id"]) & (data.metrics["kind"] == "train")]
            out += [float(v) for v in lines["step_time_s"].dropna().tolist()[1:]]
    return out


def pair_ratio(data, pair: Pair, metric: str) -> Ratio:
    """``metric`` of the pair's model over its baseline's, with the 95% interval: over seeds when
    both models have two or more, else over the runs' per-step (per-batch) records."""
    runs, base_runs = _runs_of(data, pair.model), _runs_of(data, pair.base)
    per_seed = [pd.to_numeric(r[metric], errors="coerce").dropna().tolist() for r in (runs, base_runs)]
    if metric == "activation_bytes":  # counted, not timed: the same on every seed
        ratio = ratio_interval(*per_seed, "counted bytes, no sampling noise")
        return Ratio(ratio.value, ratio.value, ratio.value, "counted bytes, no sampling noise")
    if min(len(v) for v in per_seed) >= 2:
        return ratio_interval(*per_seed, f"over seeds, n={len(per_seed[0])} and {len(per_seed[1])}")
    samples = [_samples(data, r, metric) for r in (runs, base_runs)]
    if min(len(s) for s in samples) >= 2:
        return median_ratio_interval(*samples, f"one seed: median ratio, bootstrap over {len(samples[0])} and "
                                               f"{len(samples[1])} recorded {SAMPLE_WORDS.get(metric, metric)} "
                                               "of the runs, noise within runs only")
    return ratio_interval(*per_seed, "one seed" if min(len(v) for v in per_seed) < 2 else "over seeds")


def time_split(row: pd.Series) -> str:
    """Where a step's time goes: 'fwd 12 ms (solver 9) + bwd 8 + opt 3 = 23 ms'."""
    step, fwd, bwd = (_mean(row, k) for k in ("step_time_s", "fwd_time_s", "bwd_time_s"))
    if not all(math.isfinite(v) for v in (step, fwd, bwd)):
        return ""
    solver = _mean(row, "solver_time_s")
    ms = lambda v: f"{1000 * v:.3g}"  # noqa: E731
    inner = f" (solver {ms(solver)})" if math.isfinite(solver) else ""
    return f"fwd {ms(fwd)}{inner} + bwd {ms(bwd)} + opt {ms(max(step - fwd - bwd, 0.0))} = {ms(step)} ms"


# --- solver health -----------------------------------------------------------------------------

def solver_health(row: pd.Series) -> tuple[bool, str]:
    """(flagged, text) for a DEQ model: the share of its solves that ended above tolerance.
    Records without the share: flagged when the forward solve ran to max_iter on average."""
    if str(row.get("strategy")) != "deq":
        return False, ""
    fwd, bwd = _mean(row, "fwd_unconverged_frac"), _mean(row, "bwd_unconverged_frac")
    if math.isfinite(fwd):
        parts = [f"fwd {100 * fwd:.3g}%"] + ([f"bwd {100 * bwd:.3g}%"] if math.isfinite(bwd) else [])
        flagged = fwd > UNCONVERGED_FLAG or (math.isfinite(bwd) and bwd > UNCONVERGED_FLAG)
        return flagged, ("unconverged: " if flagged else "converged: ") + ", ".join(parts) + " of solves above tol"
    nstep, depth = _mean(row, "fwd_nstep_mean"), _value(row, "depth")
    if math.isfinite(nstep) and math.isfinite(depth) and depth > 0:
        if nstep >= 0.95 * depth:
            return True, f"unconverged: forward solves at max_iter ({nstep:.3g} of {depth:g} iterations on average)"
        return False, f"forward {nstep:.3g} of {depth:g} iterations on average"
    return False, ""
