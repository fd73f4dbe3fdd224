"""Job files -> validated run specs.

A job file (YAML, read with the safe loader) describes one sweep::

    name: quickstart                 # sweep name: results/<name>/, reports/<name>/
    task: lm                         # lm | copy
    data: {dataset: synthetic, data_dir: data/synthetic, seq_len: 32}
    model: {cell: transformer, d_model: 32, n_head: 2, d_inner: 64,
            depth: {kind: deq, max_iter: 16, tol: 1.0e-3}}
    grid:                            # dotted key -> list of values; the product is the runs
      model.depth: [{kind: deq, max_iter: 16}, {kind: weight_tied, layers: 4}]
      seed: [0, 1]                   # shorthand for train.seed
      cases:                         # one axis setting several keys together (optional label)
        - {label: lm, task: lm, data.dataset: synthetic}
        - {label: copy, task: copy, data.dataset: copy_memory}
    train: {steps: 60, batch_size: 8, lr: 1.0e-3, eval_interval: 20}
    resources: {workers: 2, cpus_per_worker: 1, gpus_per_worker: 0, node_timeout_s: 300}
    deepspeed: {zero_optimization: {stage: 0}, gradient_clipping: 1.0}   # DeepSpeed's own keys

A relative ``data.data_dir`` is taken from the folder the command runs in (not the job
file's folder), and stored absolute in every run spec; ``--set KEY=VALUE`` on the command
line changes a value before validation (``harness.sweep.overrides``).

Everything is checked before anything runs: structure and types with pydantic, the model
block by building each run's model on the ``meta`` device (no memory, no time), the
DeepSpeed block with DeepSpeed's own config classes. Every problem becomes one
:class:`JobFileError` line naming the file, the key path, the bad value and what is allowed.

Each run spec gets a ``run_id``: a short hash of its canonical JSON, so the same job file
always yields the same ids (which is how a resubmitted sweep skips finished runs).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from harness.records.compare import CompareSettings, model_name
from harness.run.spec import (MAX_RUNS, MAX_SEED, DataSection, DeepSpeedSection, ResourcesSection, RunSpec, TrainSection,
                              _Section, _short, _unknown)

TASK_DATASETS = {"lm": ("synthetic", "ptb", "wikitext103"), "copy": ("copy_memory",)}
GRID_ROOTS = ("model", "data", "train", "deepspeed", "resources")
# Anywhere in a job file (model block, grid values, DeepSpeed block included)
MAX_NESTING = 32                # mappings and lists inside each other
MAX_VALUES = 100_000            # values in all (a YAML alias counts each time it is used)
MAX_INT = 2 ** 53               # integers are exact doubles and fit in int64


class JobFileError(ValueError):
    """A job file was rejected; ``str()`` is one line: ``file: key.path: problem``."""

    def __init__(self, file: str | Path, path: str, problem: str):
        path, problem = _one_line(path), _one_line(problem)  # a value's text may hold line breaks
        self.file, self.path, self.problem = _one_line(file), path, problem
        where = f"{self.file}: {path}: " if path else f"{self.file}: "
        super().__init__(where + problem)


def _one_line(text: Any) -> str:
    return " ".join(str(text).splitlines())


class JobFile(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    description: str = ""
    task: Literal["lm", "copy"]
    data: DataSection
    model: dict[str, Any]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    train: TrainSection
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    compare: CompareSettings = Field(default_factory=CompareSettings)  # the report's rules, not the runs'

    @model_validator(mode="before")
    @classmethod
    def _plain_data(cls, data: Any) -> Any:
        """Every value anywhere (model block, grid, DeepSpeed block too) is plain, finite data."""
        _check_values(data)
        return data

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        n_runs = 1
        for key, values in grid.items():
            if len(values) == 0:
                raise ValueError(f"grid key {key!r} has no values, so the grid expands to nothing")
            n_runs *= len(values)
            if key == "cases":
                for case in values:
                    if not isinstance(case, dict) or not case:
                        raise ValueError("grid.cases must be a list of mappings {dotted.key: value}")
                    for sub in case:
                        if sub == "seeds":
                            _check_case_seeds(case)
                        elif sub != "label":
                            _check_grid_key(sub)
                n_runs = n_runs // len(values) * len(expand_cases(values))
            else:
                _check_grid_key(key)
        if n_runs > MAX_RUNS:
            raise ValueError(f"the grid expands to {n_runs} runs; at most {MAX_RUNS} are allowed")
        return grid

    @model_validator(mode="after")
    def _task_matches_data(self) -> "JobFile":
        if self.data.dataset not in TASK_DATASETS[self.task]:
            raise ValueError(f"data.dataset: {self.data.dataset!r} is not allowed with task {self.task!r}; "
                             f"allowed: {', '.join(TASK_DATASETS[self.task])}")
        return self


def _check_case_seeds(case: dict) -> None:
    seeds = case["seeds"]
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)):
        raise ValueError(f"grid.cases: seeds {_short(seeds, 80)} is not allowed; allowed: a list of "
                         f"distinct integers in [0, {MAX_SEED}] (one run per seed)")
    if "seed" in case or "train.seed" in case:
        raise ValueError("grid.cases: a case gives 'seeds' or 'seed', not both")


def expand_cases(cases: list[dict]) -> list[dict]:
    """Grid cases with ``seeds: [a, b]`` opened into one case per seed (``seed: a``), labelled
    ``<label>_s<a>``, so a case's seeds are one model (``compare.pairs`` names it by its label)."""
    out = []
    for case in cases:
        if not isinstance(case, dict) or "seeds" not in case:
            out.append(case)
            continue
        rest = {k: v for k, v in case.items() if k != "seeds"}
        for seed in case["seeds"]:
            label = rest.get("label")
            out.append({**rest, "seed": seed, **({"label": f"{label}_s{seed}"} if label else {})})
    return out


def _grid_record(keys: list[str], combo: tuple) -> dict[str, Any]:
    """A run's grid values as its spec keeps them: a case's seed apart (``cases.seed``, a seed
    axis), its label without the ``_s<seed>`` that ``seeds`` added, so every seed of a case
    is one model in the report."""
    out: dict[str, Any] = {}
    for key, value in zip(keys, combo):
        if key == "cases" and isinstance(value, dict) and "seed" in value:
            seed, value = value["seed"], {k: v for k, v in value.items() if k != "seed"}
            label = value.get("label")
            if isinstance(label, str) and label.endswith(f"_s{seed}"):
                value["label"] = label[: -len(f"_s{seed}")]
            out["cases.seed"] = seed
        out[key] = value
    return out


def _check_values(data: Any) -> None:
    """Raise a ``job_value`` error naming the key path of the first value that is not plain,
    finite data: a float that is infinite or NaN, an integer beyond MAX_INT, a string that is
    not valid Unicode (a lone surrogate), another type YAML can make (dates, !!binary, !!set,
    !!omap), a mapping key that is not a string, nesting deeper
    than MAX_NESTING (a YAML alias that refers to itself, too) or more than MAX_VALUES values
    in all (aliases of aliases)."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            _value_error("", f"the job file holds more than {MAX_VALUES} values (YAML aliases count "
                             "each time they are used)")
        if isinstance(value, float) and not math.isfinite(value):
            _value_error(path, f"{value!r} is not allowed: numbers must be finite (no .inf or .nan)")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            _value_error(path, f"{_short(value, 40)} is not allowed: integers must be at most "
                               f"2**53 = {MAX_INT} in size")
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                _value_error(path, f"{_short(value)} is not allowed: not valid Unicode text "
                                   "(a lone surrogate escape)")
        elif not isinstance(value, (dict, list, int, float, type(None))):  # YAML dates, !!binary, !!set ...
            _value_error(path, f"{_short(value)} is not allowed: a job file holds strings, numbers, "
                               "true/false, null, lists and mappings (quote it to make it a string)")
        elif isinstance(value, (dict, list)):
            if depth >= MAX_NESTING:
                _value_error(path, f"nested more than {MAX_NESTING} levels deep")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict):
                    if not isinstance(key, str):  # run ids hash the specs as JSON: string keys only
                        _value_error(path, f"the key {_short(key)} is not allowed: keys must be strings "
                                           f"(quote it: '{_short(key, 40)}')")
                    stack.append((key, path, depth + 1))  # keys are values too
                    sub = ".".join(p for p in (path, key) if p)
                else:
                    sub = f"{path}[{key}]"
                stack.append((item, sub, depth + 1))


def _value_error(path: str, problem: str) -> None:
    raise PydanticCustomError("job_value", "{problem}", {"path": path, "problem": problem})


def _check_grid_key(key: str) -> None:
    if not isinstance(key, str):
        raise ValueError(f"grid key {_short(key)} must be a string (a dotted key path)")
    if key not in ("seed", "task") and key.split(".")[0] not in GRID_ROOTS:
        raise ValueError(f"grid key {key!r} must be 'seed', 'task', 'cases' or start with one of "
                         f"{', '.join(GRID_ROOTS)}")


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_error(file: str | Path, err: ValidationError, prefix: str = "") -> JobFileError:
    errors = err.errors()
    # a misspelt key also shows up as a missing one: name the misspelling first
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    path = ".".join(p for p in (prefix, _fmt_loc(loc)) if p)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "job_value":  # raised by the checks here, the problem already names the value
        ctx = e.get("ctx") or {}
        return JobFileError(file, ".".join(p for p in (path, ctx.get("path", "")) if p), ctx["problem"])
    lead = re.match(r"([A-Za-z_][\w.]*): (.*)", msg) if e["type"] == "value_error" else None
    if lead:  # a cross-field check names its key path first: "data.dataset: ..."
        path, msg = ".".join(p for p in (path, lead[1]) if p), lead[2]
    if e["type"] == "extra_forbidden":
        model_fields = _fields_at(prefix, loc[:-1])
        msg = _unknown(str(loc[-1]), model_fields) if model_fields else f"unknown key {loc[-1]!r}"
        path = ".".join(p for p in (prefix, _fmt_loc(loc[:-1])) if p)
    elif e["type"] == "missing":
        msg = "required key is missing"
    elif "input" in e and not isinstance(e["input"], (dict, list)):
        msg = f"{_short(e['input'])} is not allowed: {msg}"
    return JobFileError(file, path, msg)


def _fields_at(prefix: str, loc: tuple) -> list[str]:
    model: Any = JobFile
    for part in ([prefix] if prefix else []) + list(loc):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = next((a for a in (field.annotation, *get_args(field.annotation))  # X | None: X
                      if hasattr(a, "model_fields")), None)
    return list(getattr(model, "model_fields", {}))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the last would win)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor": merged by flatten_mapping
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key is a {type(key).__name__}; keys must be plain words",
                    key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_short(key)} is given twice in the same mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_job_file(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> tuple[JobFile, str]:
    """Read and validate a job file; returns the parsed job and its verbatim text.

    ``overrides`` are ``--set KEY=VALUE`` items (``harness.sweep.overrides``), applied to the parsed
    file before validation, so an overridden value is checked exactly like a written one.
    """
    raw, text = read_raw_job(path, overrides)
    try:
        job = JobFile.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(Path(path), exc) from None
    return job, text


def read_raw_job(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> tuple[dict, str]:
    """A job file parsed (safe YAML, one mapping) with ``overrides`` applied, not yet validated;
    and its verbatim text. One-line JobFileErrors as :func:`load_job_file`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(path, "", "no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFileError(path, "", f"cannot read the job file: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}: " if mark else ""
        if "twice" in (exc.problem or "") or (exc.problem or "").startswith("a mapping key"):
            raise JobFileError(path, "", f"{line}{exc.problem}") from None
        raise JobFileError(path, "", f"{line}{exc.problem}; job files are plain YAML data "
                                     "(python/* and other custom tags are not allowed)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise JobFileError(path, "", f"malformed YAML: {line}{problem}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise JobFileError(path, "", f"malformed YAML: nested too deeply (at most {MAX_NESTING} "
                                     "levels are allowed)") from None
    except Exception as exc:  # PyYAML's constructors on odd scalars: 2024-13-01, !!float ''
        detail = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        raise JobFileError(path, "", f"malformed YAML: a value cannot be read: {detail}") from None
    if not isinstance(raw, dict):
        raise JobFileError(path, "", f"the top level must be a mapping of keys, got {type(raw).__name__}")
    if overrides:
        from harness.sweep.overrides import apply_overrides

        apply_overrides(raw, overrides, path)
    return raw, text


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def _label(key: str, value: Any) -> str:
    if isinstance(value, dict):
        from models import depth_size

        kind = value.get("kind", "")
        size = depth_size(value)
        return f"{kind}{'' if size is None else size}" if kind else "-".join(f"{k}{v}" for k, v in value.items())
    short = key.split(".")[-1]
    return f"s{value}" if key in ("seed", "train.seed") else f"{short}{value}"


def run_id_of(spec: dict) -> str:
    """A short, stable hash of a run spec (everything but its id and name)."""
    canon = {k: v for k, v in spec.items() if k not in ("run_id", "name", "sweep")}
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def resolve_path(value: str | None, base_dir: str | Path | None) -> str | None:
    """A job file's path made absolute: ``~`` expanded, a relative one taken from ``base_dir``."""
    if value is None or value == "" or base_dir is None:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (Path(base_dir) / path).absolute())


def expand_grid(job: JobFile, file: str | Path = "<job>", base_dir: str | Path | None = None,
                smoke: bool = False) -> list[RunSpec]:
    """The product of the grid axes, one :class:`~harness.run.spec.RunSpec` each (with its
    ``run_id`` and a ``name`` unique within the sweep).

    ``base_dir``: relative paths of the job file (``data.data_dir``) are resolved against it
    and stored absolute, so the spec means the same folder on every worker, whatever its
    working folder (Ray Train runs workers in their own). ``harness.submit`` and
    ``harness.train`` pass the folder they run in. The run id is computed from the paths as
    written, so it does not depend on where the project lives. ``smoke``: the runs of a
    ``--smoke`` sweep (``harness.sweep.smoke``), marked so in their specs and ids.
    """
    base = job.model_dump(exclude={"grid", "name", "description", "compare"}, exclude_none=False)
    base["deepspeed"] = job.deepspeed.model_dump()
    keys = list(job.grid)
    runs: list[dict] = []
    axes = [expand_cases(job.grid[k]) if k == "cases" else job.grid[k] for k in keys]
    for combo in itertools.product(*axes):
        spec = copy.deepcopy(base)
        labels = []
        for key, value in zip(keys, combo):
            if key == "cases":  # one axis that sets several keys together
                for sub, sub_value in value.items():
                    if sub != "label":
                        _set_path(spec, "train.seed" if sub == "seed" else sub, sub_value)
                labels.append(str(value.get("label") or "-".join(_label(k, v) for k, v in value.items())))
            else:
                _set_path(spec, "train.seed" if key == "seed" else key, value)
                labels.append(_label(key, value))
        # grid values may set anything: validate the combined spec again
        try:
            checked = JobFile.model_validate({**spec, "name": job.name})
        except ValidationError as exc:
            grid_desc = ", ".join(f"{k}={_short(v, 80)}" for k, v in zip(keys, combo))
            err = _pydantic_error(file, exc)
            raise JobFileError(file, err.path, f"{err.problem} (in the run with {grid_desc})") from None
        spec = checked.model_dump(exclude={"grid", "name", "description", "compare"})
        spec["deepspeed"] = checked.deepspeed.model_dump()
        spec["grid"] = _grid_record(keys, combo)
        spec["sweep"] = job.name
        if spec["data"].get("synthetic") is None:  # absent: ids stay what they were before the key
            spec["data"].pop("synthetic", None)
        spec["name"] = "_".join(labels) if labels else job.name
        if smoke:  # only then: the ids of real runs stay what they were
            spec["smoke"] = True
        spec["run_id"] = run_id_of(spec)
        spec["data"]["data_dir"] = resolve_path(spec["data"].get("data_dir"), base_dir)
        runs.append(spec)
    ids = [r["run_id"] for r in runs]
    if len(set(ids)) != len(ids):
        raise JobFileError(file, "grid", "two grid points give the same run (repeated values?)")
    _unique_names(runs)
    _check_pairs(job, runs, file)
    return [RunSpec.model_validate(r) for r in runs]


def _check_pairs(job: JobFile, runs: list[dict], file: str | Path) -> None:
    """Every model ``compare.pairs`` names is a model of the grid (a run's name without its seed)."""
    names = list(dict.fromkeys(model_name(r["name"], r["train"].get("seed")) for r in runs))
    for i, pair in enumerate(job.compare.pairs):
        for role in ("model", "baseline"):
            value = getattr(pair, role)
            if value not in names:
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
                raise JobFileError(file, f"compare.pairs.{i}.{role}",
                                   f"{_short(value, 80)} is not a model of this sweep; its models: {shown}")
        if pair.model == pair.baseline:
            raise JobFileError(file, f"compare.pairs.{i}", f"{pair.model!r} is compared with itself")


def _flat_grid(grid: dict) -> dict[str, Any]:
    """A run's grid values as ``{dotted.key: scalar-or-list}`` (cases and mappings opened up)."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub != "label" or key != "cases":
                    put(f"{key}.{sub}" if key != "cases" else str(sub), sub_value)
        else:
            out[key] = value

    for key, value in grid.items():
        put(key, value)
    return out


def _name_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = json.dumps(value, separators=(",", ":"), default=str) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.+_-]", "", text)[:24]


def _unique_names(runs: list[dict]) -> None:
    """Runs that share a name get the grid values that tell them apart appended (in place).

    A label shows a depth's kind and size only, so a grid that varies, say, the solver's
    tolerance would otherwise give several runs one name: ``copy_deq12-tol0.001``,
    ``copy_deq12-tol0.0001``. The run id is unchanged (it never includes the name).
    """
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["name"], []).append(r)
    for name, group in groups.items():
        if len(group) < 2:
            continue
        flats = [_flat_grid(r["grid"]) for r in group]
        keys = sorted({k for f in flats for k in f})
        differ = [k for k in keys
                  if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
        for r, f in zip(group, flats):
            parts = [f"{k.split('.')[-1]}{_name_value(f[k])}" for k in differ if k in f]
            r["name"] = "-".join([name, *parts]) if parts else name
    seen: dict[str, int] = {}
    for r in runs:
        seen[r["name"]] = seen.get(r["name"], 0) + 1
    for r in runs:  # values that print alike (long lists, stripped characters): the id decides
        if seen[r["name"]] > 1:
            r["name"] = f"{r['name']}-{r['run_id'][:6]}"
