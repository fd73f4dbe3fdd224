"""Tests of models/: cells x depth strategies x heads, on tiny models (CPU, seconds).

What must hold for a fair comparison of depth strategies: every combination is causal;
the DEQ is the limit of the weight-tied stack (values and gradients); checkpointing
changes memory, not numbers; the adjoint ODE gradient is the ODE gradient; every
strategy learns; counts, heads and config errors behave as documented.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import CELLS, HEADS, STRATEGIES, Cell, build_model, register_cell, register_strategy
from models.cells import TransformerCell
from models.layers import VariationalDropout, reset_variational_dropout

VOCAB = 12
CELL_VARIANTS = {  # name -> config keys
    "transformer": {"cell": "transformer"},
    "trellisnet_glu": {"cell": "trellisnet", "gate": "glu"},
    "trellisnet_lstm": {"cell": "trellisnet", "gate": "lstm", "kernel_size": 3},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded for this module (tests/conftest.py)."""


def config(cell: str = "transformer", depth: dict | None = None, **extra) -> dict:
    cfg = {"task": "lm", "vocab_size": VOCAB, "d_model": 16, "n_head": 2, "d_inner": 32,
           "depth": depth or {"kind": "weight_tied", "layers": 3}}
    cfg.update(CELL_VARIANTS.get(cell, {"cell": cell}))
    cfg.update(extra)
    return cfg


def depth_for(kind: str, precise: bool = False) -> dict:
    """A small depth config per strategy; ``precise``: converged/accurate enough for float64 checks."""
    if kind == "deq":
        return ({"kind": "deq", "max_iter": 80, "tol": 1e-11, "stop_mode": "abs"} if precise
                else {"kind": "deq", "max_iter": 12, "tol": 1e-4})
    if kind == "neural_ode":
        return {"kind": "neural_ode", "method": "rk4", "steps": 2}
    if kind == "checkpointed":
        return {"kind": "checkpointed", "layers": 4}
    return {"kind": kind, "layers": 3}


def tokens(batch: int = 2, seq_len: int = 10, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@pytest.mark.parametrize("cell", sorted(CELL_VARIANTS))
def test_changing_a_later_token_never_changes_earlier_outputs(cell: str, kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(config(cell, depth_for(kind, precise=True))).double().eval()
    seq = tokens()
    t = 4
    changed = seq.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 1) % VOCAB
    with torch.no_grad():
        before = model(seq, seq).logits
        after = model(changed, seq).logits
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-8)
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:], atol=1e-6)  # the change is seen later


# ----------------------------------------------------------------------------- strategies agree
@pytest.mark.parametrize("cell", ["transformer", "trellisnet_glu"])
def test_deq_equals_the_limit_of_weight_tied_in_value_and_gradient(cell: str) -> None:
    torch.manual_seed(0)
    deep = build_model(config(cell, {"kind": "weight_tied", "layers": 90})).double()
    deq = build_model(config(cell, {"kind": "deq", "solver": "broyden", "max_iter": 100, "tol": 1e-12,
                                    "stop_mode": "abs", "backward_tol": 1e-12,
                                    "backward_max_iter": 100})).double()
    deq.load_state_dict(deep.state_dict())
    seq, target = tokens(seed=1), tokens(seed=2)
    out_deep = deep(seq, target)
    out_deep.loss.backward()
    out_deq = deq(seq, target)
    out_deq.loss.backward()
    assert out_deq.stats["fwd_abs_res_max"] < 1e-10
    assert out_deq.backward_stats()["bwd_res_max"] < 1e-10
    assert torch.allclose(out_deq.logits, out_deep.logits, rtol=0, atol=1e-9)
    assert math.isclose(out_deq.loss.item(), out_deep.loss.item(), rel_tol=1e-10)
    g_deep, g_deq = grads(deep), grads(deq)
    assert g_deep.keys() == g_deq.keys()
    for name in g_deep:
        assert torch.allclose(g_deq[name], g_deep[name], rtol=1e-6, atol=1e-9), name


@pytest.mark.parametrize("cell", ["transformer", "trellisnet_lstm"])
def test_checkpointed_is_bit_identical_to_weight_tied_with_dropout(cell: str) -> None:
    torch.manual_seed(0)
    extra = {"dropout": 0.3, "emb_dropout": 0.1}
    tied = build_model(config(cell, {"kind": "weight_tied", "layers": 5}, **extra)).double()
    ckpt = build_model(config(cell, {"kind": "checkpointed", "layers": 5, "segments": 2}, **extra)).double()
    ckpt.load_state_dict(tied.state_dict())
    seq = tokens()
    results = []
    for model in (tied, ckpt):
        torch.manual_seed(7)
        out = model(seq, seq)
        out.loss.backward()
        results.append((out.loss.detach(), grads(model)))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_neural_ode_adjoint_gradients_match_backprop_through_the_solver() -> None:
    torch.manual_seed(0)
    depth = {"kind": "neural_ode", "method": "dopri5", "rtol": 1e-10, "atol": 1e-10}
    plain = build_model(config("trellisnet_glu", {**depth, "adjoint": False})).double()
    adjoint = build_model(config("trellisnet_glu", {**depth, "adjoint": True})).double()
    adjoint.load_state_dict(plain.state_dict())
    seq = tokens(seq_len=6)
    out_plain = plain(seq, seq)
    out_plain.loss.backward()
    out_adj = adjoint(seq, seq)
    out_adj.loss.backward()
    assert math.isclose(out_plain.loss.item(), out_adj.loss.item(), rel_tol=1e-12)
    assert out_adj.backward_stats()["bwd_nfe"] > 0 and out_plain.backward_stats() == {}
    g_plain, g_adj = grads(plain), grads(adjoint)
    assert g_plain.keys() == g_adj.keys()
    for name in g_plain:
        assert torch.allclose(g_adj[name], g_plain[name], rtol=1e-6, atol=1e-9), name


def test_neural_ode_euler_with_unit_step_is_the_weight_tied_stack() -> None:
    torch.manual_seed(0)
    tied = build_model(config("transformer", {"kind": "weight_tied", "layers": 3})).double().eval()
    ode = build_model(config("transformer", {"kind": "neural_ode", "method": "euler", "steps": 3,
                                             "t1": 3.0})).double().eval()
    ode.load_state_dict(tied.state_dict())
    seq = tokens()
    with torch.no_grad():
        assert torch.allclose(ode(seq, seq).logits, tied(seq, seq).logits, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- learning
def _train(model: torch.nn.Module, batch_fn, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        model.set_step(step)
        seq, target = batch_fn(step)
        out = model(seq, target)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@pytest.mark.parametrize("cell", ["transformer", "trellisnet_glu"])
def test_every_strategy_learns_a_tiny_language(cell: str, kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(config(cell, depth_for(kind)))

    def batch(step: int):  # the next token is a fixed function of the current one
        seq = tokens(batch=8, seq_len=8, seed=step)
        return seq, (5 * seq + 3) % VOCAB

    losses = _train(model, batch, steps=30)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert math.isfinite(last) and last < 0.5 * first, (first, last)


@pytest.mark.parametrize("kind", ["deq", "explicit"])
@pytest.mark.parametrize("cell", ["transformer", "trellisnet_glu"])
def test_copy_head_learns_to_recall_the_previous_token(cell: str, kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(config(cell, depth_for(kind), task="copy", vocab_size=10))

    def batch(step: int):  # class at t = input token at t - 1: information must flow in time
        seq = tokens(batch=8, seq_len=8, seed=step, vocab=10)
        return seq, F.pad(seq, (1, 0))[:, :-1]

    losses = _train(model, batch, steps=40, lr=3e-2)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.65 * first, (first, last)  # attention needs longer than the conv to get it all
    out = model.eval()(*batch(99))
    assert out.logits.shape == (8, 8, 10)


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("kind, expected", [("weight_tied", 3), ("explicit", 3), ("checkpointed", 4),
                                            ("neural_ode", 8)])
def test_nfe_counts_cell_evaluations(kind: str, expected: int) -> None:
    out = build_model(config("transformer", depth_for(kind)))(tokens(), tokens())
    assert out.stats["nfe"] == expected


def test_deq_reports_forward_and_backward_solver_statistics() -> None:
    torch.manual_seed(0)
    model = build_model(config("transformer", {"kind": "deq", "max_iter": 20, "tol": 1e-3}))
    out = model(tokens(), tokens())
    keys = {"nfe", "fwd_nstep", "fwd_abs_res_mean", "fwd_abs_res_max", "fwd_rel_res_mean",
            "fwd_rel_res_max", "solver_time_s"}
    assert keys <= set(out.stats)
    assert out.stats["nfe"] == out.stats["fwd_nstep"] + 1  # solver steps + the differentiable one
    assert out.stats["fwd_rel_res_max"] >= out.stats["fwd_rel_res_mean"]
    assert out.backward_stats() == {}  # nothing before backward
    out.loss.backward()
    bwd = out.backward_stats()
    assert set(bwd) == {"bwd_nstep", "bwd_res_mean", "bwd_res_max", "bwd_solver_time_s", "bwd_converged_frac"}
    assert bwd["bwd_nstep"] >= 1 and bwd["bwd_res_max"] >= bwd["bwd_res_mean"]


def test_deq_warm_up_runs_a_shallow_stack_then_the_solver() -> None:
    model = build_model(config("trellisnet_glu", {"kind": "deq", "pretrain_steps": 3, "pretrain_depth": 2}))
    seq = tokens()
    model.set_step(2)
    warm = model(seq, seq)
    assert warm.stats == {"nfe": 2.0, "deq_pretrain": 1.0}
    model.set_step(3)
    assert "fwd_nstep" in model(seq, seq).stats


def test_deq_jacobian_regulariser_adds_to_the_training_loss_only() -> None:
    torch.manual_seed(0)
    plain = build_model(config("transformer", {"kind": "deq", "max_iter": 30, "tol": 1e-6}))
    reg = build_model(config("transformer", {"kind": "deq", "max_iter": 30, "tol": 1e-6,
                                             "jac_reg": 2.0, "jac_reg_freq": 2}))
    reg.load_state_dict(plain.state_dict())
    seq = tokens()
    base = plain(seq, seq)
    reg.set_step(4)
    out = reg(seq, seq)
    assert out.stats["jac_loss"] > 0 and out.stats["nfe"] == base.stats["nfe"] + 1
    assert math.isclose(out.loss.item(), base.loss.item() + 2.0 * out.stats["jac_loss"], rel_tol=1e-5)
    assert out.nll_sum == pytest.approx(base.nll_sum, rel=1e-5)
    out.loss.backward()
    reg.set_step(5)  # not a regularisation step
    assert "jac_loss" not in reg(seq, seq).stats


@pytest.mark.parametrize("grad", ["phantom", "unroll"])
def test_deq_cheap_gradients_count_their_steps_in_the_forward(grad: str) -> None:
    model = build_model(config("transformer", {"kind": "deq", "max_iter": 10, "grad": grad,
                                               "grad_steps": 3, "tau": 0.8}))
    out = model(tokens(), tokens())
    out.loss.backward()
    assert out.stats["nfe"] == out.stats["fwd_nstep"] + 3
    assert out.backward_stats() == {}
    assert all(p.grad is not None for p in model.strategy.cell.parameters())


# ----------------------------------------------------------------------------- parts
def test_variational_dropout_shares_one_mask_over_time_and_calls() -> None:
    drop = VariationalDropout(0.5).train()
    x = torch.ones(3, 7, 20)
    first, second = drop(x), drop(x)
    assert torch.equal(first, second)  # same mask on every call until reset
    assert torch.equal(first, first[:, :1].expand_as(first))  # same mask at every time step
    assert set(first.unique().tolist()) <= {0.0, 2.0}
    reset_variational_dropout(torch.nn.Sequential(drop))
    assert drop.mask is None
    assert torch.equal(drop.eval()(x), x)


def test_weight_norm_reparametrises_cell_layers_and_keeps_training() -> None:
    model = build_model(config("transformer", depth_for("deq"), weight_norm=True))
    names = [n for n, _ in model.named_parameters()]
    assert any("parametrizations.weight.original0" in n for n in names)
    assert not any(n.startswith("embedding.parametrizations") for n in names)  # cells only
    out = model(tokens(), tokens())
    out.loss.backward()
    assert out.stats["fwd_rel_res_max"] < 1e-3


def test_param_counts_add_up_and_explicit_has_layers_times_the_cell() -> None:
    tied = build_model(config("transformer", {"kind": "weight_tied", "layers": 4}))
    explicit = build_model(config("transformer", {"kind": "explicit", "layers": 4}))
    untied = build_model(config("transformer", {"kind": "weight_tied", "layers": 4}, tie_weights=False))
    for model in (tied, explicit, untied):
        counts = model.param_counts()
        assert counts["total"] == sum(p.numel() for p in model.parameters())
        assert counts["total"] == counts["embedding"] + counts["non_embedding"]
    cell = sum(p.numel() for p in tied.strategy.cell.parameters())
    assert tied.param_counts()["non_embedding"] == cell
    assert explicit.param_counts()["non_embedding"] == 4 * cell
    assert tied.param_counts()["embedding"] == VOCAB * 16 + VOCAB  # tied matrix once + output bias
    assert untied.param_counts()["embedding"] == 2 * VOCAB * 16 + VOCAB


def test_adaptive_softmax_loss_equals_a_manual_computation() -> None:
    torch.manual_seed(0)
    vocab = 40
    model = build_model(config("trellisnet_glu", vocab_size=vocab,
                               adaptive_softmax={"cutoffs": [8, 20], "div_value": 2.0})).eval()
    seq, target = tokens(vocab=vocab), tokens(seed=5, vocab=vocab)
    target[0, 3] = -100  # ignored position
    out = model(seq, target)
    assert out.logits is None and out.n_tokens == seq.numel() - 1
    with torch.no_grad():
        z = model.strategy(model.embedding(seq) * model.emb_scale).z  # (B, T, D)
        log_probs = model.head.adaptive.log_prob(z.flatten(0, 1))  # (B*T, V)
        keep = target.flatten() != -100
        picked = log_probs[keep].gather(1, target.flatten()[keep, None])
    assert out.nll_sum == pytest.approx(-picked.sum().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(-picked.mean().item(), rel=1e-5)


def test_full_softmax_loss_is_the_mean_token_cross_entropy() -> None:
    model = build_model(config("transformer")).eval()
    seq, target = tokens(), tokens(seed=3)
    out = model(seq, target)
    expected = F.cross_entropy(out.logits.flatten(0, 1), target.flatten())
    assert out.logits.shape == (2, 10, VOCAB) and out.n_tokens == 20
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.nll_sum == pytest.approx(20 * expected.item(), rel=1e-5)


def test_models_build_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = build_model(config("trellisnet_lstm", {"kind": "explicit", "layers": 2}, weight_norm=True))
    assert model.param_counts()["total"] > 0


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("change, message", [
    ({"cell": "lstm"}, r"model\.cell: unknown cell 'lstm'; allowed: .*transformer"),
    ({"depth": {"kind": "deepest"}}, r"model\.depth\.kind: unknown strategy 'deepest'; allowed: .*deq"),
    ({"depth": {"layers": 3}}, r"model\.depth: expected a mapping with 'kind'"),
    ({"n_head": 3}, r"model\.n_head: d_model=16 must be divisible by n_head=3"),
    ({"d_model": 0}, r"model\.d_model: must be a positive integer, got 0"),
    ({"vocab_size": -5}, r"model\.vocab_size: must be a positive integer"),
    ({"colour": "red"}, r"model: unknown key 'colour'; allowed: task, "),
    ({"d_model": 16.5}, r"model\.d_model: expected an integer, got 16\.5"),
    ({"weight_norm": "yes"}, r"model\.weight_norm: expected true/false"),
    ({"task": "translate"}, r"model\.task: unknown task 'translate'; allowed: lm, copy"),
    ({"dropout": 1.0}, r"model\.dropout: must be in \[0, 1\)"),
    ({"gate": "relu"}, r"model\.gate: unknown gate 'relu'"),
    ({"cell": "trellisnet", "gate": "lstm", "d_model": 15}, r"model\.d_model: gate 'lstm' .* even"),
    ({"adaptive_softmax": {"cutoffs": [8, 4]}}, r"model\.adaptive_softmax\.cutoffs: must be"),
    ({"adaptive_softmax": {"cutoff": [4]}}, r"model\.adaptive_softmax: unknown key 'cutoff'"),
    ({"depth": {"kind": "weight_tied", "layers": 0}}, r"model\.depth\.layers: must be >= 1, got 0"),
    ({"depth": {"kind": "weight_tied", "max_iter": 3}},
     r"model\.depth: unknown key 'max_iter'; allowed: kind, layers"),
    ({"depth": {"kind": "checkpointed", "layers": 4, "segments": 5}},
     r"model\.depth\.segments: must be in \[1, layers=4\]"),
    ({"depth": {"kind": "deq", "solver": "newton"}},
     r"model\.depth\.solver: unknown solver 'newton'; allowed: .*broyden"),
    ({"depth": {"kind": "deq", "grad": "magic"}},
     r"model\.depth\.grad: unknown mode 'magic'; allowed: ift, phantom, unroll"),
    ({"depth": {"kind": "deq", "tol": -1.0}}, r"model\.depth\.tol: must be > 0"),
    ({"depth": {"kind": "neural_ode", "method": "leapfrog"}},
     r"model\.depth\.method: unknown method 'leapfrog'; allowed: euler"),
    ({"depth": {"kind": "neural_ode", "adjoint": 1}}, r"model\.depth\.adjoint: expected true/false, got 1"),
    ({"n_classes": 5}, r"model\.n_classes: only used by task 'copy'"),
])
def test_bad_configs_raise_errors_naming_the_key_and_the_allowed_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model({**config("transformer"), **change})


def test_registries_name_every_choice_and_accept_new_entries() -> None:
    assert set(STRATEGIES) == {"deq", "weight_tied", "checkpointed", "neural_ode", "explicit"}
    assert set(CELLS) >= {"transformer", "trellisnet"}
    assert set(HEADS) == {"softmax", "adaptive_softmax", "copy"}

    class HalfTransformer(TransformerCell):
        def forward(self, z, injection):
            return 0.5 * super().forward(z, injection)

    register_cell("half_transformer_test", HalfTransformer)
    try:
        model = build_model(config("half_transformer_test"))
        assert isinstance(model.strategy.cell, HalfTransformer)
    finally:
        del CELLS["half_transformer_test"]
    with pytest.raises(ValueError, match="not a subclass of Cell"):
        register_cell("bad", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a subclass of DepthStrategy"):
        register_strategy("bad", Cell)  # type: ignore[arg-type]


def test_depth_size_follows_each_strategys_size_key():
    from models import depth_size

    assert depth_size({"kind": "deq", "max_iter": 7}) == 7
    assert depth_size({"kind": "deq"}) == 30  # the default, not "unknown"
    assert depth_size({"kind": "weight_tied", "layers": 3}) == 3 and depth_size({"kind": "explicit"}) == 6
    assert depth_size({"kind": "checkpointed", "layers": 9, "segments": 3}) == 9
    assert depth_size({"kind": "neural_ode", "steps": 2, "method": "rk4"}) == 2
    assert depth_size({"kind": "nope", "layers": 3}) is None and depth_size("deq") is None


def test_spectral_radius_only_where_there_is_an_equilibrium():
    base = {"task": "lm", "vocab_size": 50, "cell": "transformer", "d_model": 16, "n_head": 2, "d_inner": 32}
    tokens = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(0))
    deq = build_model({**base, "depth": {"kind": "deq", "max_iter": 30, "tol": 1e-5}})
    rho = deq.spectral_radius(tokens)
    assert rho.shape == (3,) and bool((rho > 0).all()) and bool(torch.isfinite(rho).all())
    assert deq.training  # left as it was
    assert build_model({**base, "depth": {"kind": "weight_tied", "layers": 2}}).spectral_radius(tokens) is None
