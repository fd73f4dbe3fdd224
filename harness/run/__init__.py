"""One run on one worker: the per-worker function and what it needs.

- ``spec``      :class:`~harness.run.spec.RunSpec`, one run, typed (the job file's sections)
- ``worker``    :func:`~harness.run.worker.train_lane` (Ray Train's entry: process group,
                path checks, runs one after another) and :func:`~harness.run.worker.run_training` (also without Ray)
- ``trainer``   :class:`~harness.run.trainer.Trainer`: set-up, one step, periodic work
                (log / eval / checkpoint), summary
- ``workload``  a run's data shard, model and evaluation for its task
- ``measure``   timing, memory and statistics shared by every model
- ``session``   where a worker sends its messages and finds its checkpoint (Ray or local)
- ``dsconfig``  the job file's DeepSpeed block -> DeepSpeed's config dict
- ``dsops``     DeepSpeed's CPU ops (accelerator name, the one-time build)
- ``faults``    injected faults for the fault-tolerance tests
- ``envinfo``   the environment a run saw (versions, devices, git state)
- ``analyze``   a recorded run's equilibrium analysis from its newest checkpoint
                (``python -m harness.analyze``)

May import ``harness.records`` and ``harness.data`` (and ``models``), never ``harness.sweep``.
"""
