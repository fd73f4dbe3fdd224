"""harness.sweep.launch: what it changes in Ray Train for every run."""
from __future__ import annotations

from harness.sweep.launch import CLEANER_STOP_TIMEOUT_S, shorten_cleaner_stop


def test_the_placement_group_cleaner_stops_within_two_seconds():
    """Ray Train's default waits up to 12 s per run for its cleaner to stop (the largest part
    of a quick sweep's per-run overhead); the run task shortens it, and the setting travels to
    the controller with the pickled callback."""
    import pickle

    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    assert PlacementGroupCleanerCallback()._stop_timeout >= CLEANER_STOP_TIMEOUT_S  # Ray's own default
    assert shorten_cleaner_stop() and shorten_cleaner_stop()  # idempotent
    callback = PlacementGroupCleanerCallback()
    assert callback._stop_timeout == CLEANER_STOP_TIMEOUT_S
    assert pickle.loads(pickle.dumps(callback))._stop_timeout == CLEANER_STOP_TIMEOUT_S
    assert PlacementGroupCleanerCallback(stop_timeout=0.5)._stop_timeout == 0.5  # never lengthened
