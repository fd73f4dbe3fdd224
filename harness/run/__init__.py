"""One run on one worker: the per-worker function and what it needs.

- ``worker``    :func:`~harness.run.worker.train_worker` (Ray Train's entry) and
                :func:`~harness.run.worker.run_training` (also runs without Ray)
- ``workload``  a run's data shard, model and evaluation for its task
- ``measure``   timing, memory and statistics shared by every model
- ``session``   where a worker sends its messages and finds its checkpoint (Ray or local)
- ``dsconfig``  the job file's DeepSpeed block -> DeepSpeed's config dict
- ``dsops``     DeepSpeed's CPU ops (accelerator name, the one-time build)
- ``faults``    injected faults for the fault-tolerance tests
- ``envinfo``   the environment a run saw (versions, devices, git state)

May import ``harness.records`` and ``harness.data``, never ``harness.sweep``.
"""
