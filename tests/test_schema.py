"""harness.records.schema is the one list of recorded figures: the docs, the report and the
tests' expected keys agree with it (a real run's keys are checked in test_train_local.py
and test_harness_sweep.py through sweep_helpers.assert_keys_in_schema)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.records import schema
from harness.report.content import METRIC_GLOSSARY
from harness.report.data import IDENTITY_FIELDS, METRIC_FIELDS
from sweep_helpers import COMMON_METRICS, COPY_METRICS, DEQ_METRICS, LM_METRICS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "records.md"


@pytest.mark.parametrize("record", schema.RECORD_KINDS)
def test_docs_tables_are_the_schemas(record):
    text = DOCS.read_text(encoding="utf-8")
    assert schema.docs_block(record) in text, (
        f"docs/records.md's {record} table differs from harness.records.schema; "
        "regenerate it with python -m harness.records.schema")


def test_docs_name_no_figure_outside_the_schema():
    """Every `key` the generated tables of docs/records.md show is a schema key (no stale row)."""
    text = DOCS.read_text(encoding="utf-8")
    for block in re.findall(r"<!-- schema:(\w+) .*?-->\n(.*?)<!-- /schema -->", text, flags=re.S):
        record, table = block
        shown = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
        assert set(shown) == set(schema.keys(record)), record


def test_report_columns_and_glossary_come_from_the_schema():
    summary = set(schema.keys("summary"))
    assert set(METRIC_FIELDS) <= summary and set(IDENTITY_FIELDS) <= summary
    assert {k for k, _ in METRIC_GLOSSARY} <= summary | set(schema.keys("eval"))


def test_the_tests_expected_keys_are_schema_keys():
    expected = set(COMMON_METRICS + LM_METRICS + COPY_METRICS + DEQ_METRICS)
    assert expected <= set(schema.keys("summary"))
    # what every run carries is listed for every run
    assert all(schema.BY_KEY[k].only == "" for k in COMMON_METRICS)


def test_unknown_keys_names_what_the_schema_lacks():
    assert schema.unknown_keys("train", {"kind": "train", "step": 1, "loss": 2.0}) == []
    assert schema.unknown_keys("train", {"kind": "train", "fwd_solve_s": 0.1}) == ["fwd_solve_s"]
    assert schema.unknown_keys("eval", {"loss": 1.0}) == ["loss"]  # eval lines say val_loss


def test_every_figure_is_well_formed():
    for figure in schema.FIGURES:
        assert figure.records and set(figure.records) <= set(schema.RECORD_KINDS), figure.key
        assert figure.meaning and "\n" not in figure.meaning, figure.key
        assert figure.unit in ("", "bytes", "s", "tokens/s", "count", "nats"), figure.key


def test_the_report_tests_fixture_records_use_schema_keys(tmp_path):
    """The hand-made records the report tests read are the same format as real ones."""
    from fixtures_records import write_fixture_sweep
    from sweep_helpers import assert_keys_in_schema

    fx = write_fixture_sweep(tmp_path)
    for run_dir in sorted((fx.dir / "runs").iterdir()):
        assert_keys_in_schema(run_dir)
