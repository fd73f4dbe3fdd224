"""One writer per sweep folder: a second ``harness.submit`` into the same results is refused.

The lock is ``<results>/.<sweep>.writer.lock`` beside the sweep folder (``--fresh`` moves the
folder, never the lock), held with ``filelock`` (an OS file lock: released when the holding
process ends, however it ends, so a dead holder never blocks). Beside it,
``.<sweep>.writer.json`` says who holds it (pid, host, since), for the refusal's one line.
Sweeps into different folders never meet here (each starts its own embedded Ray on free ports).
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from harness.records.io import atomic_write_text


class SweepBusy(RuntimeError):
    """Another live process writes this sweep folder; the message is one line."""


def hold_sweep(results_root: Path, sweep: str) -> FileLock:
    """Take the writer lock of ``results_root/sweep`` (kept until the process ends) or raise
    :class:`SweepBusy` naming the folder and the holder."""
    results_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(results_root / f".{sweep}.writer.lock"), timeout=0)
    info = results_root / f".{sweep}.writer.json"
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads(info.read_text(encoding="utf-8"))
            who = (f"process {holder.get('pid')} on {holder.get('host')} since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder.get('since', 0))))}")
        except (OSError, ValueError, TypeError):
            who = "another process (its details are unreadable)"
        raise SweepBusy(f"{results_root / sweep} is being written by {who}; wait for it to finish, stop it, "
                        f"or submit into another folder (--results)") from None
    atomic_write_text(info, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
    return lock
