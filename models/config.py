"""Model configuration: plain dicts (from YAML job files) -> validated dataclasses.

A model is described by one flat dict plus a nested ``depth`` dict, e.g.::

    {"task": "lm", "vocab_size": 10000, "cell": "transformer", "d_model": 256,
     "n_head": 4, "d_inner": 1024, "dropout": 0.1,
     "depth": {"kind": "deq", "max_iter": 30, "tol": 1e-3}}

``ModelConfig`` holds the flat part; ``depth`` becomes the options dataclass of the
chosen depth strategy (each strategy declares its own, see ``models.depth``). A
mapping-valued option (the DEQ's ``solver_options``) is annotated ``FrozenOptions``: a
mapping of option names to scalars, stored read-only so the options stay hashable.
``parse_dataclass`` does the checking for both: unknown keys, wrong types and bad
values raise ``ValueError`` with a one-line message naming the key, the value and
what is allowed. Names that are chosen from a registry (cell, depth kind, head) are
checked by ``models.build`` against the live registries.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, Optional, TypeVar

T = TypeVar("T")

TASKS = ("lm", "copy")

# Upper bounds of the sizes (a paper-scale model, e.g. jobs/wt103_sweep.yaml's d_inner 59950
# and a 267k-word vocabulary, fits well inside; products of two stay far from int64 overflow).
MAX_VOCAB = 2 ** 24
SIZE_BOUNDS = {"vocab_size": MAX_VOCAB, "d_model": 65_536, "n_head": 1_024, "d_inner": 2 ** 20,
               "max_rel_distance": 65_536, "kernel_size": 1_024}
MAX_CUTOFFS = 32
MAX_LAYERS = 1_024  # cells of a stack (explicit: each with its own weights), warm-up depth
MAX_ITER = 10_000  # solver iterations, ODE steps
MAX_STEPS = 10_000_000  # training-step counts and frequencies


class FrozenOptions(dict):
    """A read-only dict of option name -> scalar (None, bool, int, float, str).

    Hashable (from its items) and equal to a plain dict with the same items, so a frozen
    options dataclass holding one stays hashable and comparable; it pickles and copies
    like a dict, and ``dict(options)`` gives a mutable copy.
    """

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("FrozenOptions is read-only; build a new one from a dict instead")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class DepthOptions:
    """Base of every depth strategy's options; ``kind`` is the strategy's registry name.

    ``size_key`` (a class attribute) names the option that is the strategy's size, the
    figure a depth sweep varies and the records call ``depth`` (``models.depth_size``).
    """

    size_key: ClassVar[Optional[str]] = None
    kind: str = ""

    def check(self) -> None:
        """Raise ValueError for values out of range (overridden by strategies)."""


@dataclass(frozen=True)
class AdaptiveSoftmaxConfig:
    """Options of torch.nn.AdaptiveLogSoftmaxWithLoss (word-level LM head)."""

    cutoffs: tuple[int, ...] = ()
    div_value: float = 4.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything ``build_model`` needs, except the depth options (see ``depth``).

    Cell options that a cell does not use are ignored by it (``n_head``/``d_inner``/
    ``max_rel_distance`` belong to the transformer cell, ``kernel_size``/``gate`` to
    the trellisnet cell). ``head`` names a head of ``models.build.HEADS``; None (the
    default) picks it from the task, see ``models.build.head_name``.
    """

    task: str = "lm"  # "lm" (next-token prediction) or "copy" (copy-memory classifier)
    vocab_size: int = 10000  # input token vocabulary (copy task: 10)
    n_classes: Optional[int] = None  # copy task: output classes per position (default 10)
    cell: str = "transformer"
    d_model: int = 256
    n_head: int = 4
    d_inner: int = 1024
    dropout: float = 0.0  # variational dropout inside the cell (mask shared over time/iterations)
    emb_dropout: Optional[float] = None  # dropout on embeddings and before the head (default: dropout)
    max_rel_distance: int = 128  # transformer: relative positions clipped at this distance
    kernel_size: int = 2  # trellisnet: causal temporal kernel size
    gate: str = "glu"  # trellisnet: "glu" or "lstm"
    weight_norm: bool = False  # weight-normalise the cell's Linear / Conv1d layers
    tie_weights: bool = True  # lm with full softmax: output layer shares the token embedding
    adaptive_softmax: Optional[AdaptiveSoftmaxConfig] = None
    head: Optional[str] = None  # a name in models.build.HEADS; None: chosen from task / adaptive_softmax
    depth: DepthOptions = field(default_factory=DepthOptions)

    @property
    def output_size(self) -> int:
        """Number of output classes of the head."""
        if self.task == "copy":
            return self.n_classes if self.n_classes is not None else 10
        return self.vocab_size

    @property
    def head_dropout(self) -> float:
        return self.dropout if self.emb_dropout is None else self.emb_dropout

    def check(self) -> None:
        """Value checks that do not need the registries."""
        if self.task not in TASKS:
            raise ValueError(f"model.task: unknown task {self.task!r}; allowed: {', '.join(TASKS)}")
        for name, top in SIZE_BOUNDS.items():
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"model.{name}: must be a positive integer, got {value}")
            if value > top:
                raise ValueError(f"model.{name}: must be at most {top}, got {value}")
        if self.n_classes is not None and not 2 <= self.n_classes <= MAX_VOCAB:
            raise ValueError(f"model.n_classes: must be an integer in [2, {MAX_VOCAB}], got {self.n_classes}")
        if self.n_classes is not None and self.task != "copy":
            raise ValueError("model.n_classes: only used by task 'copy' (lm predicts vocab_size classes)")
        for name in ("dropout", "emb_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"model.{name}: must be in [0, 1), got {value}")
        if self.gate not in ("glu", "lstm"):
            raise ValueError(f"model.gate: unknown gate {self.gate!r}; allowed: glu, lstm")
        if self.adaptive_softmax is not None:
            if self.task != "lm":
                raise ValueError("model.adaptive_softmax: only allowed with task 'lm'")
            cutoffs = list(self.adaptive_softmax.cutoffs)
            if (not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] <= 0
                    or cutoffs[-1] >= self.vocab_size - 1):
                raise ValueError(
                    f"model.adaptive_softmax.cutoffs: must be a non-empty strictly increasing list of "
                    f"integers in [1, vocab_size - 2 = {self.vocab_size - 2}], got {cutoffs}")
            if len(cutoffs) > MAX_CUTOFFS:
                raise ValueError(f"model.adaptive_softmax.cutoffs: at most {MAX_CUTOFFS} cutoffs, "
                                 f"got {len(cutoffs)}")
            div = self.adaptive_softmax.div_value
            if div <= 0:
                raise ValueError(f"model.adaptive_softmax.div_value: must be > 0, got {div}")
            # tail cluster i is d_model // div_value**i wide (torch.nn.AdaptiveLogSoftmaxWithLoss)
            widths = [math.log(self.d_model) - i * math.log(div) for i in range(1, len(cutoffs) + 1)]
            top = SIZE_BOUNDS["d_inner"]
            if min(widths) < -1e-9 or max(widths) > math.log(top) + 1e-9:
                raise ValueError(f"model.adaptive_softmax.div_value: the {len(cutoffs)} tail clusters are "
                                 f"d_model / div_value**i wide, which must be in [1, {top}]; got {div} "
                                 f"with d_model {self.d_model}")


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (tuples from lists, floats from ints)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ValueError(f"{where}: got {value!r}; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is FrozenOptions:
        return _coerce_options(value, where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return parse_dataclass(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            raise ValueError(f"{where}: expected a finite number, got {_short(value)}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any or tp is DepthOptions:  # DepthOptions is filled in by models.build
        return value
    raise TypeError(f"{where}: unsupported annotation {_type_name(tp)}")  # programming error


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` as a job-file value at key path ``where``
    (ValueError naming it); TypeError when ``tp`` is an annotation this module does not handle."""
    return _coerce(value, tp, where)


def _check_scalar(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return
    raise ValueError(f"{where}: expected a number, a string, true/false or null, got {_short(value)}")


def _coerce_options(value: Any, where: str) -> FrozenOptions:
    """A mapping of option names to scalars, as a ``FrozenOptions``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of option names to values, got {_short(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: option names must be non-empty strings, got {key!r}")
        _check_scalar(item, f"{where}.{key}")
    return value if isinstance(value, FrozenOptions) else FrozenOptions(value)


def parse_dataclass(cls: type[T], data: Any, where: str, skip: tuple[str, ...] = ()) -> T:
    """Build dataclass ``cls`` from a mapping, naming ``where`` (e.g. "model.depth") in errors.

    Keys in ``skip`` are left out of the check and of the result (the caller fills them).
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(names)}")
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}")
              for key, value in data.items() if key not in skip}
    return cls(**kwargs)
