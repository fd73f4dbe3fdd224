"""End-to-end tests of the bad-input rule of ``python -m harness.submit``.

The rule: a bad job file (or output folder) is rejected BEFORE anything runs, with exactly
one line on stderr, ``error: <file>: <key.path>: <problem naming the bad value and what is
allowed>``, exit code 2, no traceback, and nothing written (no results/ or reports/ folder,
no sweep folder, no generated data).

Each bad job file is ``tests/data/jobs/grid_example.yaml`` (the shape jobs/quickstart.yaml had:
cases of tasks times a ``model.depth`` axis) changed in one place. Most cases call
``harness.sweep.submit.main`` in this process (fast: the heavy imports happen once); a few run
the real command in a subprocess to show that it behaves the same. If a case were wrongly
accepted, the in-process runner stops it before Ray starts (``start_ray`` is replaced by a
function that fails the test). The cluster-resources case needs a real (embedded) Ray and
is marked ``slow``.
"""
from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

# Imported here, outside any captured test: DeepSpeed's log handler keeps the sys.stdout
# of the moment it is first imported, and a test's capture stream is closed afterwards.
import deepspeed  # noqa: F401

import harness.run.dsops
import harness.sweep.submit
from harness.sweep.submit import main

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "tests" / "data" / "jobs" / "grid_example.yaml"  # the quickstart's former shape
SUBPROCESS_TIMEOUT_S = 300


# ----------------------------------------------------------------------------- helpers

def quickstart_raw(tmp_path: Path) -> dict:
    raw = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    raw["data"]["data_dir"] = str(tmp_path / "data" / "synthetic")  # never generated: nothing runs
    return raw


def write_job(tmp_path: Path, change: Callable[[dict], Any] | None = None, *, text: str | None = None,
              name: str = "job.yaml") -> Path:
    """quickstart.yaml, changed by ``change`` (or replaced by ``text``), written into tmp_path."""
    path = tmp_path / name
    if text is None:
        raw = quickstart_raw(tmp_path)
        if change is not None:
            change(raw)
        text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def setter(dotted: str, value: Any) -> Callable[[dict], None]:
    """A change that sets ``dotted`` (a key path into the job) to ``value``."""
    def change(raw: dict) -> None:
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    return change


def single_run(**changes: Any) -> Callable[[dict], None]:
    """A change that drops the grid (one run) and sets the given top-level sections' keys."""
    def change(raw: dict) -> None:
        raw.pop("grid", None)
        for section, values in changes.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
    return change


@pytest.fixture()
def run_cli(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Call ``main`` like the CLI would; returns (exit code, stderr). Fails the test if the
    input gets as far as starting Ray."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the bad input was accepted: harness.submit tried to start Ray")

    monkeypatch.setattr(harness.sweep.submit, "start_ray", refuse)
    monkeypatch.setattr(harness.run.dsops, "prebuild_cpu_ops", lambda *a, **k: None)

    def run(job: Path, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(job), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"),
                     *extra])
        return code, capsys.readouterr().err
    return run


def assert_rejected(code: int, err: str, tmp_path: Path, job: Path | str, key_path: str,
                    *fragments: str) -> str:
    """Exit 2, one ``error: <file>: <key.path>: ...`` line holding ``fragments``, nothing written."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    where = f"error: {job}: {key_path}: " if key_path else f"error: {job}: "
    assert line.startswith(where), f"{line!r} does not start with {where!r}"
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    for folder in ("results", "reports", "data"):
        assert not (tmp_path / folder).exists(), f"{folder}/ was written for rejected input"
    return line


# ----------------------------------------------------------------------------- structure and YAML

def test_quickstart_itself_is_accepted(tmp_path: Path) -> None:
    """The control: the unchanged job passes every pre-run check (so the cases below fail
    because of their one change)."""
    code = main([str(write_job(tmp_path)), "--dry-run", "--results", str(tmp_path / "results"),
                 "--reports", str(tmp_path / "reports")])
    assert code == 0
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("text, fragments", [
    ("name: quickstart\ntrain: {steps: 3\n", ("malformed YAML", "line 3")),
    ("name: [unclosed\n", ("malformed YAML", "line 2")),
    ("name: x\n\ttask: lm\n", ("malformed YAML", "line 2", "'\\t'")),
])
def test_malformed_yaml(tmp_path: Path, run_cli, text: str, fragments: tuple[str, ...]) -> None:
    job = write_job(tmp_path, text=text)
    assert_rejected(*run_cli(job), tmp_path, job, "", *fragments)


def test_unknown_key_suggests_the_right_one(tmp_path: Path, run_cli) -> None:
    job = write_job(tmp_path, lambda raw: raw["train"].__setitem__("batch_sise", raw["train"].pop("batch_size")))
    assert_rejected(*run_cli(job), tmp_path, job, "train", "unknown key 'batch_sise'",
                    "did you mean 'batch_size'?", "allowed:")


def test_unknown_top_level_key(tmp_path: Path, run_cli) -> None:
    job = write_job(tmp_path, lambda raw: raw.__setitem__("modle", raw.pop("model")))
    line = assert_rejected(*run_cli(job), tmp_path, job, "", "unknown key 'modle'", "did you mean 'model'?")
    assert "allowed: compare, data, deepspeed, description, grid, model, name, resources, task, train" in line


@pytest.mark.parametrize("change, key_path, fragments", [
    (setter("train.steps", "many"), "train.steps", ("'many'", "integer")),
    (setter("model.d_model", [32, 64]), "model.d_model", ("[32, 64]", "integer")),
    (setter("train.lr", "fast"), "train.lr", ("'fast'", "number")),
    (setter("resources.cpus_per_worker", "x"), "resources.cpus_per_worker", ("'x'", "number")),
    (setter("train.steps", 2.5), "train.steps", ("2.5", "integer")),
    (setter("data", "synthetic"), "data", ("'synthetic'",)),
    (setter("grid", ["seed"]), "grid", ("dictionary",)),
], ids=["steps-str", "d_model-list", "lr-str", "cpus-str", "steps-float", "data-str", "grid-list"])
def test_wrong_types(tmp_path: Path, run_cli, change, key_path: str, fragments: tuple[str, ...]) -> None:
    job = write_job(tmp_path, change)
    assert_rejected(*run_cli(job), tmp_path, job, key_path, *fragments)


def _grid_depth(index: int, **values: Any) -> Callable[[dict], None]:
    return lambda raw: raw["grid"]["model.depth"][index].update(values)


@pytest.mark.parametrize("value", [0, -3])
@pytest.mark.parametrize("change, key_path", [
    (lambda v: setter("train.steps", v), "train.steps"),
    (lambda v: setter("train.batch_size", v), "train.batch_size"),
    (lambda v: setter("model.d_model", v), "model.d_model"),
    (lambda v: _grid_depth(1, layers=v), "model.depth.layers"),  # weight_tied in the grid
    (lambda v: setter("resources.workers", v), "resources.workers"),
    (lambda v: setter("data.seq_len", v), "data.seq_len"),
], ids=["steps", "batch_size", "d_model", "layers", "workers", "seq_len"])
def test_sizes_must_be_positive(tmp_path: Path, run_cli, change, key_path: str, value: int) -> None:
    job = write_job(tmp_path, change(value))
    assert_rejected(*run_cli(job), tmp_path, job, key_path, str(value))


def test_d_model_not_divisible_by_n_head(tmp_path: Path, run_cli) -> None:
    job = write_job(tmp_path, setter("model.n_head", 3))
    assert_rejected(*run_cli(job), tmp_path, job, "model.n_head", "d_model=32", "n_head=3", "divisible")


@pytest.mark.parametrize("axis", ["model.depth", "cases", "seed"])
def test_grid_that_expands_to_nothing(tmp_path: Path, run_cli, axis: str) -> None:
    job = write_job(tmp_path, lambda raw: raw["grid"].__setitem__(axis, []))
    assert_rejected(*run_cli(job), tmp_path, job, "grid", f"'{axis}' has no values", "nothing")


def test_unknown_grid_key(tmp_path: Path, run_cli) -> None:
    job = write_job(tmp_path, lambda raw: raw["grid"].__setitem__("optimiser.lr", [1, 2]))
    assert_rejected(*run_cli(job), tmp_path, job, "grid", "'optimiser.lr'", "model, data, train")


# ----------------------------------------------------------------------------- names chosen from registries

@pytest.mark.parametrize("change, key_path, fragments", [
    (setter("model.cell", "lstm"), "model.cell", ("'lstm'", "transformer", "trellisnet")),
    (single_run(model={"depth": {"kind": "deeq"}}), "model.depth.kind", ("'deeq'", "deq", "weight_tied")),
    (_grid_depth(4, kind="implicit"), "model.depth.kind", ("'implicit'", "neural_ode")),
    (single_run(model={"depth": {"kind": "deq", "solver": "newton"}}), "model.depth.solver",
     ("'newton'", "broyden", "anderson")),
    (_grid_depth(0, solver="newton"), "model.depth.solver", ("'newton'", "broyden")),
    (single_run(data={"dataset": "imagenet"}), "data.dataset", ("'imagenet'", "'wikitext103'", "'ptb'")),
    (setter("train.precision", "fp8"), "train.precision", ("'fp8'", "'bf16'")),
], ids=["cell", "depth-kind", "depth-kind-in-grid", "solver", "solver-in-grid", "dataset", "precision"])
def test_unknown_names(tmp_path: Path, run_cli, change, key_path: str, fragments: tuple[str, ...]) -> None:
    job = write_job(tmp_path, change)
    assert_rejected(*run_cli(job), tmp_path, job, key_path, *fragments)


@pytest.mark.parametrize("change, fragments", [
    (single_run(task="copy"), ("'synthetic'", "task 'copy'", "copy_memory")),
    (single_run(data={"dataset": "copy_memory"}), ("'copy_memory'", "task 'lm'", "synthetic, ptb, wikitext103")),
    (lambda raw: raw["grid"]["cases"][1].__setitem__("data.dataset", "ptb"), ("'ptb'", "task 'copy'", "cases=")),
], ids=["copy-on-text", "lm-on-copy-memory", "in-a-grid-case"])
def test_task_and_dataset_must_match(tmp_path: Path, run_cli, change, fragments: tuple[str, ...]) -> None:
    job = write_job(tmp_path, change)
    assert_rejected(*run_cli(job), tmp_path, job, "data.dataset", *fragments)


# ----------------------------------------------------------------------------- data directories

CORPUS_FILES = {"wikitext103": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
                "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")}


@pytest.mark.parametrize("dataset", sorted(CORPUS_FILES))
@pytest.mark.parametrize("state", ["missing", "incomplete", "not-given"])
def test_corpus_folder_missing_or_incomplete(tmp_path: Path, run_cli, dataset: str, state: str) -> None:
    corpus = tmp_path / "corpus"  # outside data/: the incomplete one exists before the run
    files = CORPUS_FILES[dataset]
    if state == "incomplete":
        corpus.mkdir()
        (corpus / files[0]).write_text("a b c\n")
    data_dir = None if state == "not-given" else str(corpus)
    job = write_job(tmp_path, single_run(data={"dataset": dataset, "data_dir": data_dir}))
    code, err = run_cli(job)
    if state == "not-given":
        assert_rejected(code, err, tmp_path, job, "data.data_dir", f"'{dataset}' needs a data_dir")
        return
    line = assert_rejected(code, err, tmp_path, job, "data.data_dir", str(corpus), "expected " + ", ".join(files))
    if state == "missing":
        assert "does not exist" in line
    else:
        assert f"is missing {files[1]}, {files[2]}" in line
        assert sorted(p.name for p in corpus.iterdir()) == [files[0]]  # left as it was


def test_partial_synthetic_folder_is_not_overwritten(tmp_path: Path, run_cli) -> None:
    corpus = tmp_path / "half-synthetic"
    corpus.mkdir()
    (corpus / "wiki.train.tokens").write_text("keep me\n")
    job = write_job(tmp_path, single_run(data={"dataset": "synthetic", "data_dir": str(corpus)}))
    assert_rejected(*run_cli(job), tmp_path, job, "data.data_dir", "is missing", "synthetic.json")
    assert (corpus / "wiki.train.tokens").read_text() == "keep me\n"


# ----------------------------------------------------------------------------- DeepSpeed options

def _rename_deepspeed_key(old: str, new: str) -> Callable[[dict], None]:
    return lambda raw: raw["deepspeed"].__setitem__(new, raw["deepspeed"].pop(old))


@pytest.mark.parametrize("change, key_path, fragments", [
    (setter("deepspeed.zero_optimization", {"stage": 7}), "deepspeed.zero_optimization.stage", ("7", "0, 1, 2, 3")),
    (_rename_deepspeed_key("zero_optimization", "zero_optimisation"), "deepspeed",
     ("'zero_optimisation'", "did you mean 'zero_optimization'?")),
    (setter("deepspeed.bf16", {"enabled": "yes"}), "deepspeed.bf16.enabled", ("'yes'", "true or false")),
    (lambda raw: raw["deepspeed"].update(fp16={"enabled": True}, bf16={"enabled": True}),
     "deepspeed", ("fp16", "cannot be simultaneously enabled")),
    (setter("deepspeed.gradient_clipping", "x"), "deepspeed.gradient_clipping", ("'x'", "number")),
    (setter("deepspeed.zero_optimization", {"stage": 0, "stgae": 1}), "deepspeed.zero_optimization.stgae",
     ("1", "Extra inputs")),
    (setter("deepspeed.optimizer", "adam"), "deepspeed.optimizer", ("'adam'", "mapping")),
    (setter("deepspeed.optimizer", {"type": "Adamm"}), "deepspeed.optimizer.type", ("'Adamm'", "adamw")),
    (setter("deepspeed.scheduler", {"type": "Cosine"}), "deepspeed.scheduler.type", ("'Cosine'", "WarmupCosineLR")),
], ids=["zero-stage-7", "zero-typo", "bf16-yes", "fp16-and-bf16", "clipping-str", "zero-inner-typo",
        "optimizer-str", "optimizer-type", "scheduler-type"])
def test_deepspeed_options_deepspeed_would_reject(tmp_path: Path, run_cli, change, key_path: str,
                                                  fragments: tuple[str, ...]) -> None:
    job = write_job(tmp_path, change)
    assert_rejected(*run_cli(job), tmp_path, job, key_path, *fragments)


# ----------------------------------------------------------------------------- the file itself

@pytest.mark.parametrize("where", ["top", "nested"])
def test_yaml_that_builds_python_objects_is_refused_and_not_run(tmp_path: Path, run_cli, where: str) -> None:
    marker = tmp_path / "pwned"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    text = (f"name: {tag}\n" if where == "top"
            else QUICKSTART.read_text(encoding="utf-8").replace("steps: 1000", f"steps: {tag}"))
    assert tag in text
    job = write_job(tmp_path, text=text)
    assert_rejected(*run_cli(job), tmp_path, job, "", "python/object/apply:os.system", "not allowed")
    assert not marker.exists()


def test_job_file_that_does_not_exist(tmp_path: Path, run_cli) -> None:
    job = tmp_path / "no-such-sweep.yaml"
    assert_rejected(*run_cli(job), tmp_path, job, "", "no such job file")


@pytest.mark.parametrize("text, kind", [("- name: a\n- name: b\n", "list"), ("", "NoneType"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, run_cli, text: str, kind: str) -> None:
    job = write_job(tmp_path, text=text)
    assert_rejected(*run_cli(job), tmp_path, job, "", "top level must be a mapping", f"got {kind}")


def test_job_file_that_is_a_folder(tmp_path: Path, run_cli) -> None:
    job = tmp_path / "sweep.yaml"
    job.mkdir()
    assert_rejected(*run_cli(job), tmp_path, job, "", "cannot read the job file")


# ----------------------------------------------------------------------------- output folders

def test_results_folder_under_a_regular_file(tmp_path: Path, run_cli) -> None:
    job = write_job(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err = run_cli(job, "--results", str(blocker / "results"))
    assert_rejected(code, err, tmp_path, job, "", f"results folder {blocker / 'results'}", "not a folder")


def test_reports_folder_that_cannot_be_written(tmp_path: Path, run_cli) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    job = write_job(tmp_path)
    code, err = run_cli(job, "--reports", "/proc/deqbench-reports")
    assert_rejected(code, err, tmp_path, job, "", "reports folder /proc/deqbench-reports is not writable")


# ----------------------------------------------------------------------------- the real command

def cli_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
            "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                   str(REPO / ".cache" / "torch_extensions"))}


def run_real_cli(job: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.submit", str(job), "--results", str(tmp_path / "results"),
           "--reports", str(tmp_path / "reports"), *extra]
    return subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)


def test_real_cli_refuses_python_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    job = write_job(tmp_path, text=f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = run_real_cli(job, tmp_path)
    assert_rejected(proc.returncode, proc.stderr, tmp_path, job, "", "python/object/apply:os.system")
    assert not marker.exists()


def test_real_cli_missing_job_file(tmp_path: Path) -> None:
    job = tmp_path / "missing.yaml"
    proc = run_real_cli(job, tmp_path)
    assert_rejected(proc.returncode, proc.stderr, tmp_path, job, "", "no such job file")


def test_real_cli_incomplete_corpus(tmp_path: Path) -> None:
    """Passes the model and DeepSpeed checks first (the heavy imports), then fails on data."""
    corpus = tmp_path / "ptb"
    corpus.mkdir()
    (corpus / "ptb.train.txt").write_text("a b c\n")
    job = write_job(tmp_path, single_run(data={"dataset": "ptb", "data_dir": str(corpus)}))
    proc = run_real_cli(job, tmp_path)
    assert_rejected(proc.returncode, proc.stderr, tmp_path, job, "data.data_dir",
                    "is missing ptb.valid.txt, ptb.test.txt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_real_cli_resources_no_node_has(tmp_path: Path) -> None:
    """A worker asking for 64 CPUs on a 2-CPU embedded Ray: refused once Ray is up."""
    job = write_job(tmp_path, single_run(resources={"workers": 1, "cpus_per_worker": 64}))
    proc = run_real_cli(job, tmp_path, "--num-cpus", "2", "--dashboard-port", str(free_port()))
    line = assert_rejected(proc.returncode, proc.stderr, tmp_path, job, "resources", "64", "largest: 2")
    assert "no node" in line


def test_a_bad_DEQBENCH_NATIVE_is_refused_before_anything_runs(tmp_path: Path, run_cli, monkeypatch) -> None:
    """Every solve in every worker reads it: a bad value must stop the sweep here, in one line."""
    monkeypatch.setenv("DEQBENCH_NATIVE", "fast")
    job = write_job(tmp_path)
    assert_rejected(*run_cli(job), tmp_path, job, "", "environment variable DEQBENCH_NATIVE must be one of",
                    "('auto', '0', '1')", "got 'fast'")


# ----------------------------------------------------------------------------- data.synthetic

@pytest.mark.parametrize("synthetic, key_path, fragments", [
    ({"vocab_size": 20, "successors": 11}, "data.synthetic", ("successors (11)", "vocab_size // 2 (10)")),
    ({"vocab_size": 2}, "data.synthetic.vocab_size", ("2", "greater than or equal to 3")),
    ({"vocab": 300}, "data.synthetic", ("unknown key 'vocab'", "vocab_size")),
], ids=["successors-too-many", "vocab-too-small", "unknown-key"])
def test_bad_synthetic_spec(tmp_path: Path, run_cli, synthetic: dict, key_path: str,
                            fragments: tuple[str, ...]) -> None:
    job = write_job(tmp_path, setter("data.synthetic", synthetic))
    assert_rejected(*run_cli(job), tmp_path, job, key_path, *fragments)


def test_a_folder_holding_another_synthetic_corpus_is_refused(tmp_path: Path, run_cli) -> None:
    """data.synthetic names the corpus a run needs: a folder generated from another spec is
    refused in one line naming the differing key, before Ray starts, and left as it was."""
    from harness.data.synthetic_corpus import SyntheticSpec, write_synthetic_corpus

    corpus = tmp_path / "corpora" / "small"
    write_synthetic_corpus(corpus, SyntheticSpec(vocab_size=40, train_tokens=500, valid_tokens=100,
                                                 test_tokens=100))
    before = {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()}

    def change(raw: dict) -> None:
        raw["data"]["data_dir"] = str(corpus)
        raw["data"]["synthetic"] = {"vocab_size": 60, "train_tokens": 500, "valid_tokens": 100, "test_tokens": 100}
    job = write_job(tmp_path, change)
    code, err = run_cli(job)
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {job}: data.data_dir: {corpus}") and "vocab_size=40" in err and \
        "vocab_size=60" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()} == before
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("damage, fragment", [
    (b"", "train split {path} is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe binary", "corpus file {path} is not UTF-8 text"),
], ids=["empty", "binary"])
def test_a_broken_split_is_refused_before_ray_starts(tmp_path: Path, run_cli, damage: bytes, fragment: str) -> None:
    """A PTB folder whose train split is empty or binary: one line naming the file, before Ray
    starts (run_cli fails the test if it does), not one failure per run minutes later."""
    corpus = tmp_path / "corpora" / "ptb"
    shutil.copytree(REPO / "tests" / "data" / "ptb", corpus)
    (corpus / "ptb.train.txt").write_bytes(damage)

    def change(raw: dict) -> None:
        raw.pop("grid", None)
        raw["data"] = {"dataset": "ptb", "data_dir": str(corpus), "seq_len": 16}
    job = write_job(tmp_path, change)
    code, err = run_cli(job)
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {job}: data.data_dir: ") and \
        fragment.format(path=corpus / "ptb.train.txt") in err, err


def test_two_synthetic_specs_for_one_folder_are_refused_before_ray_starts(tmp_path: Path, run_cli) -> None:
    def change(raw: dict) -> None:
        raw["grid"] = {"cases": [{"label": "a", "data.synthetic": {"vocab_size": 40}},
                                 {"label": "b", "data.synthetic": {"vocab_size": 60}}]}
    job = write_job(tmp_path, change)
    assert_rejected(*run_cli(job), tmp_path, job, "data.synthetic", "two runs ask for different synthetic corpora")
