"""deqbench harness: job files -> Ray -> DeepSpeed -> records -> reports.

Folders by role (docs/design.md is the map; docs/records.md the on-disk contract):

- ``sweep``    the driver: job files, checks, ``submit``, ``launch``
- ``run``      one run on one worker: the per-worker function, workload, measurement
- ``records``  the only code that reads or writes a run's files
- ``watch``    status table and live progress, from the records
- ``report``   records -> ``reports/<sweep>/`` (the comparison report)
- ``data``     corpora, batching, copy memory, the synthetic corpus, downloads

Command lines: ``python -m harness.submit`` (a sweep), ``python -m harness.train`` (one run
without Ray), ``python -m harness.status``, ``python -m harness.report``,
``python -m harness.data.fetch``.
"""
