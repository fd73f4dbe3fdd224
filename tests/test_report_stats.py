"""harness.report.stats: 95% t-intervals over seeds and the verdicts the report prints."""
from __future__ import annotations

import math
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.report import stats


def test_t_quantiles_from_the_table_round_df_down():
    assert stats.t_critical(1) == 12.706 and stats.t_critical(4) == 2.776 and stats.t_critical(30) == 2.042
    assert stats.t_critical(4.9) == 2.776  # fractional Welch df: the next lower entry (wider)
    assert stats.t_critical(45) == 2.021 and stats.t_critical(1e9) == 1.960
    assert math.isnan(stats.t_critical(0.5))


def test_mean_interval_of_five_values():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    half = stats.mean_ci95(statistics.stdev(values), len(values))
    assert math.isclose(half, 2.776 * statistics.stdev(values) / math.sqrt(5))
    assert math.isnan(stats.mean_ci95(0.3, 1))


def _diff(a: list[float], b: list[float]) -> tuple[float, float]:
    return stats.difference_ci95(statistics.mean(a), statistics.stdev(a), len(a),
                                 statistics.mean(b), statistics.stdev(b), len(b))


def test_verdicts():
    apart = _diff([10.0, 10.1, 9.9, 10.05], [20.0, 20.2, 19.8, 20.1])
    assert stats.verdict(*apart, higher_is_better=False) == "better"  # a lower perplexity
    assert stats.verdict(*apart, higher_is_better=True) == "worse"
    close = _diff([10.0, 12.0, 8.0], [10.5, 8.5, 12.5])
    assert stats.verdict(*close, higher_is_better=False) == stats.NO_DIFFERENCE
    one = stats.difference_ci95(10.0, math.nan, 1, 11.0, 0.5, 3)
    assert one[0] == -1.0 and stats.verdict(*one, higher_is_better=False) == stats.ONE_SEED


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=8), st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=8))
def test_a_difference_is_claimed_only_outside_the_interval(a, b):
    diff, half = _diff(a, b)
    verdict = stats.verdict(diff, half, higher_is_better=True)
    assert (verdict == stats.NO_DIFFERENCE) == (abs(diff) <= half)
    if verdict == "better":
        assert diff > half >= 0
