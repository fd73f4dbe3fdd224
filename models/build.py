"""Registries of cells, depth strategies and heads, and ``build_model``.

``CELLS``, ``STRATEGIES`` and ``HEADS`` are plain dicts name -> class; the harness
reads their keys to validate job files. Add your own with ``register_cell``,
``register_strategy`` or ``register_head`` (a strategy class must name its options
dataclass, a subclass of ``DepthOptions``, in ``Options``); each is then selectable
from a job file, as ``cell:``, ``depth.kind:`` or ``head:``. Without ``head:`` the head
is chosen from the task (``head_name``).

``build_model(config)`` validates a plain dict (or a ``ModelConfig``) and returns a
``DepthModel``; bad input raises ValueError naming the key, the value and what is
allowed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from .cells import Cell, TransformerCell, TrellisNetCell
from .config import TASKS, DepthOptions, ModelConfig, parse_dataclass
from .depth import Checkpointed, DepthStrategy, Explicit, WeightTied
from .deq import DEQ
from .heads import AdaptiveSoftmaxLMHead, CopyHead, Head, SoftmaxLMHead
from .model import DepthModel
from .ode import NeuralODE

CELLS: dict[str, type[Cell]] = {"transformer": TransformerCell, "trellisnet": TrellisNetCell}
STRATEGIES: dict[str, type[DepthStrategy]] = {
    "deq": DEQ, "weight_tied": WeightTied, "checkpointed": Checkpointed,
    "neural_ode": NeuralODE, "explicit": Explicit,
}
HEADS: dict[str, type[Head]] = {
    "softmax": SoftmaxLMHead, "adaptive_softmax": AdaptiveSoftmaxLMHead, "copy": CopyHead,
}


def _register(registry: dict, kind: str, name: str, cls: type, base: type) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_{kind}: name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"register_{kind}: {cls!r} is not a subclass of {base.__name__}")
    if base is DepthStrategy and not (isinstance(cls.Options, type) and issubclass(cls.Options, DepthOptions)):
        raise ValueError(f"register_strategy: {cls.__name__}.Options must subclass DepthOptions")
    registry[name] = cls


def register_cell(name: str, cls: type[Cell]) -> None:
    """Make ``cls`` (constructor ``cls(cfg: ModelConfig)``) available as ``cell: name``."""
    _register(CELLS, "cell", name, cls, Cell)


def register_strategy(name: str, cls: type[DepthStrategy]) -> None:
    """Make ``cls`` (constructor ``cls(make_cell, options)``) available as ``depth.kind: name``."""
    _register(STRATEGIES, "strategy", name, cls, DepthStrategy)


def register_head(name: str, cls: type[Head]) -> None:
    """Make ``cls`` (constructor ``cls(cfg, embedding)``) available as ``head: name``."""
    _register(HEADS, "head", name, cls, Head)


def depth_size(depth: Any) -> Optional[int]:
    """A depth block's size, the figure a depth sweep varies (the records' ``depth``): the
    option its strategy's ``Options.size_key`` names (layers; max_iter for deq; steps for
    neural_ode), its default when the block leaves it out; None for an unknown strategy or
    one without a size."""
    kind = depth.get("kind") if isinstance(depth, dict) else None
    if not isinstance(kind, str) or kind not in STRATEGIES:
        return None
    options = STRATEGIES[kind].Options
    key = options.size_key
    if key is None:
        return None
    value = depth.get(key, next((f.default for f in dataclasses.fields(options) if f.name == key), None))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def depth_option_default(kind: Any, key: str) -> Any:
    """The default of option ``key`` of the depth strategy ``kind`` (what a depth block that
    leaves ``key`` out gets); None for an unknown strategy or option."""
    if not isinstance(kind, str) or kind not in STRATEGIES:
        return None
    found = next((f for f in dataclasses.fields(STRATEGIES[kind].Options) if f.name == key), None)
    if found is None:
        return None
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = found.default_factory()  # type: ignore[misc]
        return dict(value) if isinstance(value, dict) else value
    return None


def head_name(cfg: ModelConfig) -> str:
    """Which head a config uses: ``cfg.head`` if set, else "copy" for task copy,
    "adaptive_softmax" when adaptive_softmax is set, else "softmax"."""
    if cfg.head is not None:
        return cfg.head
    if cfg.task == "copy":
        return "copy"
    return "adaptive_softmax" if cfg.adaptive_softmax is not None else "softmax"


def _allowed(registry: dict) -> str:
    return ", ".join(sorted(registry))


def parse_config(config: Union[dict[str, Any], ModelConfig]) -> ModelConfig:
    """Validate a model config dict into a ModelConfig (depth options included)."""
    if isinstance(config, ModelConfig):
        raw: dict[str, Any] = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, dict):
        raw = dict(config)
    else:
        raise ValueError(f"model: expected a mapping, got {type(config).__name__}")
    depth = raw.pop("depth", None)
    if isinstance(depth, DepthOptions):
        depth = {f.name: getattr(depth, f.name) for f in dataclasses.fields(depth)}
    if raw.get("task", "lm") == "copy" and "vocab_size" not in raw:
        raw["vocab_size"] = 10  # copy memory inputs: 0 blank, 1-8 digits, 9 delimiter
    cfg = parse_dataclass(ModelConfig, raw, "model", skip=("depth",))
    if cfg.task not in TASKS:
        raise ValueError(f"model.task: unknown task {cfg.task!r}; allowed: {', '.join(TASKS)}")
    if cfg.cell not in CELLS:
        raise ValueError(f"model.cell: unknown cell {cfg.cell!r}; allowed: {_allowed(CELLS)}")
    if cfg.head is not None and cfg.head not in HEADS:
        raise ValueError(f"model.head: unknown head {cfg.head!r}; allowed: {_allowed(HEADS)}")
    if not isinstance(depth, dict) or "kind" not in depth:
        raise ValueError(f"model.depth: expected a mapping with 'kind' (one of {_allowed(STRATEGIES)}), "
                         f"got {depth!r}")
    kind = depth["kind"]
    if not isinstance(kind, str) or kind not in STRATEGIES:
        raise ValueError(f"model.depth.kind: unknown strategy {kind!r}; allowed: {_allowed(STRATEGIES)}")
    options = parse_dataclass(STRATEGIES[kind].Options, depth, "model.depth")
    cfg = ModelConfig(**{**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, "depth": options})
    cfg.check()
    CELLS[cfg.cell].check_config(cfg)
    HEADS[head_name(cfg)].check_config(cfg)
    options.check()
    return cfg


def build_model(config: Union[dict[str, Any], ModelConfig]) -> DepthModel:
    """Build the model described by ``config`` (see models/__init__.py for the keys)."""
    cfg = parse_config(config)
    cell_cls = CELLS[cfg.cell]
    strategy = STRATEGIES[cfg.depth.kind](lambda: cell_cls(cfg), cfg.depth)
    return DepthModel(cfg, strategy, HEADS[head_name(cfg)])
