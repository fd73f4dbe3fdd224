"""The driver: a job file -> checked run specs -> Ray -> lanes of Ray Train workers that train them.

- ``config``    parse and validate job files (pydantic), expand the grid into run specs
- ``overrides`` ``--set KEY=VALUE`` on the command line
- ``checks``    everything checked before anything runs (models on the meta device,
                DeepSpeed's own config classes, corpora, output folders, cluster size)
- ``submit``    ``python -m harness.submit``: start or join Ray, open the sweep's records
- ``launch``    start the lanes (as many at once as fit) and wait; Ctrl-C and signals
- ``lanes``     the run queue and a lane: one Ray Train ``DataParallelTrainer`` whose
                workers train one run after another (start-up paid once per lane)

May import ``harness.records``, ``harness.run``, ``harness.data``, ``harness.watch`` and
``harness.report``; nothing imports it but the command lines.
"""
