"""Uncertainty over seeds: 95% Student-t intervals of a mean and of a difference of means.

- :func:`mean_ci95`: the half-width t_{0.975, n-1} * s / sqrt(n) of a model's mean over its
  n seeds (n >= 2; one seed has no interval);
- :func:`difference_ci95`: a model's mean minus its baseline's, with Welch's interval
  (unequal variances, Welch-Satterthwaite degrees of freedom);
- :func:`verdict`: "better" / "worse" when the interval excludes zero, "no measurable
  difference" when it covers zero, "one seed: no interval" when either side has a single run.

The t quantiles come from a table (degrees of freedom 1-30, 40, 60, 120, then the normal
1.960); a fractional or untabulated df takes the next lower entry, which widens the
interval a little (conservative), never narrows it.
"""
from __future__ import annotations

import math

# t_{0.975, df}: the two-sided 95% critical value of Student's t
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
         26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
NO_DIFFERENCE = "no measurable difference"
ONE_SEED = "one seed: no interval"


def t_critical(df: float) -> float:
    """t_{0.975, df} from the table, df rounded down to a tabulated value (NaN for df < 1)."""
    if not df >= 1:
        return math.nan
    if df > 120:
        return 1.960 if math.isinf(df) or df >= 1e6 else _T975[120]
    return _T975[max(k for k in _T975 if k <= df)]


def mean_ci95(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of ``n`` values with sample std ``std``."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return t_critical(n - 1) * std / math.sqrt(n)


def difference_ci95(mean: float, std: float, n: int, base_mean: float, base_std: float,
                    base_n: int) -> tuple[float, float]:
    """(mean - base_mean, half-width of Welch's 95% interval); NaN half-width with one seed."""
    diff = mean - base_mean
    if n < 2 or base_n < 2 or not (math.isfinite(std) and math.isfinite(base_std)):
        return diff, math.nan
    a, b = std ** 2 / n, base_std ** 2 / base_n
    se = math.sqrt(a + b)
    if se == 0:
        return diff, 0.0
    denominator = a ** 2 / (n - 1) + b ** 2 / (base_n - 1)
    # Welch-Satterthwaite; variances too small to square (underflow): the pooled df
    df = (a + b) ** 2 / denominator if denominator > 0 else n + base_n - 2
    return diff, t_critical(df) * se


def verdict(diff: float, half: float, higher_is_better: bool) -> str:
    if not math.isfinite(diff):
        return ""
    if not math.isfinite(half):
        return ONE_SEED
    if abs(diff) <= half:
        return NO_DIFFERENCE
    return "better" if (diff > 0) == higher_is_better else "worse"
