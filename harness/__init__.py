"""deqbench harness: job files -> Ray -> DeepSpeed -> records -> reports.

Modules, one responsibility each (see DESIGN.md and docs/records.md):

- ``config``  parse and validate job files, expand the grid into run specs
- ``data``    corpora, batching, copy memory, the synthetic corpus
- ``train``   the per-worker training function (also runs without Ray)
- ``metrics`` measurement shared by every model
- ``results`` durable per-run records and the pandas loader
- ``report``  records -> reports/<sweep>/
- ``status``  records -> a status table
- ``submit``  the command line: ``python -m harness.submit jobs/<sweep>.yaml``
"""
