"""The on-disk contract of a sweep (docs/records.md): the only code that reads or writes a
run's files.

- ``store``: :class:`SweepStore` (``results/<sweep>/``) and :class:`RunRecord`
  (``runs/<run_id>/``). :meth:`RunRecord.set_status` is the one function that moves a run
  from state to state (pending -> running -> finished | failed; back to pending on Ctrl-C).
- ``io``: one record file: atomic JSON writes, whole-line appends, the tolerant readers
  (a damaged file: :class:`RecordError`, or one :class:`RecordProblem` line where a reader
  goes on without it; docs/reliability.md, "Damaged records").
- ``loaders``: the pandas loaders :func:`load_sweep` and :func:`load_metrics`.
- ``messages``: :func:`apply_message`, a worker's message -> record writes (a full disk:
  the run recorded failed in the sweep's reserved space, :class:`RecordsFull` raised).
- ``tail``: the end of a growing ``metrics.jsonl``, read cheaply (status and live views).
- ``schema``: every recorded figure (key, unit, which runs have it, meaning).

Imports nothing else of ``harness``; every other package imports it.
"""
from harness.records import schema
from harness.records.messages import RecordsFull, apply_message
from harness.records.tail import MetricsTail, latest_records
from harness.records.io import RecordError, RecordProblem
from harness.records.loaders import RecordWarning, load_metrics, load_sweep
from harness.records.store import (STATES, RunRecord, SweepStore, atomic_write_json, atomic_write_text,
                                   is_disk_full, read_json, read_jsonl, utc_now)

__all__ = ["STATES", "MetricsTail", "RecordError", "RecordProblem", "RecordWarning", "RecordsFull", "RunRecord",
           "SweepStore", "apply_message", "atomic_write_json", "atomic_write_text", "is_disk_full", "latest_records",
           "load_metrics", "load_sweep", "read_json", "read_jsonl", "schema", "utc_now"]
