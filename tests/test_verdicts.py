"""Verdicts a reviewer accepts (harness.report.verdicts, docs/verdicts.md): matched pairs,
equivalence within a margin fixed before the data, an interval on every ratio, solver health."""
from __future__ import annotations

import json
import math

import pytest
from fixtures_records import write_fixture_sweep
from hypothesis import given, settings, strategies as st

from harness.records.compare import CompareSettings, model_name
from harness.report import load_report_data, model_frame, write_report
from harness.report import verdicts as v
from harness.report.claims import NOT_MEASURED, check_claims


def _stats(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def _eq(model, base, margin, higher=False, metric="val_ppl"):
    return v.equivalence(*_stats(model), *_stats(base), margin, higher, metric)


# --- equivalence: holds, fails, inconclusive ------------------------------------------------------

def test_equal_needs_the_90_interval_inside_the_margin():
    close = _eq([20.0, 20.1, 19.9, 20.05, 19.95], [20.02, 19.98, 20.1, 19.9, 20.0], margin=0.4)
    assert close.verdict == v.EQUAL and -0.4 < close.ci90[0] and close.ci90[1] < 0.4
    # the same difference with a margin narrower than the interval: not shown equal
    narrow = _eq([20.0, 20.1, 19.9, 20.05, 19.95], [20.02, 19.98, 20.1, 19.9, 20.0], margin=0.05)
    assert narrow.verdict == v.INCONCLUSIVE and narrow.seeds_needed and narrow.seeds_needed > 5


def test_a_difference_outside_the_margin_is_better_or_worse():
    worse = _eq([21.0, 21.1, 20.9], [20.0, 20.1, 19.9], margin=0.4)  # ppl: lower is better
    assert worse.verdict == v.WORSE and worse.ci95[0] > 0
    better = _eq([0.90, 0.91, 0.92], [0.80, 0.81, 0.79], margin=0.02, higher=True, metric="val_acc")
    assert better.verdict == v.BETTER
    assert "+11 pp" in better.text() and "margin \u00b12 pp" in better.text()


def test_significant_but_inside_the_margin_is_equal_and_says_so():
    tiny = _eq([20.10, 20.11, 20.09, 20.10], [20.00, 20.01, 19.99, 20.00], margin=0.5)
    assert tiny.verdict == v.EQUAL and tiny.ci95[0] > 0 and "significant but inside the margin" in tiny.note


def test_one_seed_is_inconclusive_with_no_interval():
    one = _eq([20.0], [20.0, 20.1], margin=0.4)
    assert one.verdict == v.INCONCLUSIVE and math.isnan(one.ci90[0]) and "one seed" in one.text()


def test_the_copy_studys_figures_are_never_equal():
    """studies/copy_memory: implicit-gradient DEQ recall 38.4% / 15.5% against weight-tied 99.4% /
    29.0% (two seeds each). Welch's 95% interval covers zero (-37 +- 470 pp), which the old rule
    called 'no measurable difference', and the claim 'equal'. Within a 2-point margin it is not."""
    copy = _eq([0.384, 0.155], [0.994, 0.290], margin=0.02, higher=True, metric="val_acc")
    assert copy.verdict in (v.WORSE, v.INCONCLUSIVE) and copy.verdict != v.EQUAL
    assert copy.ci90[0] < -0.02 and copy.seeds_needed is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1.0, 100.0), min_size=2, max_size=8), st.lists(st.floats(1.0, 100.0), min_size=2, max_size=8),
       st.floats(0.01, 10.0))
def test_equal_only_when_the_interval_is_inside_the_margin(model, base, margin):
    verdict = _eq(model, base, margin)
    if verdict.verdict == v.EQUAL:
        assert -margin < verdict.ci90[0] <= verdict.diff <= verdict.ci90[1] < margin
    if abs(verdict.diff) >= margin:
        assert verdict.verdict != v.EQUAL


# --- ratios ------------------------------------------------------------------------------------

def test_a_median_ratio_interval_contains_its_ratio_and_tightens_with_more_steps():
    import random

    rng = random.Random(1)
    slow = [0.028 * (1 + 0.2 * rng.random()) for _ in range(500)]
    fast = [0.020 * (1 + 0.2 * rng.random()) for _ in range(500)]
    wide, tight = v.median_ratio_interval(slow[:20], fast[:20], "x"), v.median_ratio_interval(slow, fast, "x")
    for r in (wide, tight):
        assert r.lo <= r.value <= r.hi
    assert tight.hi - tight.lo < wide.hi - wide.lo and tight.lo < 1.4 < tight.hi
    assert v.median_ratio_interval(slow, fast, "x") == tight  # a fixed seed: the same report when rebuilt


def test_a_ratio_interval_that_straddles_the_papers_figure_is_consistent():
    straddles = v.ratio_interval([2.5, 3.1, 2.7, 3.0], [1.0, 1.05, 0.95, 1.0], "over seeds")
    assert straddles.lo < 2.82 < straddles.hi and straddles.against(2.82) == v.CONSISTENT
    lower = v.ratio_interval([1.3, 1.35, 1.32], [1.0, 1.01, 0.99], "over seeds")
    assert lower.hi < 2.82 and lower.against(2.82) == v.LOWER
    assert v.ratio_interval([9.0, 9.2], [1.0, 1.02], "x").against(2.82) == v.HIGHER
    one = v.ratio_interval([2.0], [1.0], "one seed")
    assert one.value == pytest.approx(2.0) and one.against(2.82) == v.INCONCLUSIVE


# --- pairs, on records -------------------------------------------------------------------------

def test_an_unmatched_baseline_is_shown_in_the_tables_and_skipped_by_the_verdicts(tmp_path):
    """The fixture's explicit stacks hold depth x the DEQ's parameters: the tables show them,
    marked unmatched, and neither the quality column nor a claim judges them."""
    fx = write_fixture_sweep(tmp_path, depths=(4, 8), seeds=(0, 1, 2), failed=())
    data = load_report_data(fx.dir)
    models = model_frame(data)
    deq = models[models["strategy"] == "deq"].iloc[0]
    assert deq["matched"] == "unmatched (params 3.99\u00d7)" and deq["quality_verdict"] == ""
    page = (write_report(fx.dir, tmp_path / "report") / "README.md").read_text()
    assert "| unmatched (params 3.99\u00d7) |" in page
    claims = {c.claim.split(" (")[0]: c for c in check_claims(data, models)}
    speed = claims["DEQ training step time is about 2.82x an explicit stack's matched in parameters"]
    assert speed.verdict == NOT_MEASURED and "not judged" in speed.evidence


def _match_explicit(fx, step_scale: float = 1.0) -> None:
    """Give every explicit run the DEQ's parameter count (as a widened one-cell DEQ would have),
    so the DEQ-explicit pairs are matched in parameters."""
    deq_params = next(s["params_non_embedding"] for s in fx.summaries.values() if s["strategy"] == "deq")
    for run_id, summary in fx.summaries.items():
        if summary["strategy"] == "explicit":
            summary["params_non_embedding"] = deq_params
            summary["step_time_s"] *= step_scale
            (fx.dir / "runs" / run_id / "summary.json").write_text(json.dumps(summary))


def test_matched_pairs_get_ratio_verdicts_with_intervals_and_the_time_split(tmp_path):
    fx = write_fixture_sweep(tmp_path, depths=(8,), seeds=(0, 1, 2), failed=())
    _match_explicit(fx)
    data = load_report_data(fx.dir)
    claims = {c.claim.split(" (")[0]: c for c in check_claims(data, model_frame(data))}
    speed = claims["DEQ training step time is about 2.82x an explicit stack's matched in parameters"]
    deq = [s["step_time_s"] for s in fx.finished("deq")]
    explicit = [s["step_time_s"] for s in fx.finished("explicit")]
    expected = sum(deq) / sum(explicit)  # the ratio of the means, as the cost table's slowdown
    assert f"{expected:.2f}\u00d7 [" in speed.evidence and "over seeds, n=3 and 3" in speed.evidence
    assert speed.verdict in (v.CONSISTENT, v.LOWER, v.HIGHER)
    assert "DEQ fwd " in speed.evidence and "(solver " in speed.evidence and "+ opt " in speed.evidence
    saving = claims["A DEQ saves 68-88% of the activation memory of an explicit stack matched in parameters"]
    assert saving.verdict in ("within", "below", "above") and "counted bytes" in saving.evidence
    # the solver's own price: against the weight-tied stack of the same cell at about its nfe
    solver = next(c for k, c in claims.items() if k.startswith("A DEQ's training step costs about"))
    tied = [s["step_time_s"] for s in fx.finished("weight_tied")]
    assert f"{sum(deq) / sum(tied):.2f}\u00d7 [" in solver.evidence and "weight-tied fwd " in solver.evidence
    assert solver.verdict in ("slower", "faster", "no difference shown"), solver.evidence


def test_one_seed_ratios_take_their_interval_over_the_recorded_step_times(tmp_path):
    fx = write_fixture_sweep(tmp_path, depths=(8,), seeds=(0,), failed=())
    _match_explicit(fx)
    for run_id, summary in fx.summaries.items():
        if summary["strategy"] in ("deq", "explicit"):
            base = summary["step_time_s"]
            summary["step_times_s"] = [base * (1 + 0.01 * ((i * 7) % 5 - 2)) for i in range(40)]
            (fx.dir / "runs" / run_id / "summary.json").write_text(json.dumps(summary))
    data = load_report_data(fx.dir)
    claims = {c.claim.split(" (")[0]: c for c in check_claims(data, model_frame(data))}
    speed = claims["DEQ training step time is about 2.82x an explicit stack's matched in parameters"]
    assert ("one seed: median ratio, bootstrap over 40 and 40 recorded step times of the runs, noise within runs "
            "only") in speed.evidence
    deq = next(s for s in fx.summaries.values() if s["strategy"] == "deq")["step_times_s"]
    explicit = next(s for s in fx.summaries.values() if s["strategy"] == "explicit")["step_times_s"]
    import statistics

    assert f"{statistics.median(deq) / statistics.median(explicit):.2f}\u00d7 [" in speed.evidence
    assert speed.verdict in (v.CONSISTENT, v.LOWER, v.HIGHER)
    # the per-step lists stay out of summary.csv
    write_report(fx.dir, tmp_path / "report")
    assert "step_times_s" not in (tmp_path / "report" / "summary.csv").read_text().splitlines()[0]


def test_named_pairs_and_margins_come_from_the_sweep_record(tmp_path):
    fx = write_fixture_sweep(tmp_path, depths=(4, 8), seeds=(0, 1), failed=())
    meta = json.loads((fx.dir / "sweep.json").read_text())
    meta["compare"] = {"ppl_margin_pct": 50.0, "pairs": [{"model": "deq4", "baseline": "weight_tied4"}]}
    (fx.dir / "sweep.json").write_text(json.dumps(meta))
    data = load_report_data(fx.dir)
    claims = {c.claim.split(" (")[0]: c for c in check_claims(data, model_frame(data))}
    quality = claims["DEQ quality equals a weight-tied stack's at matched parameters"]
    assert "\u00b150% of val ppl" in quality.claim and "margins from the job file" in quality.claim
    assert "deq, depth 4 vs weight_tied, depth 4 [params 1.00\u00d7, nfe" in quality.evidence
    assert "named in the job file" in quality.evidence


def test_unconverged_solves_are_flagged_beside_quality_and_in_the_claims(tmp_path):
    fx = write_fixture_sweep(tmp_path, depths=(8,), seeds=(0, 1), failed=())
    for run_id, summary in fx.summaries.items():
        if summary["strategy"] == "deq":
            summary.update(fwd_unconverged_frac=0.25, bwd_unconverged_frac=0.0)
            (fx.dir / "runs" / run_id / "summary.json").write_text(json.dumps(summary))
    data = load_report_data(fx.dir)
    models = model_frame(data)
    deq = models[models["strategy"] == "deq"].iloc[0]
    assert deq["solver_flagged"] and deq["solver_health"] == "unconverged: fwd 25%, bwd 0% of solves above tol"
    quality = next(c for c in check_claims(data, models) if c.claim.startswith("DEQ quality"))
    assert "[rests on unconverged solves: fwd 25%, bwd 0% of solves above tol]" in quality.evidence
    page = (write_report(fx.dir, tmp_path / "report") / "README.md").read_text()
    assert "| solver health |" in page and "unconverged: fwd 25%" in page


# --- the compare block -------------------------------------------------------------------------

def test_model_names_drop_the_seed_label_only():
    assert model_name("lm_deq12_s3", 3) == "lm_deq12"
    assert model_name("lm_deq12", 0) == "lm_deq12"
    assert model_name("weight_tied4_s0", 0) == "weight_tied4"
    assert model_name("s1_s1", 1) == "s1"


def test_the_compare_block_is_checked_and_leaves_run_ids_alone(tmp_path):
    from harness.sweep.config import JobFileError, expand_grid, load_job_file

    from pathlib import Path

    quickstart = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"
    job, _ = load_job_file(quickstart)
    with_margin, _ = load_job_file(quickstart, ["compare.ppl_margin_pct=5"])
    assert with_margin.compare == job.compare.model_copy(update={"ppl_margin_pct": 5.0})
    assert CompareSettings().ppl_margin_pct == 2.0 and with_margin.compare.ppl_margin_pct == 5.0
    assert [r.run_id for r in expand_grid(job)] == [r.run_id for r in expand_grid(with_margin)]
    named = job.compare.pairs[0] if job.compare.pairs else None
    bad, _ = load_job_file(quickstart, ['compare.pairs=[{model: lm_nothing, baseline: lm_weight_tied4}]'])
    with pytest.raises(JobFileError, match=r"compare\.pairs\.0\.model: 'lm_nothing' is not a model of this sweep"):
        expand_grid(bad, quickstart)
    with pytest.raises(JobFileError, match=r"compare: unknown key 'margin'"):
        load_job_file(quickstart, ["compare.margin=2"])
    assert named is None or named.model != named.baseline
