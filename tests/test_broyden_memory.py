"""Limited-memory Broyden (solvers.broyden with ``memory=m``): Kelley's restart, the default
``memory_policy``, against the old ``"drop_oldest"``.

The case that motivated the restart (issue 14): an affine contraction f(z) = A z + b, n = 200,
float64, with spectral radius 0.99, where dropping the oldest update left the iteration
stuck above 1e-4 after hundreds of evaluations at some m. A here is symmetric with
eigenvalues evenly spread over [0, 0.99] in a random orthonormal basis, so I - A has
condition number 100. ``python tests/test_broyden_memory.py`` prints, per m and policy, the
f evaluations each needs to bring the absolute residual ||f(z) - z|| under 1e-6.
"""
import math

import pytest
import torch

from solvers import broyden, equilibrium
from solvers.bench import MEMORY_BUDGET, MEMORY_SIZES, MEMORY_TOL, ill_conditioned_affine

N, BATCH, RADIUS, TOL, BUDGET = 200, 4, 0.99, MEMORY_TOL, MEMORY_BUDGET
MEMORIES = list(MEMORY_SIZES)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded for this module (tests/conftest.py): small products, a shared machine."""


def test_the_problem_is_what_it_says():
    _, a, b = ill_conditioned_affine()
    eig = torch.linalg.eigvalsh(a)
    assert math.isclose(eig.abs().max().item(), RADIUS, rel_tol=1e-12)
    assert math.isclose(torch.linalg.cond(torch.eye(N, dtype=torch.float64) - a).item(), 100.0, rel_tol=1e-9)
    assert b.shape == (BATCH, N)


@pytest.mark.parametrize("memory", MEMORIES)
def test_restarted_broyden_reaches_1e_6_on_the_ill_conditioned_affine_problem(memory):
    """Absolute residual ||f(z) - z|| < 1e-6 (from ||b|| ~ 14 at z0 = 0) for every sample
    within 200 f evaluations, at every memory size; the default policy is the restart."""
    f, a, b = ill_conditioned_affine()
    z0 = torch.zeros(BATCH, N, dtype=torch.float64)
    res = broyden(f, z0, max_iter=BUDGET, tol=TOL, stop_mode="abs", memory=memory)
    assert res.converged.all() and not res.nonfinite.any()
    assert res.nstep < BUDGET
    recomputed = torch.linalg.vector_norm(f(res.z) - res.z, dim=1)
    assert (recomputed < TOL).all()
    exact = torch.linalg.solve(torch.eye(N, dtype=torch.float64) - a, b.T).T
    torch.testing.assert_close(res.z, exact, rtol=0.0, atol=1e-4)  # ||(I - A)^{-1}|| = 100
    explicit = broyden(f, z0, max_iter=BUDGET, tol=TOL, memory=memory, memory_policy="restart")
    assert torch.equal(explicit.abs_trace, res.abs_trace)


def test_dropping_the_oldest_update_stalls_there():
    """Why the restart is the default: on the same problem the old policy does not get near
    1e-6 within 200 evaluations for most m (its best residual stays above 1e-4)."""
    f, _, _ = ill_conditioned_affine()
    z0 = torch.zeros(BATCH, N, dtype=torch.float64)
    stalled = 0
    for memory in MEMORIES:
        res = broyden(f, z0, max_iter=BUDGET, tol=TOL, memory=memory, memory_policy="drop_oldest")
        stalled += bool((res.abs_residual > 100 * TOL).any())
    assert stalled >= 3


def evaluations_needed(policy, memories=MEMORIES, budget=300):
    """For the printed table: per m, (f evaluations until every sample is under 1e-6, or None;
    the largest over the batch of each sample's best absolute residual)."""
    f, _, _ = ill_conditioned_affine()
    z0 = torch.zeros(BATCH, N, dtype=torch.float64)
    rows = {}
    for memory in memories:
        res = broyden(f, z0, max_iter=budget, tol=TOL, memory=memory, memory_policy=policy)
        rows[memory] = (res.nstep if res.converged.all() else None, res.abs_residual.max().item())
    return rows


@pytest.mark.parametrize("memory", [None, 500])
def test_a_memory_that_never_fills_gives_bitwise_the_full_memory_iterates(memory):
    """memory=None, or one larger than max_iter: the policy plays no part, bit for bit."""
    f, _, _ = ill_conditioned_affine(n=60, batch=3)
    z0 = torch.zeros(3, 60, dtype=torch.float64)
    full = broyden(f, z0, max_iter=80, tol=1e-12)
    for policy in ("restart", "drop_oldest"):
        res = broyden(f, z0, max_iter=80, tol=1e-12, memory=memory, memory_policy=policy)
        assert res.nstep == full.nstep
        assert torch.equal(res.abs_trace, full.abs_trace) and torch.equal(res.rel_trace, full.rel_trace)
        assert torch.equal(res.z, full.z)


@pytest.mark.parametrize("policy", ["restart", "drop_oldest"])
@pytest.mark.parametrize("memory", [1, 4])
def test_limited_memory_matches_full_memory_until_the_memory_is_full(memory, policy):
    """Both policies make the full-memory steps s_1 .. s_{m+1}: the first m + 3 evaluations agree."""
    f, _, _ = ill_conditioned_affine(n=60, batch=3)
    z0 = torch.zeros(3, 60, dtype=torch.float64)
    full = broyden(f, z0, max_iter=30, tol=0.0)
    res = broyden(f, z0, max_iter=30, tol=0.0, memory=memory, memory_policy=policy)
    first = memory + 3
    torch.testing.assert_close(res.abs_trace[:, :first], full.abs_trace[:, :first], rtol=1e-12, atol=0.0)
    assert not torch.allclose(res.abs_trace[:, first:], full.abs_trace[:, first:], rtol=1e-6, atol=0.0)


def test_after_a_restart_the_iterates_are_those_of_a_fresh_solve():
    """memory=m, restart: evaluations m + 2 .. of a solve from z0 are those of a fresh solve from
    the iterate z_{m+2} (rebuilt here from the dense recurrence of the first cycle)."""
    memory = 3
    f, _, _ = ill_conditioned_affine(n=40, batch=2)
    z0 = torch.zeros(2, 40, dtype=torch.float64)
    res = broyden(f, z0, max_iter=25, tol=0.0, memory=memory)
    # the first cycle is full-memory Broyden: replay it densely to get z_{m+2}
    z = z0.clone()
    restart_point = []
    for i in range(2):
        zi, g = z[i].clone(), (lambda v, i=i: v - f(v.expand(2, -1))[i])
        F = g(zi)
        step, factors = -F, []
        for _ in range(memory + 2):
            zi = zi + step
            F = g(zi)
            v = F.clone()
            for beta_j, left, right in factors:
                v = v + beta_j * right * (left @ v)
            beta_n = 1.0 / (step @ step)
            new_step = -v / (1 + beta_n * (step @ v))
            factors.append((beta_n, step, new_step))
            step = new_step
        restart_point.append(zi)
    fresh = broyden(f, torch.stack(restart_point), max_iter=25 - (memory + 2), tol=0.0, memory=memory)
    torch.testing.assert_close(res.abs_trace[:, memory + 2:], fresh.abs_trace, rtol=1e-8, atol=1e-13)


def test_restarts_are_per_sample_and_stopped_samples_stay_frozen():
    """Samples of unequal difficulty stop at different iterations, before and after restarts:
    each one alone gets what it gets in the batch; a sample already solved at z0 never moves."""
    f_all, a, b = ill_conditioned_affine(n=50, batch=4, radius=0.9)
    b = b * torch.tensor([0.0, 0.01, 1.0, 30.0], dtype=torch.float64)[:, None]  # sample 0: z = 0 is the answer
    batched = broyden(lambda z: z @ a.T + b, torch.zeros(4, 50, dtype=torch.float64), max_iter=120, tol=1e-9,
                      memory=2)
    assert batched.converged.all()
    assert batched.best_step[0] == 0 and torch.equal(batched.z[0], torch.zeros(50, dtype=torch.float64))
    assert len(set(batched.best_step.tolist())) == 4  # four different stopping points
    assert batched.best_step.max() > 3 * (2 + 2)  # several restarts
    for i in range(4):
        bi = b[i:i + 1]
        alone = broyden(lambda z: z @ a.T + bi, torch.zeros(1, 50, dtype=torch.float64), max_iter=120, tol=1e-9,
                        memory=2)
        assert alone.nstep == batched.best_step[i] + 1
        torch.testing.assert_close(alone.z[0], batched.z[i], rtol=1e-10, atol=1e-12)
        # f's products round differently for 1 and 4 rows: traces agree to ~1e-13 in absolute terms
        torch.testing.assert_close(alone.abs_trace[0], batched.abs_trace[i, :alone.nstep], rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("bad_from", [3, 4, 5])
def test_a_sample_failing_around_a_restart_is_stopped_and_the_others_go_on(bad_from):
    """memory=1: evaluation 3 makes the step that fills the memory, evaluation 4 is the restart."""
    f_ok, _, _ = ill_conditioned_affine(n=30, batch=3, radius=0.8)
    calls = [0]

    def f(z):
        calls[0] += 1
        out = f_ok(z)
        if calls[0] >= bad_from:
            out = out.clone()
            out[1] = math.nan
        return out

    res = broyden(f, torch.zeros(3, 30, dtype=torch.float64), max_iter=150, tol=1e-10, memory=1)
    assert res.nonfinite.tolist() == [False, True, False]
    assert res.converged.tolist() == [True, False, True]
    assert torch.isfinite(res.z).all() and math.isinf(res.abs_residual[1])
    assert res.best_step[1] < bad_from - 1  # a finite iterate from before the failure


def test_memory_policy_is_checked_and_reaches_broyden_through_equilibrium():
    with pytest.raises(ValueError, match=r"memory_policy must be one of \('restart', 'drop_oldest'\), got 'lru'"):
        broyden(torch.tanh, torch.zeros(2, 3), memory=2, memory_policy="lru")
    with pytest.raises(ValueError, match="memory_policy must be one of"):
        equilibrium(torch.tanh, torch.zeros(2, 3), solver_kwargs={"memory_policy": None})
    f, _, _ = ill_conditioned_affine(n=40, batch=2)
    z0 = torch.zeros(2, 40, dtype=torch.float64)
    for policy in ("restart", "drop_oldest"):
        direct = broyden(f, z0, max_iter=40, tol=1e-8, memory=3, memory_policy=policy)
        with torch.no_grad():
            _, info = equilibrium(f, z0, max_iter=40, tol=1e-8,
                                  solver_kwargs={"memory": 3, "memory_policy": policy})
        assert torch.equal(info.forward.abs_trace, direct.abs_trace)


def test_memory_policy_reaches_the_backward_solver():
    """The adjoint solve takes memory_policy too (backward_solver_kwargs)."""
    _, a, b = ill_conditioned_affine(n=40, batch=2, radius=0.9)
    weight = a.clone().requires_grad_()
    f = lambda z: z @ weight.T + b  # noqa: E731
    z0 = torch.zeros(2, 40, dtype=torch.float64)
    grads = {}
    for policy in ("restart", "drop_oldest"):
        z_star, info = equilibrium(f, z0, max_iter=200, tol=1e-10, backward_max_iter=200, backward_tol=1e-10,
                                   backward_solver_kwargs={"memory": 3, "memory_policy": policy})
        (grad,) = torch.autograd.grad(z_star.sum(), weight)
        assert info.backward.converged.all()
        grads[policy] = (grad, info.backward.abs_trace)
    torch.testing.assert_close(grads["restart"][0], grads["drop_oldest"][0], rtol=1e-6, atol=1e-8)
    assert not torch.equal(grads["restart"][1], grads["drop_oldest"][1])  # two different solves


if __name__ == "__main__":
    torch.set_num_threads(1)  # as in the tests (more threads round f's products differently)
    print(f"f(z) = A z + b, n = {N}, batch {BATCH}, spectral radius {RADIUS}, float64, z0 = 0, stop at "
          f"abs residual < {TOL:g}; 300 evaluations allowed")
    print(f"{'m':>4}  {'restart: nfe':>13}  {'best abs':>9}  {'drop_oldest: nfe':>17}  {'best abs':>9}")
    restart, drop = evaluations_needed("restart"), evaluations_needed("drop_oldest")
    for m in MEMORIES:
        (n1, r1), (n2, r2) = restart[m], drop[m]
        print(f"{m:>4}  {str(n1 or '-'):>13}  {r1:9.2e}  {str(n2 or '-'):>17}  {r2:9.2e}")
    full = broyden(ill_conditioned_affine()[0], torch.zeros(BATCH, N, dtype=torch.float64), max_iter=300, tol=TOL)
    print(f"full memory: nfe {full.nstep}, best abs {full.abs_residual.max().item():.2e}")
