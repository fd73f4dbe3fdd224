"""Uncertainty over seeds: Student-t quantiles and the 95% interval of a mean.

- :func:`t_quantile`: Student's t quantile (scipy), the one source of t values in the report
  (the verdicts' Welch intervals use it too, ``harness.report.verdicts``);
- :func:`mean_ci95`: the half-width t_{0.975, n-1} * s / sqrt(n) of a model's mean over its
  n seeds (n >= 2; one seed has no interval).
"""
from __future__ import annotations

import math

from scipy import stats as _sps


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile at probability ``p`` with ``df`` degrees of freedom; NaN for df < 1."""
    return float(_sps.t.ppf(p, df)) if df >= 1 else math.nan


def mean_ci95(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of ``n`` values with sample std ``std``."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return t_quantile(0.975, n - 1) * std / math.sqrt(n)
