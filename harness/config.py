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
    resources: {workers: 2, cpus_per_worker: 1, gpus_per_worker: 0}
    deepspeed: {zero_optimization: {stage: 0}, gradient_clipping: 1.0}   # DeepSpeed's own keys

Everything is checked before anything runs: structure and types with pydantic, the model
block by building each run's model on the ``meta`` device (no memory, no time), the
DeepSpeed block with DeepSpeed's own config classes. Every problem becomes one
:class:`JobFileError` line naming the file, the key path, the bad value and what is allowed.

Each run spec gets a ``run_id``: a short hash of its canonical JSON, so the same job file
always yields the same ids (which is how a resubmitted sweep skips finished runs).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASK_DATASETS = {"lm": ("synthetic", "ptb", "wikitext103"), "copy": ("copy_memory",)}
GRID_ROOTS = ("model", "data", "train", "deepspeed", "resources")
# DeepSpeed top-level keys a job file may set (DeepSpeed silently ignores unknown ones,
# which hides typos, so unknown keys are rejected here with a did-you-mean).
DEEPSPEED_KEYS = (
    "zero_optimization", "bf16", "fp16", "gradient_accumulation_steps", "gradient_clipping",
    "optimizer", "scheduler", "steps_per_print", "wall_clock_breakdown", "prescale_gradients",
    "gradient_predivide_factor", "communication_data_type", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "sparse_gradients", "flops_profiler", "activation_checkpointing",
    "data_types", "torch_autocast", "checkpoint", "memory_breakdown", "dump_state",
)


class JobFileError(ValueError):
    """A job file was rejected; ``str()`` is one line: ``file: key.path: problem``."""

    def __init__(self, file: str | Path, path: str, problem: str):
        self.file, self.path, self.problem = str(file), path, problem
        where = f"{self.file}: {path}: " if path else f"{self.file}: "
        super().__init__(where + problem)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class DataSection(_Section):
    dataset: Literal["synthetic", "ptb", "wikitext103", "copy_memory"]
    data_dir: str | None = Field(None, description="corpus folder; synthetic: generated there if missing")
    seq_len: int = Field(32, gt=0, description="tokens per training sequence (LM)")
    blank_len: int = Field(50, gt=0, description="copy memory: blanks between digits and recall")
    n_digits: int = Field(10, gt=0)


class TrainSection(_Section):
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="sequences per worker per step (DeepSpeed micro-batch)")
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_interval: int = Field(0, ge=0, description="0: evaluate only at the end")
    eval_batches: int = Field(8, gt=0, description="validation batches per rank at each periodic eval")
    test_batches: int = Field(0, ge=0, description="0: the whole test split")
    log_interval: int = Field(5, gt=0)
    checkpoint_interval: int = Field(0, ge=0, description="0: only at the end")
    measure_warmup: int = Field(2, ge=0, description="steps excluded before timing")
    measure_steps: int = Field(5, gt=0, description="timed steps (median)")
    seed: int = Field(0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @model_validator(mode="after")
    def _enough_steps(self) -> "TrainSection":
        if self.measure_warmup + self.measure_steps > self.steps:
            raise ValueError(f"measure_warmup + measure_steps ({self.measure_warmup} + "
                             f"{self.measure_steps}) must not exceed steps ({self.steps})")
        return self


class ResourcesSection(_Section):
    workers: int = Field(1, gt=0, description="data-parallel workers per run")
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    max_failures: int = Field(1, ge=0, description="worker restarts (from the last checkpoint) per run")
    max_concurrent_runs: int | None = Field(None, gt=0)
    memory_cap_gb: float | None = Field(None, gt=0, description="CPU workers: growth of the address "
                                        "space allowed after start-up; beyond it allocations fail "
                                        "and the run is recorded as out of memory")


class DeepSpeedSection(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in DEEPSPEED_KEYS:
                    raise ValueError(_unknown(key, DEEPSPEED_KEYS))
        return data


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

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if len(values) == 0:
                raise ValueError(f"grid key {key!r} has no values, so the grid expands to nothing")
            if key == "cases":
                for case in values:
                    if not isinstance(case, dict) or not case:
                        raise ValueError("grid.cases must be a list of mappings {dotted.key: value}")
                    for sub in case:
                        if sub != "label":
                            _check_grid_key(sub)
            else:
                _check_grid_key(key)
        return grid

    @model_validator(mode="after")
    def _task_matches_data(self) -> "JobFile":
        if self.data.dataset not in TASK_DATASETS[self.task]:
            raise ValueError(f"data.dataset: {self.data.dataset!r} is not allowed with task {self.task!r}; "
                             f"allowed: {', '.join(TASK_DATASETS[self.task])}")
        return self


def _check_grid_key(key: str) -> None:
    if key not in ("seed", "task") and key.split(".")[0] not in GRID_ROOTS:
        raise ValueError(f"grid key {key!r} must be 'seed', 'task', 'cases' or start with one of "
                         f"{', '.join(GRID_ROOTS)}")


def _unknown(key: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; allowed: {', '.join(sorted(allowed))}"


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
        msg = f"{e['input']!r} is not allowed: {msg}"
    return JobFileError(file, path, msg)


def _fields_at(prefix: str, loc: tuple) -> list[str]:
    model: Any = JobFile
    for part in ([prefix] if prefix else []) + list(loc):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the last would win)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in the same mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_job_file(path: str | Path) -> tuple[JobFile, str]:
    """Read and validate a job file; returns the parsed job and its verbatim text."""
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
        if "twice" in (exc.problem or ""):
            raise JobFileError(path, "", f"{line}{exc.problem}") from None
        raise JobFileError(path, "", f"{line}{exc.problem}; job files are plain YAML data "
                                     "(python/* and other custom tags are not allowed)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise JobFileError(path, "", f"malformed YAML: {line}{problem}") from None
    if not isinstance(raw, dict):
        raise JobFileError(path, "", f"the top level must be a mapping of keys, got {type(raw).__name__}")
    try:
        job = JobFile.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(path, exc) from None
    return job, text


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
        kind = value.get("kind", "")
        size = next((value[k] for k in ("layers", "max_iter", "steps") if k in value), "")
        return f"{kind}{size}" if kind else "-".join(f"{k}{v}" for k, v in value.items())
    short = key.split(".")[-1]
    return f"s{value}" if key in ("seed", "train.seed") else f"{short}{value}"


def run_id_of(spec: dict) -> str:
    """A short, stable hash of a run spec (everything but its id and name)."""
    canon = {k: v for k, v in spec.items() if k not in ("run_id", "name", "sweep")}
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def expand_grid(job: JobFile, file: str | Path = "<job>") -> list[dict]:
    """The product of the grid axes, each run a plain-dict spec with ``run_id`` and ``name``."""
    base = job.model_dump(exclude={"grid", "name", "description"}, exclude_none=False)
    base["deepspeed"] = job.deepspeed.model_dump()
    keys = list(job.grid)
    runs: list[dict] = []
    for combo in itertools.product(*(job.grid[k] for k in keys)):
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
            grid_desc = ", ".join(f"{k}={v!r}" for k, v in zip(keys, combo))
            err = _pydantic_error(file, exc)
            raise JobFileError(file, err.path, f"{err.problem} (in the run with {grid_desc})") from None
        spec = checked.model_dump(exclude={"grid", "name", "description"})
        spec["deepspeed"] = checked.deepspeed.model_dump()
        spec["grid"] = {k: v for k, v in zip(keys, combo)}
        spec["sweep"] = job.name
        spec["name"] = "_".join(labels) if labels else job.name
        spec["run_id"] = run_id_of(spec)
        runs.append(spec)
    ids = [r["run_id"] for r in runs]
    if len(set(ids)) != len(ids):
        raise JobFileError(file, "grid", "two grid points give the same run (repeated values?)")
    return runs
