"""The report's claims check: each DEQ paper claim judged on the records, with its figure."""
from __future__ import annotations

from fixtures_records import write_fixture_sweep

from harness.report import load_report_data, model_frame
from harness.report.claims import NOT_MEASURED, check_claims


def _claims(root, **kwargs) -> dict[str, tuple[str, str]]:
    fx = write_fixture_sweep(root, **kwargs)
    data = load_report_data(fx.dir)
    return {c.claim.split(" (")[0]: (c.verdict, c.evidence) for c in check_claims(model_frame(data), data.extra_fields)}


def test_the_fixture_sweeps_memory_claims_hold_with_their_figures(tmp_path):
    claims = _claims(tmp_path)
    flat = claims["Activation memory of a DEQ is flat in depth"]
    assert flat[0] == "yes" and "exponent 0.00 over depths 4-16" in flat[1]
    grows = claims["Activation memory of weight-tied and explicit stacks grows with depth"]
    assert grows[0] == "yes" and "weight_tied: exponent" in grows[1] and "explicit: exponent" in grows[1]
    saving = claims["A DEQ saves 68-88% of an explicit stack's memory"]
    assert saving[0] == "yes" and "depth 16" in saving[1]
    # the fixture records no inference time: a dash of a verdict, never a guess
    assert claims["DEQ inference time is about 1.76x an explicit stack's"][0] == NOT_MEASURED
    assert all(v in ("yes", "no", NOT_MEASURED) for v, _ in claims.values())


def test_one_depth_and_one_seed_measure_nothing_they_cannot(tmp_path):
    claims = _claims(tmp_path, depths=(8,), seeds=(0,))
    assert claims["Activation memory of a DEQ is flat in depth"][0] == NOT_MEASURED
    assert claims["Activation memory of weight-tied and explicit stacks grows with depth"][0] == NOT_MEASURED
    quality = claims["DEQ quality equals a weight-tied stack's at matched parameters"]
    assert quality[0] == NOT_MEASURED and "one seed" in quality[1]
