"""harness.run.measure: the spread of step times, and memory figures that mean their label."""
from __future__ import annotations

import math

import torch

from harness.run import measure
from harness.run.trainer import StepTimes


def test_quantile_interpolates_between_order_statistics():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert measure.quantile(values, 0.0) == 1.0 and measure.quantile(values, 1.0) == 5.0
    assert measure.quantile(values, 0.5) == measure.median(values) == 3.0
    assert math.isclose(measure.quantile(values, 0.1), 1.4) and math.isclose(measure.quantile(values, 0.9), 4.6)
    assert math.isnan(measure.quantile([], 0.5))


def test_step_times_give_median_and_spread_and_skip_a_missing_solver():
    times = StepTimes()
    for i in range(1, 11):
        times.add(float(i), i / 2, i / 4, None)
    fig = times.figures()
    assert fig["step_time_s"] == 5.5 and fig["step_time_p10_s"] < fig["step_time_s"] < fig["step_time_p90_s"]
    assert math.isnan(fig["solver_time_s"])  # not a DEQ: no solver figure, not a zero


def test_cpu_peak_memory_is_not_measured():
    window = measure.MemoryWindow(torch.device("cpu"))
    window.begin()
    _ = torch.ones(1 << 20)
    assert window.peak_bytes() is None
