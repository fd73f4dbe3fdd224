"""harness.report.stats: Student-t quantiles and the 95% interval of a mean over seeds (the
verdicts built on them are tested in tests/test_verdicts.py)."""
from __future__ import annotations

import math
import statistics

from harness.report import stats


def test_t_quantiles():
    assert round(stats.t_quantile(0.975, 1), 3) == 12.706 and round(stats.t_quantile(0.975, 4), 3) == 2.776
    assert round(stats.t_quantile(0.95, 10), 3) == 1.812  # the 90% two-sided value the equivalence test uses
    # a fractional Welch df is used as it is: between its neighbours' values, not rounded to one
    assert stats.t_quantile(0.975, 5) < stats.t_quantile(0.975, 4.5) < stats.t_quantile(0.975, 4)
    assert round(stats.t_quantile(0.975, 4.5), 3) == 2.659
    assert math.isnan(stats.t_quantile(0.975, 0.5))


def test_mean_interval_of_five_values():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    half = stats.mean_ci95(statistics.stdev(values), len(values))
    assert math.isclose(half, stats.t_quantile(0.975, 4) * statistics.stdev(values) / math.sqrt(5))
    assert math.isclose(half, 2.776 * statistics.stdev(values) / math.sqrt(5), rel_tol=1e-3)
    assert math.isnan(stats.mean_ci95(0.3, 1))
