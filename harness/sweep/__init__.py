"""The driver: a job file -> checked run specs -> Ray -> one Ray Train run per spec.

- ``config``    parse and validate job files (pydantic), expand the grid into run specs
- ``overrides`` ``--set KEY=VALUE`` on the command line
- ``checks``    everything checked before anything runs (models on the meta device,
                DeepSpeed's own config classes, corpora, output folders, cluster size)
- ``submit``    ``python -m harness.submit``: start or join Ray, open the sweep's records
- ``launch``    one Ray Train ``DataParallelTrainer`` per run, several at once

May import ``harness.records``, ``harness.run``, ``harness.data``, ``harness.watch`` and
``harness.report``; nothing imports it but the command lines.
"""
