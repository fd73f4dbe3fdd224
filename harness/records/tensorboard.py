"""TensorBoard event files of a run: ``runs/<run_id>/tensorboard/``, one file per attempt.

Every metrics line the records append (``harness.records.messages``) is mirrored here as
scalars tagged ``<kind>/<key>`` (``train/loss``, ``train/fwd_rel_res``, ``eval/val_ppl``,
``eval/spectral_radius``, ...; the keys are harness.records.schema's), at the line's
step, so ``tensorboard --logdir results/<sweep>`` shows every run side by side. Rank 0's
messages are the only source, so each run has one writer.

An attempt that resumes from a checkpoint at step k starts its file with TensorBoard's
``SessionLog.START`` at step k + 1, which tells TensorBoard to drop the earlier attempt's
points after k: the curves have no duplicate steps, like ``metrics.jsonl``. Events are
framed as TFRecords (length, masked CRC-32C) with tensorboardX's protobuf classes and
appended like metrics lines (``store.append_whole``: fsync, cut back on a failed write).
"""
from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Iterable

from harness.records.store import append_whole

FOLDER = "tensorboard"
SKIPPED = ("kind", "step", "elapsed_s")


def event_file(run_dir: str | Path, attempt: int) -> Path:
    """The event file of attempt ``attempt`` (names sort in attempt order, as TensorBoard reads them)."""
    return Path(run_dir) / FOLDER / f"events.out.tfevents.{max(attempt, 0):04d}.deqbench"


def append_lines(run_dir: str | Path, attempt: int, lines: Iterable[dict], *,
                 resumed_from: int | None = None) -> None:
    """Append metrics lines to the attempt's event file (started, with its purge marker, if new)."""
    from tensorboardX.proto import event_pb2, summary_pb2

    path = event_file(run_dir, attempt)
    events = []
    if not path.exists():
        events.append(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        if resumed_from:  # TensorBoard drops the earlier attempts' points from this step on
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            events.append(event_pb2.Event(wall_time=time.time(), step=int(resumed_from) + 1, session_log=start))
    for line in lines:
        values = [summary_pb2.Summary.Value(tag=f"{line.get('kind', 'line')}/{key}", simple_value=float(value))
                  for key, value in line.items()
                  if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool)]
        if values:
            events.append(event_pb2.Event(wall_time=time.time(), step=int(line.get("step", 0)),
                                          summary=summary_pb2.Summary(value=values)))
    if not events:
        return
    append_whole(path, b"".join(_record(e.SerializeToString()) for e in events))


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, its masked CRC."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("Q", len(data))
    return header + struct.pack("I", masked_crc32c(header)) + data + struct.pack("I", masked_crc32c(data))
