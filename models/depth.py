"""Depth strategies: the ways of turning one cell into a deep model.

Every strategy owns its cell(s), takes the embedded tokens x (B, T, D) and returns a
``DepthResult`` with the final hidden sequence z (B, T, D) and forward statistics. All
start from z0 = 0, so with the same cell weights a weight-tied stack of L layers equals
L fixed-point iterations of the DEQ, and its limit is the DEQ's equilibrium.

This module holds the explicit-depth strategies:

- ``WeightTied`` ("weight_tied"): the same cell applied ``layers`` times.
- ``Checkpointed`` ("checkpointed"): as weight_tied, but the stack is cut into
  ``segments`` pieces run under torch.utils.checkpoint (use_reentrant=False): only each
  segment's input is kept for backward, the rest is recomputed, about sqrt(L) memory
  with the default round(sqrt(L)) segments. Same numbers as weight_tied, bit for bit.
- ``Explicit`` ("explicit"): ``layers`` cells with their own weights.

``models.deq`` and ``models.ode`` add the implicit ones. A strategy class names its
options dataclass in ``Options``; ``models.build`` validates the ``depth`` dict into it.
Parameter names are ``cell.*`` for every single-cell strategy, so state dicts can be
exchanged between weight_tied, checkpointed, deq and neural_ode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .cells import Cell
from .config import MAX_LAYERS, DepthOptions

CellFactory = Callable[[], Cell]


@dataclass
class DepthResult:
    """What a strategy returns: the output sequence and its bookkeeping."""

    z: torch.Tensor  # (B, T, D)
    stats: dict[str, float]  # forward statistics; always has "nfe"
    aux_loss: Optional[torch.Tensor] = None  # added to the training loss (e.g. Jacobian reg.)
    backward_stats: Callable[[], dict[str, float]] = field(default=lambda: {})


class DepthStrategy(nn.Module):
    """Base class: ``forward(x) -> DepthResult``; ``set_step`` receives the global step."""

    Options: ClassVar[type[DepthOptions]] = DepthOptions

    def __init__(self, make_cell: CellFactory, options: DepthOptions) -> None:
        super().__init__()
        self.options = options
        self.step = 0

    def set_step(self, step: int) -> None:
        self.step = int(step)

    def spectral_radius(self, x: torch.Tensor, n_iter: int = 20) -> Optional[torch.Tensor]:
        """rho(J_f(z*)) per sample (B,) where the strategy has an equilibrium; None here."""
        return None

    def analysis(self, x: torch.Tensor) -> Optional[dict]:
        """The strategy's equilibrium analysis for input ``x`` (see ``DepthModel.analysis``);
        None for a strategy that has none."""
        return None


def relative_steps(zs: list[torch.Tensor]) -> list[float]:
    """||z[i+1] - z[i]|| / ||z[i+1]|| per step, mean over the batch, for iterates (B, T, D)."""
    out = []
    for prev, nxt in zip(zs, zs[1:]):
        diff = torch.linalg.vector_norm((nxt - prev).flatten(1), dim=1)
        size = torch.linalg.vector_norm(nxt.flatten(1), dim=1)
        out.append(float((diff / (size + 1e-9)).mean()))
    return out

    def forward(self, x: torch.Tensor) -> DepthResult:
        raise NotImplementedError


@dataclass(frozen=True)
class LayersOptions(DepthOptions):
    """weight_tied / explicit: number of cell applications."""

    size_key: ClassVar[Optional[str]] = "layers"
    layers: int = 6

    def check(self) -> None:
        if self.layers < 1:
            raise ValueError(f"model.depth.layers: must be >= 1, got {self.layers}")
        if self.layers > MAX_LAYERS:
            raise ValueError(f"model.depth.layers: must be at most {MAX_LAYERS}, got {self.layers}")


@dataclass(frozen=True)
class CheckpointedOptions(LayersOptions):
    """checkpointed: ``segments`` defaults to round(sqrt(layers))."""

    segments: Optional[int] = None

    def check(self) -> None:
        super().check()
        if self.segments is not None and not 1 <= self.segments <= self.layers:
            raise ValueError(f"model.depth.segments: must be in [1, layers={self.layers}], "
                             f"got {self.segments}")

    @property
    def n_segments(self) -> int:
        return self.segments if self.segments is not None else max(1, round(math.sqrt(self.layers)))


def apply_cell_repeatedly(cell: Cell, z: torch.Tensor, injection: torch.Tensor, times: int) -> torch.Tensor:
    """z <- cell(z, injection), ``times`` times; (B, T, D) -> (B, T, D)."""
    for _ in range(times):
        z = cell(z, injection)
    return z


class WeightTied(DepthStrategy):
    """One cell applied ``layers`` times from z0 = 0."""

    Options = LayersOptions

    def __init__(self, make_cell: CellFactory, options: LayersOptions) -> None:
        super().__init__(make_cell, options)
        self.cell = make_cell()
        self.layers = options.layers

    def forward(self, x: torch.Tensor) -> DepthResult:
        injection = self.cell.prepare_injection(x)
        z = apply_cell_repeatedly(self.cell, torch.zeros_like(x), injection, self.layers)
        return DepthResult(z=z, stats={"nfe": float(self.layers)})

    def analysis(self, x: torch.Tensor, extra_layers: int = 32) -> dict:
        """Layer differences of the trained cell applied ``max(layers, extra_layers)`` times:
        whether a deep weight-tied stack tends to a fixed point (the DEQ paper's motivation)."""
        injection = self.cell.prepare_injection(x)
        zs = [torch.zeros_like(x)]
        for _ in range(max(self.layers, extra_layers)):
            zs.append(self.cell(zs[-1], injection))
        return {"kind": "layers", "trained_layers": self.layers, "layer_diff": relative_steps(zs)}


class Checkpointed(WeightTied):
    """Weight-tied stack run in ``segments`` gradient-checkpointed pieces."""

    Options = CheckpointedOptions

    def __init__(self, make_cell: CellFactory, options: CheckpointedOptions) -> None:
        super().__init__(make_cell, options)
        n_seg = options.n_segments
        base, extra = divmod(self.layers, n_seg)
        self.segment_sizes = [base + (1 if i < extra else 0) for i in range(n_seg)]

    def forward(self, x: torch.Tensor) -> DepthResult:
        injection = self.cell.prepare_injection(x)
        z = torch.zeros_like(x)  # (B, T, D)
        for size in self.segment_sizes:
            if torch.is_grad_enabled():
                z = checkpoint(apply_cell_repeatedly, self.cell, z, injection, size, use_reentrant=False)
            else:
                z = apply_cell_repeatedly(self.cell, z, injection, size)
        return DepthResult(z=z, stats={"nfe": float(self.layers)})


class Explicit(DepthStrategy):
    """``layers`` cells with their own weights, applied in sequence from z0 = 0."""

    Options = LayersOptions

    def __init__(self, make_cell: CellFactory, options: LayersOptions) -> None:
        super().__init__(make_cell, options)
        self.cells = nn.ModuleList(make_cell() for _ in range(options.layers))

    def forward(self, x: torch.Tensor) -> DepthResult:
        z = torch.zeros_like(x)  # (B, T, D)
        for cell in self.cells:
            z = cell(z, cell.prepare_injection(x))
        return DepthResult(z=z, stats={"nfe": float(len(self.cells))})

    def analysis(self, x: torch.Tensor) -> dict:
        """Layer differences through the trained stack (its own depth: each layer is its own)."""
        zs = [torch.zeros_like(x)]
        for cell in self.cells:
            zs.append(cell(zs[-1], cell.prepare_injection(x)))
        return {"kind": "layers", "trained_layers": len(self.cells), "layer_diff": relative_steps(zs)}
