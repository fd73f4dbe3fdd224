"""The DeepSpeed config of a run: defaults, then the job file's ``deepspeed:`` section.

The job file's section holds DeepSpeed's own keys (``zero_optimization``, ``bf16``,
``gradient_accumulation_steps``, ``gradient_clipping``, ``optimizer``, ...) and wins over the
defaults below. The harness fills in what it owns: the micro-batch from ``train.batch_size``,
the learning rate and its schedule from ``train``, and the precision (``train.precision:
auto`` is bf16 on CUDA, fp32 on CPU). The optimizer defaults to AdamW with
``torch_adam: true`` (torch's implementation: no fused-kernel compile on first use).
"""
from __future__ import annotations

import copy
from typing import Any

from harness.run.spec import RunSpec, TrainSection, _short


# DeepSpeed sections that must be mappings (DeepSpeed itself fails on others with a traceback)
MAPPING_KEYS = ("zero_optimization", "bf16", "fp16", "optimizer", "scheduler", "flops_profiler",
                "activation_checkpointing", "data_types", "torch_autocast", "checkpoint")
# DeepSpeed top-level options that are plain values, and what each must be (DeepSpeed reads
# them unchecked and fails later, or with a traceback, on anything else)
SCALAR_KEYS = {
    "gradient_accumulation_steps": "count", "steps_per_print": "count",
    "gradient_clipping": "number", "gradient_predivide_factor": "number",
    "wall_clock_breakdown": "bool", "prescale_gradients": "bool", "zero_allow_untested_optimizer": "bool",
    "zero_force_ds_cpu_optimizer": "bool", "sparse_gradients": "bool", "memory_breakdown": "bool",
    "dump_state": "bool", "communication_data_type": "str",
}
MAX_ACCUMULATION = 1_000_000
ZERO_STAGES = (0, 1, 2)  # DeepSpeed's are 0-3; see validate_deepspeed for 3


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _scheduler(train: TrainSection) -> dict:
    warm = max(train.warmup_steps, 1)  # DeepSpeed's schedulers need >= 1
    total = max(train.steps, warm + 1)
    lr = float(train.lr)
    kind = train.lr_schedule
    if kind == "cosine":
        return {"type": "WarmupCosineLR", "params": {"total_num_steps": total, "warmup_num_steps": warm,
                                                     "warmup_min_ratio": 0.0, "cos_min_ratio": 0.1}}
    if kind == "linear":
        return {"type": "WarmupDecayLR", "params": {"total_num_steps": total, "warmup_num_steps": warm,
                                                    "warmup_min_lr": 0.0, "warmup_max_lr": lr}}
    return {"type": "WarmupLR", "params": {"warmup_num_steps": warm, "warmup_min_lr": 0.0,
                                           "warmup_max_lr": lr, "warmup_type": "linear"}}


def deepspeed_config(spec: RunSpec, *, cuda: bool, user: bool = True) -> dict[str, Any]:
    """DeepSpeed's config dict for one run (see the module docstring for precedence);
    ``user=False``: without the job file's own DeepSpeed block."""
    train = spec.train
    precision = train.precision
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    base: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(train.batch_size),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "steps_per_print": 10 ** 9,
        "zero_optimization": {"stage": 0},
        "optimizer": {"type": "AdamW", "params": {"lr": float(train.lr), "betas": [0.9, 0.999],
                                                  "eps": 1e-8, "weight_decay": float(train.weight_decay),
                                                  "torch_adam": True}},
        "scheduler": _scheduler(train),
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
    }
    return _merge(base, user_block(spec)) if user else base


def _failing_section(cfg: dict, user: dict) -> str:
    """The job file's DeepSpeed section that DeepSpeedConfig fails on ("" if none alone does)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    without = {k: v for k, v in cfg.items() if k not in user}
    for key in user:
        try:
            DeepSpeedConfig({**without, key: cfg[key]})
        except Exception:
            return key
    return ""


def _check_type_names(cfg: dict) -> None:
    """optimizer.type and scheduler.type name something DeepSpeed's engine can build."""
    import torch
    from deepspeed.runtime import lr_schedules
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    name = (cfg.get("optimizer") or {}).get("type")
    if name is not None and not (str(name).lower() in DEEPSPEED_OPTIMIZERS or hasattr(torch.optim, str(name))):
        raise ValueError(f"optimizer.type: {name!r} is not allowed: use one of {', '.join(DEEPSPEED_OPTIMIZERS)} "
                         "or a torch.optim class name")
    name = (cfg.get("scheduler") or {}).get("type")
    if name is not None and not (hasattr(lr_schedules, str(name)) or hasattr(torch.optim.lr_scheduler, str(name))):
        raise ValueError(f"scheduler.type: {name!r} is not allowed: use one of "
                         f"{', '.join(lr_schedules.VALID_LR_SCHEDULES)} or a torch.optim.lr_scheduler class name")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scalars(user: dict) -> None:
    """The plain top-level options and the sections' ``type``/``params`` have the right types."""
    for key, kind in SCALAR_KEYS.items():
        value = user.get(key)
        if value is None:
            continue
        if kind == "count" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{key}: {_short(value)} is not allowed: must be a positive integer")
        if key == "gradient_accumulation_steps" and value > MAX_ACCUMULATION:
            raise ValueError(f"{key}: {value} is not allowed: must be at most {MAX_ACCUMULATION}")
        if kind == "number" and not (_is_number(value) and value >= 0):
            raise ValueError(f"{key}: {_short(value)} is not allowed: must be a number >= 0")
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{key}: {_short(value)} is not allowed: must be true or false")
        if kind == "str" and not isinstance(value, str):
            raise ValueError(f"{key}: {_short(value)} is not allowed: must be a string")
    for key in ("optimizer", "scheduler"):
        section = user.get(key) or {}
        if section.get("type") is not None and not isinstance(section["type"], str):
            raise ValueError(f"{key}.type: {_short(section['type'])} is not allowed: must be a name (a string)")
        if section.get("params") is not None and not isinstance(section["params"], dict):
            raise ValueError(f"{key}.params: {_short(section['params'])} is not allowed: must be a mapping")
    stage = (user.get("zero_optimization") or {}).get("stage")
    if stage is not None and (isinstance(stage, bool) or stage not in ZERO_STAGES):
        # ZeRO-3 gathers a module's parameters around that module's own forward; the models
        # here reuse one cell many times per step and tie the softmax to the embedding, which
        # its backward hooks reject ("active_backward_submodules is empty").
        if stage == 3 and not isinstance(stage, bool):
            raise ValueError("zero_optimization.stage: 3 is not supported by deqbench's models yet; "
                             "allowed: 0, 1, 2")
        raise ValueError(f"zero_optimization.stage: {_short(stage)} is not allowed: use 0, 1 or 2 "
                         "(DeepSpeed's ZeRO stages are 0, 1, 2, 3; deqbench's models do not support 3 yet)")


def _no_bool_numbers(user: Any, base: Any, model: Any, where: str) -> None:
    """A boolean where DeepSpeed expects a number (its pydantic sections read true as 1): refuse.

    ``base`` is deqbench's default config at the same place, ``model`` DeepSpeed's pydantic
    class for the section (either may be None)."""
    import typing

    if isinstance(user, list) and isinstance(base, list):  # e.g. optimizer.params.betas
        for i, (value, default) in enumerate(zip(user, base)):
            if isinstance(value, bool) and _is_number(default):
                raise ValueError(f"{where}[{i}]: {value!r} is not allowed: must be a number, not a boolean")
    if not isinstance(user, dict):
        return
    fields = {}
    for name, info in (getattr(model, "model_fields", None) or {}).items():
        fields[name] = info.annotation
        if info.alias:
            fields[info.alias] = info.annotation
    for key, value in user.items():
        here = f"{where}.{key}" if where else str(key)
        default = base.get(key) if isinstance(base, dict) else None
        annotation = fields.get(key)
        types = typing.get_args(annotation) or (annotation,)
        numeric = (_is_number(default)
                   or (bool not in types and any(t in (int, float) for t in types)))
        if isinstance(value, bool) and numeric:
            raise ValueError(f"{here}: {value!r} is not allowed: must be a number, not a boolean")
        sub_model = next((t for t in types if isinstance(t, type) and hasattr(t, "model_fields")), None)
        _no_bool_numbers(value, default, sub_model, here)


def user_block(spec: RunSpec) -> dict[str, Any]:
    """The job file's DeepSpeed block (its keys that are set)."""
    return {k: v for k, v in spec.deepspeed.model_dump().items() if v is not None}


def validate_deepspeed(spec: RunSpec) -> None:
    """Raise ValueError (one line) if DeepSpeed would reject this run's config."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    cfg = deepspeed_config(spec, cuda=False)
    user = user_block(spec)
    for key, value in user.items():
        if key in MAPPING_KEYS and not isinstance(value, dict):
            raise ValueError(f"{key}: {_short(value)} is not allowed: must be a mapping of DeepSpeed's {key} options")
    _check_scalars(user)
    base = deepspeed_config(spec, cuda=False, user=False)
    models = {"zero_optimization": DeepSpeedZeroConfig, "bf16": DeepSpeedBF16Config, "fp16": DeepSpeedFP16Config}
    for key, value in user.items():
        _no_bool_numbers(value, base.get(key), models.get(key), key)
    try:
        DeepSpeedConfig(cfg)
    except ValidationError as exc:
        e = exc.errors()[0]
        # DeepSpeed validates each section on its own: put the section's name back in front
        holders = [k for k, v in cfg.items() if isinstance(v, dict) and e["loc"] and e["loc"][0] in v]
        section = next((k for k in holders if cfg[k][e["loc"][0]] == e.get("input")),
                       holders[0] if holders else None)
        loc = ".".join(str(p) for p in ((section,) if section else ()) + tuple(e["loc"]))
        problem = e["msg"].removeprefix("Value error, ")
        raise ValueError(f"{loc}: {_short(e.get('input'))} is not allowed: {problem}") from None
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        section = _failing_section(cfg, user)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{section}: {msg}" if section else msg) from None
    except Exception as exc:  # DeepSpeed's readers fail on some values with AttributeError & co.
        section = _failing_section(cfg, user)
        msg = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"{section + ': ' if section else ''}DeepSpeed cannot read this: "
                         f"{type(exc).__name__}{': ' + msg if msg else ''}") from None
    _check_type_names(cfg)
    for key in ("gradient_clipping",):
        if key in cfg and not isinstance(cfg[key], (int, float)):
            raise ValueError(f"{key}: {cfg[key]!r} is not allowed: must be a number")
    for key in ("bf16", "fp16"):
        enabled = (cfg.get(key) or {}).get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise ValueError(f"{key}.enabled: {enabled!r} is not allowed: must be true or false")
