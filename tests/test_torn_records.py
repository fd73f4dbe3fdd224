"""Damaged records (issue 32): every reader of a sweep's records goes on past a damaged file.

For each record kind (``status.json``, ``summary.json``, ``spec.json``, ``sweep.json``,
``analysis.json``, ``env.json`` and the lines of ``metrics.jsonl``) hypothesis damages one
file of a fixture sweep (tests/fixtures_records.py): a random cut, random bytes, a byte
that is not UTF-8, an empty file, JSON of the wrong type, one field of the wrong type, or
(metrics) one line in the middle replaced. Then every reader runs on it:

- ``RunRecord.read_*`` and ``SweepStore.read_meta``/``run_ids``: no exception; a damaged
  file is named in the record's ``problems``; ``strict=True`` raises only ``RecordError``,
  one line starting with the file's path;
- ``load_sweep``, ``load_metrics``, ``harness.report.data.load_report_data`` and
  ``harness.watch.status.status_rows``: no exception; every problem line names the damaged
  file; the other runs' figures are the undamaged sweep's.

Then a sweep damaged in every kind at once goes through ``write_report`` in-process, and
one through the real command line, ``python -m harness.report``. No Ray.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_records import write_fixture_sweep
from harness.records import (RecordError, RunRecord, SweepStore, latest_records, load_metrics, load_sweep,
                             read_json)
from harness.report.data import METRIC_FIELDS, load_report_data
from harness.watch.status import status_rows

REPO = Path(__file__).resolve().parent.parent
# a few examples per (record kind, kind of damage); TORN_EXAMPLES=200 for a long hunt
SETTINGS = settings(max_examples=int(os.environ.get("TORN_EXAMPLES", "3")), derandomize=True, deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RUN_FILES = ("status.json", "summary.json", "spec.json", "analysis.json", "env.json", "metrics.jsonl")
KINDS = RUN_FILES + ("sweep.json",)
HOWS = ("cut", "random", "not_utf8", "empty", "wrong_type", "wrong_field")
CASES = [(k, h) for k in KINDS for h in HOWS] + [("metrics.jsonl", "line")]
NOW = _dt.datetime(2025, 1, 16, tzinfo=_dt.timezone.utc)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """An intact sweep (2 strategies x 2 depths x 2 seeds; deq depth 8 seed 1 failed) and
    what every reader makes of it."""
    fx = write_fixture_sweep(tmp_path_factory.mktemp("pristine"), strategies=("explicit", "deq"),
                             depths=(4, 8), failed=(("deq", 8, 1),), steps=60)
    data = load_report_data(fx.dir)
    assert not data.problems
    return {"dir": fx.dir, "ids": list(fx.specs), "figures": _figures(data), "status": _status(fx.dir, []),
            "metrics": _metric_counts(fx.dir, [])}


def _figures(data) -> dict[str, dict]:
    """run_id -> its state and every summary figure, as the report reads them."""
    out = {}
    for _, row in data.runs.iterrows():
        out[row["run_id"]] = {"state": row["state"], **{k: _num(row[k]) for k in METRIC_FIELDS}}
    return out


def _num(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _status(sweep: Path, problems: list) -> dict[str, tuple]:
    rows = status_rows(sweep, now=NOW, problems=problems)
    return {r["run_id"]: (r["state"], r["step"], r["loss"], r["val"], r["tokens_per_s"]) for r in rows}


def _metric_counts(sweep: Path, problems: list) -> dict[str, int]:
    frame = load_metrics(sweep, problems=problems)
    return frame.groupby("run_id").size().to_dict()


# ----------------------------------------------------------------------------- damage

def _other_type(value):
    """Strategy: a JSON value of a type other than ``value``'s (never null: null is 'absent')."""
    options = {list: st.lists(st.integers(), max_size=3), str: st.text(max_size=8), dict: st.just({"x": 1}),
               int: st.integers(), bool: st.booleans()}
    kind = bool if isinstance(value, bool) else (int if isinstance(value, (int, float)) else type(value))
    return st.one_of([s for t, s in options.items() if t is not kind and not (kind is int and t is bool)])


@st.composite
def damage(draw, original: bytes, name: str, how: str) -> bytes:
    """The bytes of ``original`` (a record called ``name``) damaged one way (``how``: HOWS or
    ``line``, one line of a metrics file)."""
    if how == "cut":
        return original[:draw(st.integers(0, max(len(original) - 1, 0)))]
    if how == "random":
        return draw(st.binary(max_size=120))
    if how == "not_utf8":
        at = draw(st.integers(0, len(original)))
        return original[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + original[at:]
    if how == "empty":
        return b"" if draw(st.booleans()) else b"  \n"
    if how == "wrong_type":
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=10), st.integers(),
                               st.booleans(), st.none(), st.floats(allow_nan=False)))
        return (json.dumps(value) + "\n").encode()
    lines = original.split(b"\n")
    if name == "metrics.jsonl":  # one line of the middle of the file
        at = draw(st.integers(1, len(lines) - 3))
        if how == "line":
            lines[at] = draw(st.one_of(st.binary(max_size=40).filter(lambda b: b"\n" not in b),
                                       st.just(lines[at][:len(lines[at]) // 2]), st.just(b'["train", 10]'),
                                       st.just(b"\xff" + lines[at])))
            return b"\n".join(lines)
        record = json.loads(lines[at])
    else:
        record = json.loads(original)
    if how == "wrong_field" and isinstance(record, dict) and record:
        key = draw(st.sampled_from(sorted(record)))
        record[key] = draw(_other_type(record[key]))
    if name == "metrics.jsonl":
        lines[at] = json.dumps(record).encode()
        return b"\n".join(lines)
    return (json.dumps(record) + "\n").encode()


def _target(pristine: dict, name: str, index: int) -> Path:
    if name == "sweep.json":
        return pristine["dir"] / "sweep.json"
    run_ids = pristine["ids"]
    with_file = [r for r in run_ids if (pristine["dir"] / "runs" / r / name).is_file()]
    return pristine["dir"] / "runs" / with_file[index % len(with_file)] / name


@st.composite
def damaged_file(draw, pristine, name: str, how: str):
    target = _target(pristine, name, draw(st.integers(0, 100)))
    return name, target.relative_to(pristine["dir"]), draw(damage(target.read_bytes(), name, how))


@contextlib.contextmanager
def _damaged(work: Path, rel: Path, data: bytes):
    """``work`` (a copy of the pristine sweep) with ``rel`` replaced by ``data``, put back after."""
    path = work / rel
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield work, path
    finally:
        path.write_bytes(original)


@pytest.fixture(scope="module")
def work(pristine, tmp_path_factory):
    sweep = tmp_path_factory.mktemp("work") / "sweep"
    shutil.copytree(pristine["dir"], sweep)
    return sweep


def _is_damaged(path: Path) -> bool:
    """Whether the strict reader refuses the file (metrics: some whole line is refused)."""
    if path.name == "metrics.jsonl":
        from harness.records.io import scan_jsonl

        return bool(scan_jsonl(path)[1])
    try:
        read_json(path)
    except RecordError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return True
    return False


def _run_of(path: Path) -> str | None:
    return path.parent.name if path.parent.parent.name == "runs" else None


# ----------------------------------------------------------------------------- properties

@pytest.mark.parametrize("name,how", CASES)
@SETTINGS
@given(data=st.data())
def test_record_readers_never_raise_and_name_the_damaged_file(pristine, work, name, how, data):
    name, rel, raw = data.draw(damaged_file(pristine, name, how))
    with _damaged(work, rel, raw) as (sweep, path):
        damaged = _is_damaged(path)
        store = SweepStore(sweep)
        assert isinstance(store.read_meta(), dict)
        assert set(store.run_ids()) == set(pristine["ids"])  # a damaged sweep.json: taken from runs/
        for run_id in store.run_ids():
            rec = store.run(run_id)
            assert isinstance(rec.read_spec(), dict) and isinstance(rec.read_env(), dict)
            assert isinstance(rec.read_status(), dict) and rec.read_status()["state"] in (
                "pending", "running", "finished", "failed")
            assert rec.read_summary() is None or isinstance(rec.read_summary(), dict)
            assert rec.read_analysis() is None or isinstance(rec.read_analysis(), dict)
            assert all(isinstance(r, dict) for r in rec.read_metrics())
            latest_records(rec.metrics_path)
            for problem in rec.problems:
                assert str(problem).startswith(f"{path}: ") and "\n" not in str(problem)
            if run_id == _run_of(path) and damaged:
                assert rec.problem_with(name) is not None, (name, raw)
                if name == "status.json":  # rebuilt: finished only from a whole summary
                    state = rec.read_status()["state"]
                    assert state == ("finished" if rec.read_summary() else "pending")
                    with pytest.raises(RecordError, match="^" + str(path).replace(".", r"\.")):
                        rec.read_status(strict=True)
                if name == "summary.json" and pristine["figures"][run_id]["state"] == "finished":
                    assert rec.read_status()["state"] == "pending"  # resubmitting reruns it
        if name == "sweep.json" and damaged:
            assert [str(p) for p in store.problems] and str(store.problems[0]).startswith(f"{path}: ")
            with pytest.raises(RecordError):
                store.read_meta(strict=True)


@pytest.mark.parametrize("name,how", CASES)
@SETTINGS
@given(data=st.data())
def test_loaders_report_and_status_keep_the_other_runs(pristine, work, name, how, data):
    name, rel, raw = data.draw(damaged_file(pristine, name, how))
    with _damaged(work, rel, raw) as (sweep, path):
        damaged, hit = _is_damaged(path), _run_of(path)

        problems: list = []
        runs = load_sweep(sweep, problems=problems)
        assert set(runs["run_id"]) == set(pristine["ids"])
        counts = _metric_counts(sweep, problems)
        assert all(str(p).startswith(f"{path}: ") and "\n" not in str(p) for p in problems), problems
        assert bool(problems) == (damaged and name not in ("analysis.json", "env.json")), (problems, raw)
        for run_id, n in pristine["metrics"].items():
            assert counts.get(run_id, 0) == n or (run_id == hit and counts.get(run_id, 0) <= n)

        report = load_report_data(sweep)
        assert all(p.startswith(f"{path}: ") and "\n" not in p for p in report.problems), report.problems
        assert bool(report.problems) == damaged, (report.problems, raw)
        figures = _figures(report)
        for run_id, expected in pristine["figures"].items():
            if run_id == hit:
                continue
            assert figures[run_id] == expected, run_id
        if hit and damaged and name == "spec.json":
            assert hit not in figures and "left out of the report" in report.problems[0]

        seen: list = []
        status = _status(sweep, seen)
        assert all(str(p).startswith(f"{path}: ") for p in seen), seen
        if damaged and name in ("status.json", "spec.json", "sweep.json") or (
                damaged and name == "summary.json" and pristine["figures"][hit]["state"] == "finished"):
            assert seen, (name, raw)
        for run_id, row in pristine["status"].items():
            if run_id != hit:
                assert status[run_id] == row, run_id


@settings(SETTINGS, max_examples=5 * SETTINGS.max_examples)
@given(data=st.data())
def test_metrics_lines_torn_in_the_middle_are_skipped_and_counted(pristine, work, data):
    run_id = data.draw(st.sampled_from(pristine["ids"]))
    path = pristine["dir"] / "runs" / run_id / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")[:-1]
    bad = data.draw(st.sets(st.integers(0, len(lines) - 1), min_size=1, max_size=4))
    junk = data.draw(st.lists(st.sampled_from([b"garbage", b"\xff\xfe", b"{", b"[]", b'"text"', b'{"kind": 3}',
                                               b'{"kind": "train", "step": "ten"}', b"null"]),
                              min_size=len(bad), max_size=len(bad)))
    for i, j in zip(sorted(bad), junk):
        lines[i] = j
    with _damaged(work, path.relative_to(pristine["dir"]), b"\n".join(lines) + b"\n") as (_, damaged):
        rec = RunRecord(damaged.parent)
        assert len(rec.read_metrics()) == pristine["metrics"][run_id] - len(bad)
        note = str(rec.problem_with("metrics.jsonl"))
        assert note.startswith(f"{damaged}: {len(bad)} damaged line") and "\n" not in note
        assert f"line {min(bad) + 1}:" in note


# ----------------------------------------------------------------------------- every kind at once

def _damage_every_kind(sweep: Path) -> dict[str, Path]:
    """One damaged file of each kind, each in another run; returns kind -> path."""
    ids = json.loads((sweep / "sweep.json").read_text())["run_ids"]
    finished = [r for r in ids if (sweep / "runs" / r / "summary.json").is_file()]
    runs = sweep / "runs"
    paths = {"summary.json": runs / finished[0] / "summary.json", "metrics.jsonl": runs / finished[1] / "metrics.jsonl",
             "status.json": runs / finished[2] / "status.json", "spec.json": runs / finished[3] / "spec.json",
             "analysis.json": runs / finished[4] / "analysis.json", "env.json": runs / finished[5] / "env.json",
             "sweep.json": sweep / "sweep.json"}
    paths["summary.json"].write_text('{"run_id": "x", "val_ppl": 3')             # torn mid-write
    lines = paths["metrics.jsonl"].read_bytes().split(b"\n")
    paths["metrics.jsonl"].write_bytes(b"\n".join(lines[:4] + [b"garbage"] + lines[4:]))
    paths["status.json"].write_bytes(b'{"state": "fini\xff')                      # not UTF-8
    paths["spec.json"].write_text('["a list"]')
    analysis = json.loads(paths["analysis.json"].read_text())
    paths["analysis.json"].write_text(json.dumps({**analysis, "layer_diff": "oops", "rel_residual": {"x": "y"}}))
    paths["env.json"].write_text("")
    paths["sweep.json"].write_text('{"name": "fixture", "run_ids": [1, 2')
    return paths


def test_a_report_of_a_sweep_damaged_in_every_kind(pristine, tmp_path):
    from harness.report import write_report

    sweep = tmp_path / "sweep"
    shutil.copytree(pristine["dir"], sweep)
    paths = _damage_every_kind(sweep)
    data = load_report_data(sweep)
    for kind, path in paths.items():
        assert sum(p.startswith(f"{path}: ") for p in data.problems) == 1, (kind, data.problems)
    out = write_report(sweep, tmp_path / "report", data=data)
    readme = (out / "README.md").read_text()
    assert readme.count("Damaged record:") == len(paths)
    figures = _figures(data)
    spoiled = {_run_of(p) for p in paths.values()}
    assert _run_of(paths["spec.json"]) not in figures
    assert figures[_run_of(paths["summary.json"])]["state"] == "pending"
    assert figures[_run_of(paths["status.json"])] == pristine["figures"][_run_of(paths["status.json"])]
    for run_id, expected in pristine["figures"].items():
        if run_id not in spoiled:
            assert figures[run_id] == expected


def test_cli_report_names_the_damaged_files_and_writes_the_report(pristine, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(pristine["dir"], sweep)
    runs = sweep / "runs"
    finished = [r for r in pristine["ids"] if pristine["figures"][r]["state"] == "finished"]
    summary, metrics = runs / finished[0] / "summary.json", runs / finished[1] / "metrics.jsonl"
    summary.write_text('{"x')  # the users' error: Expecting property name enclosed in double quotes
    lines = metrics.read_bytes().split(b"\n")
    assert len(lines) > 5
    metrics.write_bytes(b"\n".join(lines[:3] + [b"garbage line"] + lines[3:]))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "harness.report", str(sweep), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "index.html").is_file() and done.stdout.strip() == str(out / "index.html")
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("harness.report: warning: ") for w in warnings), warnings
    assert any(f"{summary}: not JSON" in w and finished[0] in w for w in warnings)
    assert any(f"{metrics}: 1 damaged line (line 4: not JSON" in w and finished[1] in w for w in warnings)
    html = (out / "index.html").read_text()
    assert str(summary) in html and str(metrics) in html
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + len(pristine["ids"])  # every run still listed; the damaged one as pending


WRONG = ([1], "x", {"x": 1}, 7, 2.5, True)


def test_every_field_of_the_wrong_type(pristine, work):
    """Each top-level field of each record replaced by every value of another type: the
    readers refuse the file (one line naming it) or read it without harm to any run."""
    finished = next(r for r in pristine["ids"] if pristine["figures"][r]["state"] == "finished")
    refused = 0
    for name in KINDS[:-1] + ("sweep.json",):
        if name == "metrics.jsonl":
            continue
        rel = Path("sweep.json") if name == "sweep.json" else Path("runs", finished, name)
        original = json.loads((work / rel).read_text())
        for key, value in original.items():
            for wrong in WRONG:
                if type(wrong) is type(value) or (type(value) in (int, float) and type(wrong) in (int, float)):
                    continue
                with _damaged(work, rel, json.dumps({**original, key: wrong}).encode()) as (sweep, path):
                    store = SweepStore(sweep)
                    assert set(store.run_ids()) == set(pristine["ids"]), (name, key, wrong)
                    rec = store.run(finished)
                    status, summary, spec = rec.read_status(), rec.read_summary(), rec.read_spec()
                    assert status["state"] in ("pending", "finished"), (name, key, wrong)
                    problems: list = []
                    rows = {r["run_id"]: r for r in status_rows(sweep, now=NOW, problems=problems)}
                    refused += bool(problems)
                    assert all(str(p).startswith(f"{path}: '{key}' ") for p in problems), (name, key, wrong, problems)
                    assert rows[finished]["state"] == status["state"]
                    if name == "summary.json" and summary is None:
                        assert status["state"] == "pending" and str(path) in status["reason"]
    assert refused > 100


def test_resubmitting_resumes_a_run_whose_status_is_torn(tmp_path):
    """The users' case: a status.json cut mid-write with a byte that is not UTF-8. Resubmitting
    (``open_sweep`` + ``runs_to_do``, as ``harness.submit`` does) no longer raises: a run with a
    whole summary stays done, the others run again; the next status write makes the file whole."""
    from harness.sweep.config import expand_grid, load_job_file
    from harness.sweep.submit import open_sweep, runs_to_do

    quickstart = REPO / "jobs" / "quickstart.yaml"
    job, text = load_job_file(quickstart)
    runs = expand_grid(job, quickstart)
    store = open_sweep(tmp_path, job, text, runs, str(quickstart), fresh=False)
    done, torn = store.run(runs[0].run_id), store.run(runs[1].run_id)
    done.write_summary({"run_id": runs[0].run_id, "steps": 10, "val_ppl": 12.5})
    for rec in (done, torn):
        rec.set_status("running", step=4)
        (rec.dir / "status.json").write_bytes((rec.dir / "status.json").read_bytes()[:40] + b"\xe9")
    store = open_sweep(tmp_path, job, text, runs, str(quickstart), fresh=False)
    todo = [r.run_id for r in runs_to_do(store, runs, retry_failed=False)]
    assert runs[0].run_id not in todo and runs[1].run_id in todo and len(todo) == len(runs) - 1
    assert done.read_status()["state"] == "finished"
    status = torn.read_status()
    assert status["state"] == "pending" and status["reason"].startswith("status.json: not UTF-8 text")
    torn.set_status("running", reason=None)
    assert read_json(torn.dir / "status.json")["state"] == "running"  # whole again
