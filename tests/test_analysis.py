"""The equilibrium analysis of a trained cell (DepthModel.analysis): the DEQ slide's residual
traces and the weight-tied slide's layer differences."""
from __future__ import annotations

import torch

from models import build_model

BASE = {"task": "lm", "vocab_size": 50, "cell": "transformer", "d_model": 16, "n_head": 2, "d_inner": 32}
TOKENS = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(0))


def test_deq_traces_have_one_point_per_iteration_and_never_rise():
    model = build_model({**BASE, "depth": {"kind": "deq", "max_iter": 12, "tol": 1e-3}})
    out = model.analysis(TOKENS)
    assert out["kind"] == "deq" and out["max_iter"] == 32
    assert set(out["rel_residual"]) == {"broyden", "anderson", "fixed_point_iter"}
    for solver, trace in out["rel_residual"].items():
        assert len(trace) == 32, solver  # tol 0: no early stop
        assert all(b <= a + 1e-12 for a, b in zip(trace, trace[1:])), solver  # the best so far
        assert trace[-1] < trace[0]


def test_a_contractive_weight_tied_stack_converges_layer_by_layer():
    # float64 and a seed of its own: in float32 the differences reach round-off (about 1e-7
    # relative) within a few layers, where "strictly decreasing" is a coin toss per init.
    torch.manual_seed(0)
    model = build_model({**BASE, "depth": {"kind": "weight_tied", "layers": 4}}).double()
    with torch.no_grad():
        for p in model.strategy.cell.parameters():
            p.mul_(0.3)  # a small cell is a contraction: z[i] tends to its fixed point
    out = model.analysis(TOKENS)
    diffs = out["layer_diff"]
    assert out["kind"] == "layers" and out["trained_layers"] == 4 and len(diffs) == 32
    assert all(b < a for a, b in zip(diffs[1:], diffs[2:])) and diffs[-1] < 1e-3 * diffs[1]


def test_explicit_stacks_report_their_own_depth_and_odes_nothing():
    out = build_model({**BASE, "depth": {"kind": "explicit", "layers": 3}}).analysis(TOKENS)
    assert out["kind"] == "layers" and len(out["layer_diff"]) == 3
    assert build_model({**BASE, "depth": {"kind": "neural_ode", "steps": 2}}).analysis(TOKENS) is None
