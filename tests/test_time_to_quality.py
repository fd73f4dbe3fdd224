"""Time to quality: the steps and seconds to first reach the job file's target, per model."""
from __future__ import annotations

import json
import statistics

from fixtures_records import write_fixture_sweep

from harness.report.data import load_report_data
from harness.report.tables import model_frame
from harness.report.time_to_quality import time_to_quality_frame, time_to_quality_table


def _set_targets(sweep_dir, **targets) -> None:
    path = sweep_dir / "sweep.json"
    meta = json.loads(path.read_text())
    meta["compare"] = {**(meta.get("compare") or {}), **targets}
    path.write_text(json.dumps(meta))


def _first_hits(sweep_dir, run_id, target):
    for line in (sweep_dir / "runs" / run_id / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "eval" and rec["val_ppl"] <= target:
            return rec["step"], rec["elapsed_s"]
    return None


def test_time_to_quality_counts_first_hits_and_never(tmp_path):
    """Each model's 'reached' count, median steps and seconds equal a direct read of its runs'
    eval records; a target no run meets gives 0/n and no time; no target, no table."""
    fx = write_fixture_sweep(tmp_path, seeds=(0, 1, 2))
    data = load_report_data(fx.dir)
    assert time_to_quality_table(data, model_frame(data)) is None  # no target in the job file
    finals = sorted(s["val_ppl"] for s in fx.finished())
    target = finals[len(finals) // 2]  # about half the models reach it
    _set_targets(fx.dir, target_ppl=target)
    data = load_report_data(fx.dir)
    models = model_frame(data)
    frame = time_to_quality_frame(data, models)
    assert len(frame) == len(models) and 0 < frame["reached"].sum() < frame["runs"].sum()
    for _, row in frame.iterrows():
        key = models.loc[models["model"] == row["model"], "model_key"].iloc[0]
        run_ids = data.finished.loc[data.finished["model_key"] == key, "run_id"]
        hits = [h for h in (_first_hits(fx.dir, r, target) for r in run_ids) if h is not None]
        assert row["runs"] == len(run_ids) and row["reached"] == len(hits)
        if hits:
            assert statistics.median(row["steps"]) == statistics.median(s for s, _ in hits)
            assert statistics.median(row["seconds"]) == statistics.median(t for _, t in hits)
    table = time_to_quality_table(data, models)
    cells = {r[0]: r for r in table.rows}
    never = frame[frame["reached"] < frame["runs"]].iloc[0]
    assert f"({never['runs'] - never['reached']} never)" in cells[never["model"]][2]
    _set_targets(fx.dir, target_ppl=1.0001)  # below every perplexity: nobody reaches it
    data = load_report_data(fx.dir)
    frame = time_to_quality_frame(data, model_frame(data))
    assert (frame["reached"] == 0).all()
    assert all(r[3] == "\u2014" for r in time_to_quality_table(data, model_frame(data)).rows)
