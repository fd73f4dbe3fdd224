"""models: a cell, wrapped by a depth strategy, between a token embedding and a task head.

The cell is the same function in every strategy, so comparing strategies changes only
how depth is realised::

    from models import build_model
    model = build_model({"task": "lm", "vocab_size": 10000, "cell": "transformer",
                         "d_model": 256, "n_head": 4, "d_inner": 1024, "dropout": 0.1,
                         "depth": {"kind": "deq", "max_iter": 30, "tol": 1e-3}})
    out = model(tokens, targets)      # LongTensor (B, T) each
    out.loss.backward()               # mean token NLL (nats)
    out.stats, out.backward_stats()   # nfe, solver residuals, ...

Config keys (``ModelConfig``): task ("lm" | "copy"), vocab_size, n_classes (copy),
cell (``CELLS``), d_model, n_head, d_inner, dropout, emb_dropout, max_rel_distance,
kernel_size, gate, weight_norm, tie_weights, adaptive_softmax {cutoffs, div_value},
head (``HEADS``; default from the task), depth {kind (``STRATEGIES``), ...options of that
strategy; the DEQ's solver_options / backward_solver_options go to its solvers}.
docs/model_block.md describes every key.

Modules: config (validation), layers, cells, depth (weight_tied, checkpointed,
explicit), deq, ode (neural_ode), heads, model (DepthModel, ModelOutput), build
(registries, build_model), memory (activation_bytes; ``python -m models.memory``).
"""
from .build import CELLS, HEADS, STRATEGIES, build_model, depth_option_default, depth_size, head_name, parse_config, \
    register_cell, register_head, register_strategy
from .cells import Cell
from .config import TASKS, DepthOptions, ModelConfig
from .depth import DepthResult, DepthStrategy
from .heads import Head, HeadOutput
from .model import DepthModel, ModelOutput

__all__ = [
    "CELLS", "HEADS", "STRATEGIES", "TASKS", "build_model", "depth_size", "depth_option_default", "parse_config", "head_name",
    "register_cell", "register_head", "register_strategy", "Cell", "DepthOptions", "ModelConfig",
    "DepthResult", "DepthStrategy", "Head", "HeadOutput", "DepthModel", "ModelOutput",
]
