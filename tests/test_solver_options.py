"""Tests of the model layer's "dead ends", now open: the DEQ's solver options and the head key.

``model.depth.solver_options`` / ``backward_solver_options`` must reach the forward and
the adjoint solve (a spy solver registered in ``solvers.SOLVERS`` records its keyword
arguments; Broyden's ``memory`` changes the iterates of a real solve), and bad options
must fail with one-line errors naming the key path. ``model.head`` chooses a head from
``HEADS`` by name, a head added with ``register_head`` included; without it the choice
is as before. Tiny models on the CPU, a few seconds in all.
"""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from models import HEADS, build_model, parse_config, register_head
from models.config import FrozenOptions
from models.deq import DEQOptions
from models.heads import AdaptiveSoftmaxLMHead, CopyHead, SoftmaxLMHead
from solvers import SOLVERS, broyden, register_solver

VOCAB = 12
SPY = "spy_solver_test"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded for this module (tests/conftest.py)."""


def config(depth: dict | None = None, **extra) -> dict:
    cfg = {"task": "lm", "vocab_size": VOCAB, "cell": "transformer", "d_model": 16, "n_head": 2,
           "d_inner": 32, "depth": {"kind": "deq", "max_iter": 12, "tol": 1e-4, **(depth or {})}}
    cfg.update(extra)
    return cfg


def tokens(batch: int = 2, seq_len: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def spy() -> list[dict]:
    """A solver registered as SPY for the test's duration; it records its keyword arguments
    and solves with Broyden."""
    calls: list[dict] = []

    def spy_solver(f, z0, *, max_iter, tol, stop_mode, tag: str = "none", memory: int | None = None):
        calls.append(dict(max_iter=max_iter, tol=tol, stop_mode=stop_mode, tag=tag, memory=memory))
        return broyden(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, memory=memory)

    register_solver(SPY, spy_solver)
    try:
        yield calls
    finally:
        del SOLVERS[SPY]


# ----------------------------------------------------------------------------- options reach the solvers
def test_solver_options_reach_the_forward_and_backward_options_the_adjoint_solve(spy: list[dict]) -> None:
    torch.manual_seed(0)
    model = build_model(config({"solver": SPY, "backward_solver": SPY, "backward_max_iter": 7,
                                "solver_options": {"tag": "fwd", "memory": 2},
                                "backward_solver_options": {"tag": "bwd"}}))
    seq = tokens()
    out = model(seq, seq)
    assert [c["tag"] for c in spy] == ["fwd"]
    assert spy[0]["memory"] == 2 and spy[0]["max_iter"] == 12
    out.loss.backward()
    assert [c["tag"] for c in spy] == ["fwd", "bwd"]
    assert spy[1]["memory"] is None and spy[1]["max_iter"] == 7  # the forward options stay forward
    assert out.backward_stats()["bwd_nstep"] >= 1


def test_broyden_memory_from_the_config_changes_the_iterates_and_none_is_the_default() -> None:
    seq = tokens(seed=1)

    def forward(options: dict) -> tuple[torch.Tensor, float]:
        torch.manual_seed(0)
        model = build_model(config({"max_iter": 25, "tol": 1e-12, "stop_mode": "abs",
                                    "solver_options": options})).double().eval()
        with torch.no_grad():
            out = model(seq, seq)
        return out.logits, out.stats["fwd_abs_res_mean"]

    full, full_res = forward({})
    explicit_none, _ = forward({"memory": None})
    short, short_res = forward({"memory": 1, "memory_policy": "restart"})
    assert torch.equal(full, explicit_none)
    assert not torch.allclose(full, short, rtol=0, atol=1e-12)
    assert short_res != full_res


def test_backward_solver_options_change_the_adjoint_solve() -> None:
    seq = tokens(seed=2)

    def backward(options: dict) -> dict[str, float]:
        torch.manual_seed(0)
        model = build_model(config({"backward_solver": "anderson", "backward_max_iter": 40,
                                    "backward_tol": 1e-12, "backward_solver_options": options})).double()
        out = model(seq, seq)
        out.loss.backward()
        return out.backward_stats()

    default, one = backward({}), backward({"m": 1, "tau": 0.5})
    assert (default["bwd_nstep"], default["bwd_res_mean"]) != (one["bwd_nstep"], one["bwd_res_mean"])


def test_a_solver_taking_kwargs_accepts_any_option_name() -> None:
    seen: list[dict] = []

    def loose(f, z0, *, max_iter, tol, stop_mode, **options):
        seen.append(options)
        return broyden(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode)

    register_solver(SPY, loose)
    try:
        model = build_model(config({"solver": SPY, "solver_options": {"anything": 3, "colour": "red"}}))
        with torch.no_grad():
            model(tokens(), tokens())
    finally:
        del SOLVERS[SPY]
    assert seen == [{"anything": 3, "colour": "red"}]


# ----------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("depth, message", [
    ({"solver_options": {"memroy": 4}},
     r"^model\.depth\.solver_options: unknown option 'memroy' for solver 'broyden' \(did you mean 'memory'\?\); "
     r"allowed: memory, memory_policy$"),
    ({"solver": "fixed_point_iter", "solver_options": {"m": 3}},
     r"^model\.depth\.solver_options: unknown option 'm' for solver 'fixed_point_iter'; allowed: tau$"),
    ({"backward_solver": "anderson", "backward_solver_options": {"memory": 3}},
     r"^model\.depth\.backward_solver_options: unknown option 'memory' for solver 'anderson'; "
     r"allowed: m, lam, tau$"),
    ({"solver_options": {"max_iter": 5}},
     r"^model\.depth\.solver_options: option 'max_iter' is set by the depth block; use model\.depth\.max_iter"),
    ({"backward_solver_options": {"tol": 1e-3}},
     r"^model\.depth\.backward_solver_options: option 'tol' is set by the depth block; "
     r"use model\.depth\.backward_tol"),
    ({"solver_options": {"stop_mode": "abs"}}, r"use model\.depth\.stop_mode instead"),
    ({"solver_options": {"z0": 0}}, r"^model\.depth\.solver_options: option 'z0' is set by the DEQ itself"),
    ({"solver_options": {"f": "x"}}, r"^model\.depth\.solver_options: option 'f' is set by the DEQ itself"),
    ({"solver_options": {"memory": "8"}}, r"^model\.depth\.solver_options\.memory: expected an integer, got '8'$"),
    ({"solver_options": {"memory": True}}, r"^model\.depth\.solver_options\.memory: expected an integer, got True$"),
    ({"solver_options": {"memory": 4.0}}, r"^model\.depth\.solver_options\.memory: expected an integer, got 4\.0$"),
    ({"solver": "anderson", "solver_options": {"lam": False}},
     r"^model\.depth\.solver_options\.lam: expected a number, got False$"),
    ({"solver": "anderson", "solver_options": {"lam": float("inf")}},
     r"^model\.depth\.solver_options\.lam: expected a finite number, got inf$"),
    ({"solver_options": {"memory_policy": 1}},
     r"^model\.depth\.solver_options\.memory_policy: expected a string, got 1$"),
    ({"solver_options": {"memory": 0}},
     r"^model\.depth\.solver_options\.memory: must be an integer >= 1 or null .*, got 0 \(solver 'broyden'\)$"),
    ({"solver_options": {"memory_policy": "lru"}},
     r"^model\.depth\.solver_options\.memory_policy: must be one of restart, drop_oldest, got 'lru'"),
    ({"solver": "anderson", "solver_options": {"m": 0}},
     r"^model\.depth\.solver_options\.m: must be an integer >= 1, got 0 \(solver 'anderson'\)$"),
    ({"solver": "anderson", "solver_options": {"lam": -1e-3}},
     r"^model\.depth\.solver_options\.lam: must be a number >= 0"),
    ({"backward_solver": "fixed_point_iter", "backward_solver_options": {"tau": 1.5}},
     r"^model\.depth\.backward_solver_options\.tau: must be a number in \(0, 1\], got 1\.5"),
    ({"solver_options": [4]},
     r"^model\.depth\.solver_options: expected a mapping of option names to values, got \[4\]$"),
    ({"solver_options": None}, r"^model\.depth\.solver_options: expected a mapping"),
    ({"solver_options": {"memory": [4]}},
     r"^model\.depth\.solver_options\.memory: expected a number, a string, true/false or null, got \[4\]$"),
])
def test_bad_solver_options_raise_one_line_errors_naming_the_key_path(depth: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        build_model(config(depth))
    assert "\n" not in str(info.value)


def test_an_unknown_solver_is_refused_before_its_options_are_read() -> None:
    with pytest.raises(ValueError, match=r"^model\.depth\.solver: unknown solver 'newton'; allowed: .*anderson"):
        build_model(config({"solver": "newton", "solver_options": {"memory": 3}}))


def test_a_required_option_of_a_registered_solver_must_be_given() -> None:
    def strict(f, z0, *, max_iter, tol, stop_mode, rank: int):
        return broyden(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode)

    register_solver(SPY, strict)
    try:
        needs = rf"^model\.depth\.solver_options: solver '{SPY}' needs option 'rank'$"
        with pytest.raises(ValueError, match=needs):
            build_model(config({"solver": SPY}))
        build_model(config({"solver": SPY, "solver_options": {"rank": 2}}))
        with pytest.raises(ValueError, match=r"solver_options\.rank: expected an integer, got True"):
            build_model(config({"solver": SPY, "solver_options": {"rank": True}}))
    finally:
        del SOLVERS[SPY]


# ----------------------------------------------------------------------------- options stay values
def test_deq_options_stay_hashable_comparable_and_serialisable() -> None:
    a = parse_config(config({"solver_options": {"memory": 4, "memory_policy": "drop_oldest"}})).depth
    b = DEQOptions(kind="deq", max_iter=12, tol=1e-4, solver_options={"memory_policy": "drop_oldest", "memory": 4})
    assert isinstance(a.solver_options, FrozenOptions) and isinstance(b.solver_options, FrozenOptions)
    assert a == b and hash(a) == hash(b)
    assert a != DEQOptions(kind="deq", max_iter=12, tol=1e-4)
    assert hash(DEQOptions()) == hash(DEQOptions()) and DEQOptions().solver_options == {}
    assert pickle.loads(pickle.dumps(a)) == a
    assert json.loads(json.dumps(a.solver_options)) == {"memory": 4, "memory_policy": "drop_oldest"}
    with pytest.raises(TypeError, match="read-only"):
        a.solver_options["memory"] = 5  # type: ignore[index]
    again = parse_config(parse_config(config({"solver_options": {"memory": 4}})))  # a ModelConfig goes back in
    assert again.depth.solver_options == {"memory": 4}


# ----------------------------------------------------------------------------- heads
def test_default_head_choice_is_unchanged() -> None:
    assert type(build_model(config()).head) is SoftmaxLMHead
    adaptive = build_model(config(adaptive_softmax={"cutoffs": [4, 8]}))
    assert type(adaptive.head) is AdaptiveSoftmaxLMHead
    copy = build_model({**config(), "task": "copy"})
    assert type(copy.head) is CopyHead
    assert type(build_model(config(head="softmax")).head) is SoftmaxLMHead
    assert type(build_model(config(head="adaptive_softmax", adaptive_softmax={"cutoffs": [4]})).head) \
        is AdaptiveSoftmaxLMHead


def test_a_registered_head_is_chosen_by_name() -> None:
    class ScaledHead(SoftmaxLMHead):
        def forward(self, z, targets):
            return super().forward(2.0 * z, targets)

    register_head("scaled_head_test", ScaledHead)
    try:
        model = build_model(config(head="scaled_head_test"))
        assert type(model.head) is ScaledHead
        seq = tokens()
        with torch.no_grad():
            assert torch.isfinite(model(seq, seq).loss)
        with pytest.raises(ValueError, match=r"allowed: .*scaled_head_test"):
            build_model(config(head="scaled"))
    finally:
        del HEADS["scaled_head_test"]
    with pytest.raises(ValueError, match=r"^model\.head: unknown head 'scaled_head_test'"):
        build_model(config(head="scaled_head_test"))


@pytest.mark.parametrize("extra, message", [
    ({"head": "beam"}, r"^model\.head: unknown head 'beam'; allowed: adaptive_softmax, copy, softmax$"),
    ({"head": 3}, r"^model\.head: expected a string, got 3$"),
    ({"head": "adaptive_softmax"}, r"^model\.head: head 'adaptive_softmax' needs model\.adaptive_softmax"),
    ({"head": "softmax", "adaptive_softmax": {"cutoffs": [4]}},
     r"^model\.adaptive_softmax: only used by head 'adaptive_softmax', not 'softmax'$"),
    ({"head": "softmax", "task": "copy", "vocab_size": 10, "n_classes": 5},
     r"^model\.tie_weights: head 'softmax' ties its output matrix to the embedding"),
])
def test_bad_heads_are_refused_with_one_line_errors(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(config(**extra))
