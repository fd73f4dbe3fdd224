"""TensorBoard event files of a run, read back with TensorBoard's own reader."""
from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness.records import RunRecord, apply_message
from harness.records.tensorboard import FOLDER


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / FOLDER))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _train(step: int, loss: float) -> dict:
    return {"kind": "train", "step": step, "elapsed_s": step * 0.1, "loss": loss, "lr": 1e-3,
            "fwd_nstep": 7.0, "fwd_rel_res": 1e-4}


def test_every_metrics_line_is_a_scalar_and_a_resume_drops_the_lost_steps(tmp_path):
    record = RunRecord(tmp_path / "results" / "s" / "runs" / "r1")
    apply_message(record, {"env": {"python": "3"}, "status": {"state": "running", "step": 0}, "resumed_from": 0})
    apply_message(record, {"records": [_train(s, 10.0 - s) for s in (1, 2, 3, 4, 5, 6)]})
    apply_message(record, {"records": [{"kind": "eval", "step": 6, "elapsed_s": 1.0, "val_loss": 2.0,
                                        "val_ppl": 7.39, "spectral_radius": 0.8}]})
    # the workers restart from a checkpoint at step 4: steps 5 and 6 are trained again
    apply_message(record, {"env": {"python": "3"}, "status": {"state": "running", "step": 4}, "resumed_from": 4})
    apply_message(record, {"records": [_train(s, 20.0 - s) for s in (5, 6, 7, 8)]})
    got = scalars(record.dir)
    assert {"train/loss", "train/lr", "train/fwd_nstep", "train/fwd_rel_res", "eval/val_ppl",
            "eval/spectral_radius"} <= set(got)
    assert "train/step" not in got and "train/elapsed_s" not in got
    loss = got["train/loss"]
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5, 6, 7, 8]  # no duplicate step after the resume
    assert dict(loss)[5] == 15.0 and dict(loss)[2] == 8.0  # the second attempt's values won
    assert got["eval/val_ppl"] == []  # the lost attempt's eval at step 6 is dropped too
    # metrics.jsonl says the same
    assert [r["step"] for r in record.read_metrics() if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6, 7, 8]
