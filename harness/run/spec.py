"""The run spec: one run of a sweep, typed, from the job file to the worker.

``harness.sweep.config.expand_grid`` makes one :class:`RunSpec` per grid point; Ray ships it
to the run's task and workers as it is (pydantic models pickle), and the worker reads it by
attribute (``spec.train.steps``), with every default in one place: the sections below. JSON
only where records are written: ``spec.json`` is :meth:`RunSpec.to_json` (the same keys as
before this type existed), and :meth:`RunSpec.from_json` reads it back.

The sections validate a job file's blocks too (``harness.sweep.config.JobFile``), so a value
is checked by the same rule whether it came from the file, the grid or ``--set``. Upper
bounds keep sizes and loops sane; each message says its bound.
"""
from __future__ import annotations

import difflib
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# DeepSpeed top-level keys a job file may set (DeepSpeed silently ignores unknown ones,
# which hides typos, so unknown keys are rejected here with a did-you-mean).
DEEPSPEED_KEYS = (
    "zero_optimization", "bf16", "fp16", "gradient_accumulation_steps", "gradient_clipping",
    "optimizer", "scheduler", "steps_per_print", "wall_clock_breakdown", "prescale_gradients",
    "gradient_predivide_factor", "communication_data_type", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "sparse_gradients", "flops_profiler", "activation_checkpointing",
    "data_types", "torch_autocast", "checkpoint", "memory_breakdown", "dump_state",
)
# Upper bounds of the sizes and counts that size memory or loops; a paper-scale job (the
# shipped jobs/wt103_sweep.yaml: 200000 steps, d_inner 59950, 8 workers) fits well inside.
MAX_STEPS = 10_000_000          # train.steps and every step count or interval
MAX_BATCHES = 1_000_000         # eval_batches, test_batches
MAX_BATCH_SIZE = 16_384         # sequences per worker per step
MAX_SEQ_LEN = 16_384            # tokens per sequence (data.seq_len, copy memory blank_len)
MAX_DIGITS = 1_000              # copy memory digits
MAX_SEED = 2 ** 32 - 1          # numpy's seeds are 32-bit
MAX_WORKERS = 1_024
MAX_CPUS_PER_WORKER = 1_024
MAX_GPUS_PER_WORKER = 64
MAX_MEMORY_CAP_GB = 65_536
MAX_RUNS = 1_000                # runs one job file's grid may expand to

def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to about ``limit`` characters (messages stay readable)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info) -> Any:
        """pydantic's lax mode reads true/false as 1/0 for int and float fields: refuse that."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            types = get_args(annotation) or (annotation,)
            if bool not in types and (int in types or float in types):
                kind = "an integer" if int in types else "a number"
                raise PydanticCustomError("job_value", "{problem}", {
                    "problem": f"{value!r} is not allowed: expected {kind}, not a boolean"})
        return value


MAX_SYNTHETIC_TOKENS = 100_000_000  # per split of a generated synthetic corpus


class SyntheticSection(_Section):
    """``data.synthetic``: the generated corpus's spec (``harness.data.SyntheticSpec``)."""

    vocab_size: int = Field(2000, ge=3, le=5_000_000, description="chain states, <eos> included")
    successors: int = Field(16, ge=2, description="successors per state (at most vocab_size // 2)")
    dirichlet_alpha: float = Field(1.0, gt=0)
    zipf_exponent: float = Field(1.0, ge=0)
    eos_edge_prob: float = Field(0.25, ge=0, le=1)
    train_tokens: int = Field(300_000, ge=2, le=MAX_SYNTHETIC_TOKENS)
    valid_tokens: int = Field(30_000, ge=2, le=MAX_SYNTHETIC_TOKENS)
    test_tokens: int = Field(30_000, ge=2, le=MAX_SYNTHETIC_TOKENS)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _successors_fit(self) -> "SyntheticSection":
        if self.successors > self.vocab_size // 2:
            raise ValueError(f"successors ({self.successors}) must be at most vocab_size // 2 "
                             f"({self.vocab_size // 2})")
        return self


class DataSection(_Section):
    dataset: Literal["synthetic", "ptb", "wikitext103", "copy_memory"]
    data_dir: str | None = Field(None, max_length=4096,
                                 description="corpus folder; synthetic: generated there if missing")
    seq_len: int = Field(32, gt=0, le=MAX_SEQ_LEN, description="tokens per training sequence (LM)")
    blank_len: int = Field(50, gt=0, le=MAX_SEQ_LEN, description="copy memory: blanks between digits and recall")
    n_digits: int = Field(10, gt=0, le=MAX_DIGITS)
    synthetic: SyntheticSection | None = Field(
        None, description="dataset synthetic (ignored by the others, like seq_len by copy memory): "
        "the corpus to generate (vocabulary, size, seed); absent: whatever corpus data_dir holds, "
        "else the default one")

    def synthetic_spec(self) -> Any:
        """``data.synthetic`` as the generator's ``harness.data.SyntheticSpec`` (None if absent)."""
        if self.synthetic is None:
            return None
        from harness.data.synthetic_corpus import SyntheticSpec

        return SyntheticSpec(**self.synthetic.model_dump())

    @field_validator("data_dir")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("a folder name cannot hold a NUL character")
        return value


class TrainSection(_Section):
    steps: int = Field(gt=0, le=MAX_STEPS)
    batch_size: int = Field(gt=0, le=MAX_BATCH_SIZE,
                            description="sequences per worker per step (DeepSpeed micro-batch)")
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS)
    weight_decay: float = Field(0.0, ge=0)
    eval_interval: int = Field(0, ge=0, le=MAX_STEPS, description="0: evaluate only at the end")
    eval_batches: int = Field(8, gt=0, le=MAX_BATCHES,
                              description="validation batches per rank at each periodic eval")
    test_batches: int = Field(0, ge=0, le=MAX_BATCHES, description="0: the whole test split")
    log_interval: int = Field(5, gt=0, le=MAX_STEPS)
    checkpoint_interval: int = Field(0, ge=0, le=MAX_STEPS, description="0: only at the end")
    measure_warmup: int = Field(2, ge=0, le=MAX_STEPS,
                                description="steps of each attempt excluded from timing and memory")
    measure_steps: int = Field(5, gt=0, le=MAX_STEPS, description="steps of the peak-memory window after the warm-up (every step after it is timed)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @model_validator(mode="after")
    def _enough_steps(self) -> "TrainSection":
        if self.measure_warmup + self.measure_steps > self.steps:
            raise ValueError(f"measure_warmup + measure_steps ({self.measure_warmup} + "
                             f"{self.measure_steps}) must not exceed steps ({self.steps})")
        return self


class ResourcesSection(_Section):
    workers: int = Field(1, gt=0, le=MAX_WORKERS, description="data-parallel workers per run")
    cpus_per_worker: float = Field(1, gt=0, le=MAX_CPUS_PER_WORKER)
    gpus_per_worker: float = Field(0, ge=0, le=MAX_GPUS_PER_WORKER)
    max_failures: int = Field(1, ge=0, le=1_000, description="worker restarts (from the last checkpoint) per run")
    max_concurrent_runs: int | None = Field(None, gt=0, le=MAX_RUNS)
    memory_cap_gb: float | None = Field(None, gt=0, le=MAX_MEMORY_CAP_GB,
                                        description="CPU workers: growth of the address "
                                        "space allowed after start-up; beyond it allocations fail "
                                        "and the run is recorded as out of memory")
    node_timeout_s: float = Field(300.0, gt=0, description="how long a run whose node was lost waits "
                                  "for room to place its workers again before it is recorded failed")


class DeepSpeedSection(BaseModel):
    """DeepSpeed's own keys, passed through (checked by DeepSpeed's config classes)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in DEEPSPEED_KEYS:
                    raise ValueError(_unknown(key, DEEPSPEED_KEYS))
        return data


def _unknown(key: Any, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1) if isinstance(key, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {_short(key)}{hint}; allowed: {', '.join(sorted(allowed))}"


class RunSpec(BaseModel):
    """One run: what the worker trains, on what, for how long, with which resources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str                      # hash of the spec as the job file wrote it (config.run_id_of)
    name: str                        # unique within the sweep
    sweep: str
    task: Literal["lm", "copy"]
    data: DataSection                # data_dir absolute
    model: dict[str, Any]            # the model block as written; built by models.build_model
    train: TrainSection
    resources: ResourcesSection
    deepspeed: DeepSpeedSection
    grid: dict[str, Any] = Field(default_factory=dict)  # this run's grid values
    smoke: bool = False              # a --smoke run (harness.sweep.smoke): sizes shrunk, figures not comparable

    @property
    def strategy(self) -> str:
        depth = self.model.get("depth")
        return str(depth.get("kind", "")) if isinstance(depth, dict) else ""

    def model_settings(self, vocab_size: int) -> Any:
        """The model block parsed into the models' own config type (``models.ModelConfig``),
        with the task and the vocabulary the data gives."""
        from models import parse_config

        return parse_config({**self.model, "task": self.task, "vocab_size": vocab_size})

    def with_resources(self, **changes: Any) -> "RunSpec":
        return self.model_copy(update={"resources": self.resources.model_copy(update=changes)})

    def to_json(self) -> dict[str, Any]:
        """The plain-data form written to ``spec.json`` (docs/records.md)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSpec":
        return cls.model_validate(data)
