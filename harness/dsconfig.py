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


# DeepSpeed sections that must be mappings (DeepSpeed itself fails on others with a traceback)
MAPPING_KEYS = ("zero_optimization", "bf16", "fp16", "optimizer", "scheduler", "flops_profiler",
                "activation_checkpointing", "data_types", "torch_autocast", "checkpoint")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _scheduler(train: dict) -> dict:
    warm = max(int(train.get("warmup_steps", 0)), 1)  # DeepSpeed's schedulers need >= 1
    total = max(int(train["steps"]), warm + 1)
    lr = float(train["lr"])
    kind = train.get("lr_schedule", "cosine")
    if kind == "cosine":
        return {"type": "WarmupCosineLR", "params": {"total_num_steps": total, "warmup_num_steps": warm,
                                                     "warmup_min_ratio": 0.0, "cos_min_ratio": 0.1}}
    if kind == "linear":
        return {"type": "WarmupDecayLR", "params": {"total_num_steps": total, "warmup_num_steps": warm,
                                                    "warmup_min_lr": 0.0, "warmup_max_lr": lr}}
    return {"type": "WarmupLR", "params": {"warmup_num_steps": warm, "warmup_min_lr": 0.0,
                                           "warmup_max_lr": lr, "warmup_type": "linear"}}


def deepspeed_config(spec: dict, *, cuda: bool) -> dict[str, Any]:
    """DeepSpeed's config dict for one run (see the module docstring for precedence)."""
    train = spec["train"]
    precision = train.get("precision", "auto")
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    base: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(train["batch_size"]),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "steps_per_print": 10 ** 9,
        "zero_optimization": {"stage": 0},
        "optimizer": {"type": "AdamW", "params": {"lr": float(train["lr"]), "betas": [0.9, 0.999],
                                                  "eps": 1e-8, "weight_decay": float(train.get("weight_decay", 0.0)),
                                                  "torch_adam": True}},
        "scheduler": _scheduler(train),
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
    }
    user = {k: v for k, v in (spec.get("deepspeed") or {}).items() if v is not None}
    return _merge(base, user)


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


def validate_deepspeed(spec: dict) -> None:
    """Raise ValueError (one line) if DeepSpeed would reject this run's config."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError

    cfg = deepspeed_config(spec, cuda=False)
    for key, value in (spec.get("deepspeed") or {}).items():
        if key in MAPPING_KEYS and value is not None and not isinstance(value, dict):
            raise ValueError(f"{key}: {value!r} is not allowed: must be a mapping of DeepSpeed's {key} options")
    if (cfg.get("zero_optimization") or {}).get("stage", 0) == 3:
        # ZeRO-3 gathers a module's parameters around that module's own forward; the models
        # here reuse one cell many times per step and tie the softmax to the embedding, which
        # its backward hooks reject ("active_backward_submodules is empty").
        raise ValueError("zero_optimization.stage: 3 is not supported by deqbench's models yet; "
                         "allowed: 0, 1, 2")
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
        raise ValueError(f"{loc}: {e.get('input')!r} is not allowed: {problem}") from None
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    _check_type_names(cfg)
    for key in ("gradient_clipping",):
        if key in cfg and not isinstance(cfg[key], (int, float)):
            raise ValueError(f"{key}: {cfg[key]!r} is not allowed: must be a number")
    for key in ("bf16", "fp16"):
        enabled = (cfg.get(key) or {}).get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise ValueError(f"{key}.enabled: {enabled!r} is not allowed: must be true or false")
