"""Seeing a sweep while it runs, from its records alone.

- ``status``    ``python -m harness.status results/<sweep>``: the status table
- ``progress``  the live terminal view ``harness.submit`` draws

Ray's dashboard metrics are published by the workers (``harness.run.session.LIVE_METRICS``).
May import ``harness.records`` only.
"""
