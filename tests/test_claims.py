"""The report's claims check: each DEQ paper claim judged on the records, with its figure."""
from __future__ import annotations

from fixtures_records import write_fixture_sweep

from harness.report import load_report_data, model_frame
from harness.report.claims import NOT_MEASURED, check_claims


def _claims(root, **kwargs) -> dict[str, tuple[str, str]]:
    fx = write_fixture_sweep(root, **kwargs)
    data = load_report_data(fx.dir)
    return {c.claim.split(" (")[0]: (c.verdict, c.evidence) for c in check_claims(data, model_frame(data))}


def test_the_fixture_sweeps_memory_claims_hold_with_their_figures(tmp_path):
    claims = _claims(tmp_path)
    flat = claims["Activation memory of a DEQ is flat in depth"]
    assert flat[0] == "yes" and "exponent 0.00 over depths 4-16" in flat[1]
    grows = claims["Activation memory of weight-tied and explicit stacks grows with depth"]
    assert grows[0] == "yes" and "weight_tied: exponent" in grows[1] and "explicit: exponent" in grows[1]
    # the fixture's explicit stacks have 4-16x the DEQ's parameters: no verdict compares them,
    # and the claims say why instead of judging an unmatched pair
    for claim in ("A DEQ saves 68-88% of the activation memory of an explicit stack matched in parameters",
                  "DEQ training step time is about 2.82x an explicit stack's matched in parameters",
                  "DEQ inference time is about 1.76x an explicit stack's matched in parameters"):
        assert claims[claim][0] == NOT_MEASURED and "not judged, unmatched (params 3.99\u00d7)" in claims[claim][1]
    quality = claims["DEQ quality equals a weight-tied stack's at matched parameters"]
    assert "deq, depth 8 vs weight_tied, depth 8 [params 1.00\u00d7, nfe 9.53 vs 8]" in quality[1]
    assert all(v in ("yes", "no", NOT_MEASURED, "slower", "faster", "no difference shown", "inconclusive")
               or v.startswith("mixed") for v, _ in claims.values()), claims


def test_one_depth_and_one_seed_measure_nothing_they_cannot(tmp_path):
    claims = _claims(tmp_path, depths=(8,), seeds=(0,))
    assert claims["Activation memory of a DEQ is flat in depth"][0] == NOT_MEASURED
    assert claims["Activation memory of weight-tied and explicit stacks grows with depth"][0] == NOT_MEASURED
    quality = claims["DEQ quality equals a weight-tied stack's at matched parameters"]
    assert quality[0] == "inconclusive" and "one seed (n=1 and 1): no interval" in quality[1]


def test_models_that_learned_nothing_are_named_and_not_judged_on_quality(tmp_path):
    """A model whose val ppl is not under 0.9 x the unigram perplexity learned nothing from
    context: the quality table says so, the report's notes name it, and the quality claim
    does not compare it (two guessers say nothing about implicit depth)."""
    import json

    from harness.report import write_report

    fx = write_fixture_sweep(tmp_path, depths=(4, 8), seeds=(0, 1, 2), failed=())
    for run_id, spec in fx.specs.items():
        if spec["model"]["depth"]["kind"] == "deq":
            path = fx.dir / "runs" / run_id / "summary.json"
            summary = json.loads(path.read_text())
            summary["val_ppl"] = 160.0 + spec["train"]["seed"]  # worse than the unigram's 150
            path.write_text(json.dumps(summary))
    data = load_report_data(fx.dir)
    models = model_frame(data)
    deq = models[models["strategy"] == "deq"]
    assert set(deq["learned"]) == {"no"} and set(models[models["strategy"] != "deq"]["learned"]) == {"yes"}
    assert deq.iloc[0]["learned_text"] == "no (1.1\u00d7 unigram)"
    claims = {c.claim.split(" (")[0]: (c.verdict, c.evidence) for c in check_claims(data, models)}
    quality = claims["DEQ quality equals a weight-tied stack's at matched parameters"]
    assert quality[0] == NOT_MEASURED and "not learned" in quality[1]
    page = (write_report(fx.dir, tmp_path / "report") / "README.md").read_text()
    assert "Not learned: 2 of 10 models did no better than a context-free guess" in page
    assert "| learned |" in page and "| no (1.1\u00d7 unigram) |" in page


def test_the_learned_verdict_for_each_task():
    import math

    import pandas as pd

    from harness.report.tables import learned_verdict

    lm = {"task": "lm", "val_ppl_mean": 80.0, "unigram_ppl_mean": 287.0}
    assert learned_verdict(pd.Series(lm))[0] == "yes"
    assert learned_verdict(pd.Series({**lm, "val_ppl_mean": 473.0}))[0] == "no"
    assert learned_verdict(pd.Series({**lm, "unigram_ppl_mean": math.nan})) == ("", "")  # not on record
    # copy: 640 digits, one seed -> chance's 95% bound is 12.5 + 1.96 * 1.31 = 15.1%
    copy = {"task": "copy", "val_acc_mean": 0.16, "chance_acc_mean": 0.125, "val_tokens_mean": 640.0, "val_acc_n": 1}
    assert learned_verdict(pd.Series(copy))[0] == "yes"
    assert learned_verdict(pd.Series({**copy, "val_acc_mean": 0.15}))[0] == "no"
    assert learned_verdict(pd.Series({**copy, "val_acc_mean": 0.15}))[1] == "no (15% \u2264 15.1%)"
    assert learned_verdict(pd.Series({**copy, "val_acc_n": 3}))[1] == "yes (16% > 14%)"  # more seeds, tighter
    assert learned_verdict(pd.Series({**copy, "val_tokens_mean": math.nan})) == ("", "")
