"""Property tests of the bad-input rule: for EVERY job file, the checks either accept it or
reject it with one :class:`JobFileError` line; no other exception escapes.

The checked sequence is the one of ``harness.sweep.submit.prepare``: ``load_job_file``,
``expand_grid``, ``checks.check_models``, ``checks.check_deepspeed``, ``checks.check_data``.
Job files come from two generators (hypothesis):

- mutants of the shipped job files (jobs/*.yaml): keys dropped, renamed, duplicated (in the
  text), values replaced by other types, huge and tiny numbers, NaN and infinities, booleans,
  empty, very long and odd Unicode strings, nested lists and maps, deep nesting, YAML aliases
  (shared and self-referring values), grid axes and grid.cases entries of any kind, and lines
  of the YAML text duplicated, dropped or cut;
- arbitrary YAML text: random data dumped as YAML, and strings of YAML tokens.

Every ``data_dir`` is first pointed into the example's temporary folder, where nothing exists
(a mutation may point it anywhere: the checks only read). Then a fixed sample of generated
files goes through the real command line, ``python -m harness.submit FILE --dry-run`` and,
for rejected files only, the same without ``--dry-run`` (``--results``/``--reports`` in the
temporary folder): exit 0 or 2, no traceback, one ``error:`` line equal to the in-process
message, and nothing written for a reject. An accepted file is never run for real.

Profiles (``HYPOTHESIS_PROFILE``): ``default`` (derandomized, a few dozen examples per
test, well under a minute in all) and ``slow`` (random, many more examples)::

    HYPOTHESIS_PROFILE=slow .venv/bin/python -m pytest tests/test_properties.py
"""
from __future__ import annotations

import copy
import datetime
import inspect
import math
import os
import random
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# Imported here, outside any captured test: DeepSpeed's log handler keeps the sys.stdout
# of the moment it is first imported, and a test's capture stream is closed afterwards.
import deepspeed  # noqa: F401

from harness.sweep import checks
from harness.sweep.config import JobFileError, expand_grid, load_job_file

REPO = Path(__file__).resolve().parent.parent
JOBS = {p.stem: p for p in sorted((REPO / "jobs").glob("*.yaml"))}
CLI_TIMEOUT_S = 240

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("default", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("slow", max_examples=3000, **_COMMON)
# hunting: many random examples, a failure reported as found (shrinking can take minutes)
settings.register_profile("explore", max_examples=2000, phases=[Phase.generate], **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# ----------------------------------------------------------------------------- the property

def _expand(job, path: Path, base_dir: Path) -> list[dict]:
    if "base_dir" in inspect.signature(expand_grid).parameters:  # as harness.sweep.submit.prepare calls it
        return expand_grid(job, path, base_dir=base_dir)
    return expand_grid(job, path)


def outcome(path: Path) -> str | None:
    """None if the job is accepted, else the rejection's one line; anything else escapes."""
    try:
        job, _ = load_job_file(path)
        runs = _expand(job, path, path.parent)
        checks.check_models(runs, path)
        checks.check_deepspeed(runs, path)
        checks.check_data(runs, path)
    except JobFileError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, f"not one line: {message!r}"
        assert message.startswith(f"{path}: ") and message[len(f"{path}: "):].strip(), message
        return message
    return None


# ----------------------------------------------------------------------------- values

FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e-300, -0.0, 0.0, 0.5, 1.0, 2.5e-4]
INTS = [0, 1, -1, 2, 3, 7, 2 ** 31, 2 ** 53, 2 ** 53 + 1, 2 ** 63, 10 ** 30, -(10 ** 30), 59950, 200000]
STRINGS = ["", " ", "\ud800", "a\x00b", "ключ", "模型", "🙂", "line\nbreak", "\u2028",
           "~", "/", "../../..", "inf", "nan", "true", "1e3", "0x10", "deq", "transformer", "lm",
           "copy", "synthetic", "ptb", "model.depth", "grid.cases", "label"]
FIXED_VALUES: list[Any] = [None, True, False, *FLOATS, *INTS, *STRINGS, "x" * 10_000, [], {}, [[]], {"": None},
                           [1, 2, 3], {"kind": "deq"}, {"kind": "explicit", "layers": 10 ** 6},
                           datetime.date(2024, 1, 1), b"\x00\xff", {1, 2}]  # YAML dates, !!binary, !!set

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(FLOATS), st.sampled_from(INTS), st.sampled_from(STRINGS),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from([300, 5_000, 100_000]).map(lambda n: "x" * n),  # very long strings
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)),
    max_leaves=12)


def nested(depth: int, kind: str = "list") -> Any:
    if depth > 200:  # too deep for yaml.safe_dump: a token that dump() writes out as text
        return f"DEEPNEST_{depth}_{kind}"
    out: Any = 1
    for _ in range(depth):
        out = [out] if kind == "list" else {"a": out}
    return out


def self_referring() -> list:
    loop: list = [1]
    loop.append(loop)
    return loop


class Picker:
    """Choices for the mutation engine: from hypothesis (shrinks) or from a seeded Random."""

    def __init__(self, data=None, seed: int | None = None):
        self.data, self.rng = data, random.Random(seed)

    def pick(self, seq):
        seq = list(seq)
        return self.data.draw(st.sampled_from(seq)) if self.data else self.rng.choice(seq)

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi)) if self.data else self.rng.randint(lo, hi)

    def value(self) -> Any:
        kind = self.pick(["fixed", "generated", "deep", "shared", "loop"])
        if kind == "deep":
            return nested(self.pick([5, 31, 32, 33, 100, 2000]), self.pick(["list", "map"]))
        if kind == "loop":
            return self_referring()
        if kind == "shared":  # one object used many times: YAML anchors and aliases
            leaf = [self.pick(INTS)] * 10
            return [[leaf] * 10] * self.pick([2, 10])
        if kind == "generated" and self.data:
            return self.data.draw(values)
        return copy.deepcopy(self.pick(FIXED_VALUES))


# ----------------------------------------------------------------------------- mutations

def shipped_raw(name: str, tmp: Path) -> dict:
    raw = yaml.safe_load(JOBS[name].read_text(encoding="utf-8"))
    raw["data"]["data_dir"] = str(tmp / "data" / name)  # never there: nothing is read or made
    return raw


def _paths(node: Any, prefix: tuple = (), seen: frozenset = frozenset()) -> list[tuple]:
    """Key paths into ``node``, not into a value already above (a self-referring one) nor deep."""
    if id(node) in seen or len(prefix) > 40:
        return []
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append(prefix + (key,))
        out.extend(_paths(value, prefix + (key,), seen | {id(node)}))
    return out


def _parent(raw: dict, path: tuple) -> Any:
    node = raw
    for part in path[:-1]:
        node = node[part]
    return node


# every value of every shipped job file: realistic values in the wrong place
SHIPPED_VALUES = [v for p in JOBS.values() for v in
                  (lambda raw: [_parent(raw, q)[q[-1]] for q in _paths(raw)])(yaml.safe_load(p.read_text()))]
FIELD_NAMES = sorted({str(q[-1]) for p in JOBS.values() for q in _paths(yaml.safe_load(p.read_text()))
                      if isinstance(q[-1], str)} | {"vocab_size", "n_classes", "segments", "t1", "rtol",
                                                    "max_num_steps", "jac_reg", "grad", "memory_cap_gb"})
GRID_KEYS = ["seed", "task", "model", "model.depth", "model.d_model", "model.depth.layers", "train.lr",
             "train.steps", "data", "data.dataset", "data.data_dir", "resources.workers",
             "deepspeed.zero_optimization.stage", "deepspeed", "model.adaptive_softmax.cutoffs",
             "optimiser.lr", "", ".", "model..x", "seed.x"]


def mutate(raw: dict, pick: Picker) -> None:
    """One change of ``raw`` in place (the value or key at a random path, or the grid)."""
    op = pick.pick(["drop", "replace", "replace", "number", "number", "swap", "rename", "nest", "grid", "cases"])
    if op == "grid":
        grid = raw.setdefault("grid", {})
        if not isinstance(grid, dict):
            raw["grid"] = grid = {}
        grid[pick.pick(GRID_KEYS)] = pick.pick([[pick.value()], [pick.value(), pick.value()], pick.value(),
                                                [copy.deepcopy(pick.pick(SHIPPED_VALUES))], []])
        return
    if op == "cases":
        grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
        raw["grid"] = grid
        case = {pick.pick(GRID_KEYS + ["label"]): pick.value() for _ in range(pick.integer(0, 3))}
        grid["cases"] = pick.pick([[case], [case, dict(case)], [pick.value()], pick.value(),
                                   [{"label": pick.value(), "model.depth": pick.value()}]])
        return
    paths = _paths(raw)
    if not paths:
        raw[pick.pick(FIELD_NAMES)] = pick.value()
        return
    if op == "number":  # a number (or boolean) replaced by another: reaches the deeper checks
        numbers = [q for q in paths if isinstance(_parent(raw, q)[q[-1]], (int, float))]
        paths = numbers or paths
    path = pick.pick(paths)
    parent, key = _parent(raw, path), path[-1]
    if op == "number":
        parent[key] = pick.pick([*INTS, *FLOATS, True, False, -parent[key], parent[key] * 1000])
    elif op == "drop":
        del parent[key]
    elif op == "replace":
        parent[key] = pick.value()
    elif op == "swap":
        parent[key] = copy.deepcopy(pick.pick(SHIPPED_VALUES))
    elif op == "nest":
        parent[key] = pick.pick([[parent[key]], {"x": parent[key]}, [parent[key]] * 3])
    elif op == "rename" and isinstance(parent, dict):
        text = str(key)
        new = pick.pick([text[:-1] or "x", text.upper(), text + "x", pick.pick(FIELD_NAMES), 1, True, None,
                         "", "ключ", text + "\u0301"])
        parent[new] = parent.pop(key)


def mutate_text(text: str, pick: Picker) -> str:
    """A change of the YAML text: a line duplicated (a key given twice), dropped or cut."""
    lines = text.splitlines()
    if not lines:
        return text
    i = pick.integer(0, len(lines) - 1)
    op = pick.pick(["duplicate", "drop", "cut", "junk"])
    if op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "drop":
        del lines[i]
    elif op == "cut":
        lines[i] = lines[i][: pick.integer(0, len(lines[i]))]
    else:
        lines[i] += pick.pick([" [", " {", ": :", " &a", " *zz", " !!python/name:os.system", "\t", " '"])
    return "\n".join(lines) + "\n"


def dump(raw: Any) -> str:
    text = yaml.safe_dump(raw, sort_keys=False, width=100)
    return re.sub(r"DEEPNEST_(\d+)_(list|map)", lambda m: ("[" * int(m[1]) + "1" + "]" * int(m[1])
                  if m[2] == "list" else "{a: " * int(m[1]) + "1" + "}" * int(m[1])), text)


def mutant_text(pick: Picker, tmp: Path) -> str:
    raw = shipped_raw(pick.pick(sorted(JOBS)), tmp)
    for _ in range(pick.pick([1, 1, 1, 2, 2, 3, 4])):
        mutate(raw, pick)
    text = dump(raw)
    if pick.integer(0, 4) == 0:
        text = mutate_text(text, pick)
    return text


# ----------------------------------------------------------------------------- arbitrary YAML

YAML_TOKENS = ["{", "}", "[", "]", ":", ": ", ", ", "- ", "\n", "\n  ", "? ", "&a ", "*a", "!!str ", "!!int ",
               "!!float ", "!!binary ", "!!set ", "!!omap ", "!!python/object/apply:os.system ", "!foo ",
               "'", '"', "\\u", "#", "|\n", ">\n", "---\n", "...\n", "<<: ", "name", "task", "model",
               "train", "grid", "data", "deepspeed", "cases", "lm", "deq", ".inf", ".nan", "-.inf", "1e999",
               "0x1F", "0o17", "2024-13-45", "12:30:00", "~", "null", "yes", "true", "1", "0", "-1",
               "99999999999999999999999", "ключ", "🙂", " ", "\t", "%YAML 1.1\n"]

yaml_texts = st.one_of(
    values.map(lambda v: yaml.safe_dump(v)),
    st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join),
    st.tuples(st.sampled_from(sorted(JOBS)), st.lists(st.sampled_from(YAML_TOKENS), max_size=12)).map(
        lambda t: JOBS[t[0]].read_text(encoding="utf-8") + "".join(t[1])),
    st.integers(1, 3000).map(lambda n: "name: x\nmodel: " + "[" * n + "]" * n + "\n"),
    st.integers(1, 3000).map(lambda n: "model: " + "{a: " * n + "1" + "}" * n + "\n"),
)


# ----------------------------------------------------------------------------- the tests

@settings(PROFILE)
@given(st.data())
def test_mutated_shipped_jobs_are_accepted_or_rejected_in_one_line(data) -> None:
    with tempfile.TemporaryDirectory(prefix="deqbench-prop-") as tmp:
        path = Path(tmp) / "job.yaml"
        path.write_text(mutant_text(Picker(data), Path(tmp)), encoding="utf-8")
        outcome(path)


@settings(PROFILE)
@given(yaml_texts)
def test_arbitrary_yaml_is_accepted_or_rejected_in_one_line(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="deqbench-prop-") as tmp:
        path = Path(tmp) / "job.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        outcome(path)


def test_unmutated_shipped_jobs_are_accepted(tmp_path: Path) -> None:
    """The generators start from valid files (ptb and wt103 lack their corpus here)."""
    for name in JOBS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump(shipped_raw(name, tmp_path)), encoding="utf-8")
        message = outcome(path)
        if name in ("ptb_sweep", "wt103_sweep"):
            assert message and "data.data_dir" in message and "does not exist" in message, message
        else:
            assert message is None, message


# A fixed sample for the real command line: the first seeded mutant (seeds 0, 1, ...) of each
# outcome: accepted, and rejected by each stage in turn (7 files, 13 runs of the command).
STAGES = ("accepted", "yaml", "structure", "grid point", "model", "deepspeed", "data")
MAX_SEEDS = 3000


def _stage(message: str | None, path: Path) -> str:
    if message is None:
        return "accepted"
    where = message[len(f"{path}: "):]
    if "(in the run with" in where:
        return "grid point"
    if "(run " in where:
        return "deepspeed" if where.startswith("deepspeed") else "model" if where.startswith("model") else "other"
    if where.startswith("data.data_dir:") and "data dir" in where:
        return "data"
    return "yaml" if where.startswith(("line ", "malformed YAML")) else "structure"


def cli_sample(root: Path) -> list[tuple]:
    """``[(name, seed), ...]``: the same list on every machine (no hypothesis here)."""
    found: dict[str, int] = {}
    probe = root / "probe"
    probe.mkdir()
    for seed in range(MAX_SEEDS):
        path = probe / "job.yaml"
        path.write_text(mutant_text(Picker(seed=seed), probe), encoding="utf-8")
        found.setdefault(_stage(outcome(path), path), seed)
        if all(stage in found for stage in STAGES):
            break
    missing = [stage for stage in STAGES if stage not in found]
    assert not missing, f"no mutant among seeds 0-{MAX_SEEDS - 1} is {missing}: {found}"
    return [(None, found[stage]) for stage in STAGES]


def _cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.submit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def _check_cli_case(case: tuple, root: Path) -> None:
    name, seed = case
    tmp = root / (name or f"seed{seed}")
    tmp.mkdir()
    path = tmp / "job.yaml"
    text = dump(shipped_raw(name, tmp)) if name else mutant_text(Picker(seed=seed), tmp)
    path.write_text(text, encoding="utf-8")
    expected = outcome(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    runs = [["--dry-run"]]
    if expected is not None:  # rejects only: an accepted job is never run for real
        # guard: were it wrongly accepted, joining this address fails instead of running a sweep
        runs.append(["--results", str(tmp / "results"), "--reports", str(tmp / "reports")])
    for extra in runs:
        proc = _cli([str(path), *extra], tmp, env if extra == ["--dry-run"] else
                    {**env, "RAY_ADDRESS": "127.0.0.1:9"})
        where = f"{case} {extra}: rc {proc.returncode}\nstderr: {proc.stderr[-3000:]}\nfile:\n{text[:2000]}"
        assert "Traceback" not in proc.stderr, where
        if expected is None:
            assert proc.returncode == 0, where
        else:
            assert proc.returncode == 2, where
            assert proc.stderr.splitlines() == [f"error: {expected}"], where
    if expected is not None:
        left = [p.name for p in (tmp / "results", tmp / "reports", tmp / "data") if p.exists()]
        assert not left, f"{case}: written for a rejected job: {left}"


def test_real_cli_on_a_sample_of_generated_files(tmp_path: Path) -> None:
    sample = cli_sample(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(_check_cli_case, case, tmp_path) for case in sample]:
            future.result()


@pytest.mark.parametrize("text, fragment", [
    ("name: x\nmodel: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("a: &a [1, *a]\n", "nested more than"),
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", "more than 100000 values"),
    ("? [1, 2]\n: 3\n", "a mapping key is a list"),
    ("name: 2024-13-45\n", "a value cannot be read"),
    ("name: x\n.inf: 1\n", "the key inf is not allowed: keys must be strings"),
    ("deepspeed: {optimizer: {params: {lr: 2024-01-01}}}\n", "deepspeed.optimizer.params.lr: datetime.date"),
    ("grid: {seed: !!set {1, 2}}\n", "grid.seed: {1, 2} is not allowed: a job file holds strings"),
    ("model: {cell: !!binary aGVsbG8=}\n", "model.cell: b'hello' is not allowed"),
    ("model: {x: !!float ''}\n", "a value cannot be read"),
], ids=["deep-brackets", "self-alias", "alias-bomb", "list-key", "bad-date", "float-key", "date", "set", "binary",
        "empty-float"])
def test_yaml_that_used_to_escape(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    message = outcome(path)
    assert message and fragment in message, message


@pytest.mark.parametrize("dotted, value, fragment", [
    ("train.lr", math.inf, "train.lr: inf is not allowed: numbers must be finite"),
    ("train.lr", "inf", "train.lr: 'inf' is not allowed: Input should be a finite number"),
    ("model.depth.tol", math.nan, "model.depth.tol: nan is not allowed: numbers must be finite"),
    ("grid.train.lr", [1e-3, math.inf], "grid.train.lr[1]: inf is not allowed"),
    ("deepspeed.gradient_clipping", -math.inf, "deepspeed.gradient_clipping: -inf is not allowed"),
    ("train.steps", True, "train.steps: True is not allowed: expected an integer, not a boolean"),
    ("resources.cpus_per_worker", True, "resources.cpus_per_worker: True is not allowed: expected a number"),
    ("model.d_model", True, "model.d_model: expected an integer, got True"),
    ("model.dropout", False, "model.dropout: expected a number, got False"),
    ("deepspeed.zero_optimization", {"stage": True}, "deepspeed.zero_optimization.stage: True is not allowed"),
    ("deepspeed.gradient_clipping", True, "deepspeed.gradient_clipping: True is not allowed"),
    ("train.steps", 10 ** 8, "train.steps: 100000000 is not allowed: Input should be less than or equal to 10000000"),
    ("train.batch_size", 10 ** 6, "less than or equal to 16384"),
    ("data.seq_len", 10 ** 6, "less than or equal to 16384"),
    ("train.seed", 2 ** 40, "less than or equal to 4294967295"),
    ("resources.workers", 10 ** 5, "less than or equal to 1024"),
    ("model.d_model", 10 ** 12, "model.d_model: must be at most 65536"),
    ("model.d_inner", 10 ** 7, "model.d_inner: must be at most 1048576"),
    ("model.depth", {"kind": "explicit", "layers": 10 ** 6}, "model.depth.layers: must be at most 1024"),
    ("model.depth", {"kind": "deq", "max_iter": 10 ** 6}, "model.depth.max_iter: must be at most 10000"),
    ("model.depth", {"kind": "neural_ode", "steps": 10 ** 6}, "model.depth.steps: must be in [1, 10000]"),
    ("model.vocab_size", 10 ** 30, "integers must be at most 2**53"),
    ("model.adaptive_softmax", {"cutoffs": [10, 20], "div_value": 1e300}, "model.adaptive_softmax.div_value"),
    ("model.adaptive_softmax", "x", "model.adaptive_softmax: expected a mapping, got 'x'"),
    ("deepspeed.zero_optimization", {"stage": 7}, "stage: 7 is not allowed: use 0, 1 or 2"),
    ("deepspeed.optimizer", {"type": [1]}, "deepspeed.optimizer.type: [1] is not allowed"),
    ("deepspeed.checkpoint", {"tag_validation": 3}, "deepspeed.checkpoint: DeepSpeed cannot read this"),
    ("data.data_dir", "a\x00b", "data.data_dir: 'a\\x00b' is not allowed"),
    ("grid.cases", [{1: 2}], "grid.cases[0]: the key 1 is not allowed: keys must be strings"),
    ("grid.seed", list(range(1001)), "at most 1000 are allowed"),
])
def test_values_that_used_to_escape_or_pass(tmp_path: Path, dotted: str, value: Any, fragment: str) -> None:
    raw = shipped_raw("quickstart", tmp_path)
    if dotted.startswith("grid."):
        raw["grid"][dotted[len("grid."):]] = value
    else:
        raw.pop("grid")  # one run, as written
        raw.pop("compare", None)  # its pairs name grid models
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / "job.yaml"
    path.write_text(dump(raw), encoding="utf-8")
    message = outcome(path)
    assert message and fragment in message, message
    assert "0, 1, 2, 3 or 3" not in message


def test_a_model_too_large_for_any_accelerator_is_refused(tmp_path: Path) -> None:
    raw = shipped_raw("quickstart", tmp_path)
    raw.pop("grid")
    raw.pop("compare", None)  # its pairs name grid models
    raw["model"].update(d_model=8192, n_head=8, d_inner=2 ** 20, depth={"kind": "explicit", "layers": 1000})
    path = tmp_path / "job.yaml"
    path.write_text(dump(raw), encoding="utf-8")
    message = outcome(path)
    assert message and "model: 1.75e+13 parameters is too many: at most 1e+10" in message, message


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    """The loader that refuses a key given twice leaves ``<<: *anchor`` merges alone."""
    raw = shipped_raw("quickstart", tmp_path)
    raw.pop("grid")
    raw.pop("compare", None)  # its pairs name grid models
    text = dump(raw) + ("grid:\n  cases:\n    - &lm {label: lm, task: lm, data.dataset: synthetic}\n"
                        "    - {<<: *lm, label: lm-seed1, seed: 1}\n")
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    assert outcome(path) is None
    job, _ = load_job_file(path)
    assert job.grid["cases"][1] == {"label": "lm-seed1", "task": "lm", "data.dataset": "synthetic", "seed": 1}


def test_a_key_that_looks_like_pydantics_marker_is_named(tmp_path: Path) -> None:
    """Found by the arbitrary-YAML property: a top-level key "[key]" broke the error formatting."""
    path = tmp_path / "job.yaml"
    path.write_text("'[key]': [1]\n", encoding="utf-8")
    message = outcome(path)
    assert message and "unknown key '[key]'" in message, message
