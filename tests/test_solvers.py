"""Tests of the fixed-point solvers (solvers.broyden / anderson / fixed_point_iter),
the registry, bad input, non-finite handling, batch independence and the benchmark CLI."""
import math
import re

import pytest
import torch

import solvers
from solver_problems import skew_and_contraction
from solvers import SOLVERS, SolverResult, anderson, broyden, fixed_point_iter, get_solver, register_solver

SOLVER_NAMES = ["broyden", "anderson", "fixed_point_iter"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def contractive_problem(batch=4, dim=20, norm=0.8, dtype=torch.float64, device="cpu", seed=0):
    """f(z) = tanh(z W^T + x) with ||W||_2 = norm < 1: a contraction, one x per sample."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    w = (norm * w / torch.linalg.matrix_norm(w, 2)).to(device, dtype)
    x = torch.randn(batch, dim, generator=gen, dtype=torch.float64).to(device, dtype)
    return (lambda z: torch.tanh(z @ w.T + x)), w, x


def residuals(f, z):
    fz = f(z)
    abs_res = torch.linalg.vector_norm((fz - z).flatten(1), dim=1)
    return abs_res, abs_res / (torch.linalg.vector_norm(fz.flatten(1), dim=1) + 1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("name", SOLVER_NAMES)
@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_reaches_tol_on_contractive_problem(name, dtype, tol, stop_mode, device):
    f, _, _ = contractive_problem(dtype=dtype, device=device)
    z0 = torch.zeros(4, 20, dtype=dtype, device=device)
    res = get_solver(name)(f, z0, max_iter=200, tol=tol, stop_mode=stop_mode)
    assert isinstance(res, SolverResult)
    assert res.converged.all() and not res.nonfinite.any()
    assert res.nstep < 200
    abs_res, rel_res = residuals(f, res.z)
    measured = rel_res if stop_mode == "rel" else abs_res
    assert (measured < tol).all()
    torch.testing.assert_close(res.abs_residual, abs_res, rtol=1e-3, atol=10 * torch.finfo(dtype).eps)
    torch.testing.assert_close(res.rel_residual, rel_res, rtol=1e-3, atol=10 * torch.finfo(dtype).eps)
    assert res.abs_trace.shape == res.rel_trace.shape == (4, res.nstep)
    picked = res.abs_trace.gather(1, res.best_step[:, None])[:, 0]
    torch.testing.assert_close(picked, res.abs_residual)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_keeps_the_shape_of_z0(name):
    f_flat, _, _ = contractive_problem(batch=3, dim=24)
    f = lambda z: f_flat(z.reshape(3, 24)).reshape(3, 4, 6)  # noqa: E731
    res = get_solver(name)(f, torch.zeros(3, 4, 6, dtype=torch.float64), max_iter=100, tol=1e-8)
    assert res.z.shape == (3, 4, 6) and res.converged.all()


def test_broyden_converges_where_fixed_point_iteration_diverges():
    torch.manual_seed(0)
    dim = 12
    a = torch.randn(dim, dim, dtype=torch.float64)
    a = 1.5 * a / torch.linalg.eigvals(a).abs().max()  # spectral radius 1.5, I - A invertible
    b = torch.randn(3, dim, dtype=torch.float64)
    f = lambda z: z @ a.T + b  # noqa: E731
    z0 = torch.zeros(3, dim, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    diverged = fixed_point_iter(f, z0, max_iter=100, tol=1e-8)
    assert not diverged.converged.any()
    assert (diverged.abs_trace[:, -1] > 1e3 * diverged.abs_trace[:, 0]).all()  # it blows up
    res = broyden(f, z0, max_iter=100, tol=1e-8)
    assert res.converged.all()
    torch.testing.assert_close(res.z, exact, rtol=1e-6, atol=1e-6)


def reference_broyden_trace(w, x, z0, n_iter, memory, policy="drop_oldest"):
    """Dense, one-sample-at-a-time good Broyden in product form with the last `memory`
    factors (H = E_{n-1} ... E_{n-m}, E_j = I + beta_j s_{j+1} s_j^T) on f(z) = tanh(W z + x):
    residual norms. policy "restart" (Kelley's): once a step has been made with memory + 1
    factors, the next step is -F and the factors are cleared."""
    return dense_broyden_trace([lambda v, i=i: v - torch.tanh(w @ v + x[i]) for i in range(z0.shape[0])],
                               z0, n_iter, memory, policy)


def dense_broyden_trace(residuals, z0, n_iter, memory=None, policy="drop_oldest"):
    """reference_broyden_trace's iteration with residuals[i](z) = F(z) = z - f(z) of sample i."""
    traces = []
    for i, g in enumerate(residuals):
        z = z0[i].clone()
        F = g(z)
        trace = [F.norm()]
        factors = []  # (beta_j, s_j, s_{j+1})
        step = -F
        for _ in range(n_iter - 1):
            z = z + step
            F = g(z)
            trace.append(F.norm())
            if policy == "restart" and memory and len(factors) == memory + 1:
                factors, step = [], -F
                continue
            v = F.clone()
            for beta_j, left, right in factors:  # oldest first
                v = v + beta_j * right * (left @ v)
            direction = -v
            beta_n = 1.0 / (step @ step)
            denom = 1 - beta_n * (step @ direction)
            new_step = direction / denom
            factors.append((beta_n, step, new_step))
            factors = factors[-memory:] if memory and policy == "drop_oldest" else factors
            step = new_step
        traces.append(torch.stack(trace))
    return torch.stack(traces)


@pytest.mark.parametrize("policy", ["drop_oldest", "restart"])
@pytest.mark.parametrize("memory", [None, 1, 3, 6])
def test_broyden_matches_a_dense_reference(memory, policy):
    f, w, x = contractive_problem(batch=3, dim=10, norm=0.95, seed=3)
    z0 = torch.zeros(3, 10, dtype=torch.float64)
    res = broyden(f, z0, max_iter=14, tol=0.0, memory=memory, memory_policy=policy)  # tol 0: run all 14 steps
    expected = reference_broyden_trace(w, x, z0, 14, memory, policy)
    torch.testing.assert_close(res.abs_trace, expected, rtol=1e-7, atol=1e-12)


def test_broyden_skips_an_update_whose_denominator_vanishes_per_sample():
    # Sample 0: F(z) = J z - c with J nearly skew (f(z) = (I - J) z + c), so s^T J s is about 1e-10
    # s^T s and every update's denominator 1 - beta_n s_n^T direction is about 1e-10, under
    # sqrt(eps): each update must be skipped (E_n = I, the step is the direction itself), which on
    # this problem is fixed-point iteration, whose residual grows by sqrt(2) per step (dividing by
    # the denominator instead would blow the step up by 1e10). Sample 1, a contraction beside it,
    # updates as usual.
    a, c, z0 = skew_and_contraction()
    res = broyden(lambda z: torch.einsum("bij,bj->bi", a, z) + c, z0, max_iter=6, tol=0.0)
    growth = res.abs_trace[0, 1:] / res.abs_trace[0, :-1]
    torch.testing.assert_close(growth, torch.full_like(growth, math.sqrt(2.0)), rtol=1e-8, atol=0.0)
    expected = dense_broyden_trace([lambda v: v - (a[1] @ v + c[1])], z0[1:], 5)[0]  # no update skipped
    assert expected[-1] < 1e-2 * expected[0]  # it converges, so the updates were used
    torch.testing.assert_close(res.abs_trace[1, :5], expected, rtol=1e-10, atol=1e-14)


def test_broyden_iterates_match_torchdeq():
    broyden_solver = pytest.importorskip("torchdeq.solver.broyden").broyden_solver
    f, _, _ = contractive_problem(batch=4, dim=30, norm=0.9)
    z0 = torch.zeros(4, 30, dtype=torch.float64)
    res = broyden(f, z0, max_iter=12, tol=0.0)
    _, _, info = broyden_solver(f, z0, max_iter=11, tol=0.0)  # its trace[0] is a placeholder
    torch.testing.assert_close(res.abs_trace[:, 1:], info["abs_trace"][:, 1:12], rtol=1e-8, atol=1e-12)


def reference_anderson_trace(f, z0, n_iter, m, lam, tau):
    """Type-II Anderson, one sample at a time, written from the formula (Walker and Ni 2011):
    alpha = argmin ||sum alpha_i g_i|| with sum alpha = 1, through (G G^T + reg I) w = 1 with
    reg = lam x mean(diag(G G^T)); x+ = sum alpha_i (x_i + tau g_i). Dense float64."""
    traces = []
    for i in range(z0.shape[0]):
        def fi(v, i=i):
            return f(v.expand(z0.shape[0], -1))[i]
        xs, gs, trace = [z0[i].clone()], [], []
        gs.append(fi(xs[0]) - xs[0])
        trace.append(gs[0].norm())
        for _ in range(n_iter - 1):
            X, G = torch.stack(xs[-m:]), torch.stack(gs[-m:])  # (n, D)
            gram = G @ G.T
            reg = lam * torch.diagonal(gram).mean() + torch.finfo(torch.float64).tiny
            w = torch.linalg.solve(gram + reg * torch.eye(len(G), dtype=torch.float64),
                                   torch.ones(len(G), dtype=torch.float64))
            alpha = w / w.sum()
            x_new = alpha @ (X + tau * G)
            xs.append(x_new)
            gs.append(fi(x_new) - x_new)
            trace.append(gs[-1].norm())
        traces.append(torch.stack(trace))
    return torch.stack(traces)


@pytest.mark.parametrize("m,lam,tau", [(6, 1e-4, 1.0), (3, 1e-2, 0.7), (10, 0.0, 1.0)])
def test_anderson_matches_a_dense_reference(m, lam, tau):
    """The host float64 mixing math gives the formula's iterates (history longer than m, too)."""
    f, _, _ = contractive_problem(batch=3, dim=12, norm=0.95, seed=4)
    z0 = torch.zeros(3, 12, dtype=torch.float64)
    res = anderson(f, z0, max_iter=16, tol=0.0, m=m, lam=lam, tau=tau)
    expected = reference_anderson_trace(f, z0, 16, m, lam, tau)
    torch.testing.assert_close(res.abs_trace, expected, rtol=1e-6, atol=1e-12)


def test_anderson_without_regulariser_survives_a_singular_gram_matrix():
    """lam=0 with more history than dimensions: the Gram matrix is singular once the history
    outgrows the space; the sample keeps iterating (least squares) instead of failing."""
    f, _, _ = contractive_problem(batch=2, dim=3, norm=0.8, seed=5)
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    res = anderson(f, z0, max_iter=25, tol=0.0, m=8, lam=0.0)
    assert not res.nonfinite.any() and torch.isfinite(res.abs_trace).all()
    assert (res.abs_residual < 1e-12).all()


@pytest.mark.parametrize("policy", ["drop_oldest", "restart"])
@pytest.mark.parametrize("memory", [2, 4])
def test_limited_memory_broyden_still_converges(memory, policy):
    f, _, _ = contractive_problem(batch=4, dim=40, norm=0.95, seed=1)
    z0 = torch.zeros(4, 40, dtype=torch.float64)
    full = broyden(f, z0, max_iter=100, tol=1e-10)
    limited = broyden(f, z0, max_iter=100, tol=1e-10, memory=memory, memory_policy=policy)
    assert limited.converged.all()
    assert limited.nstep > 2 * memory  # the memory filled (ring buffer wrapped, or restarted)
    torch.testing.assert_close(limited.z, full.z, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_a_sample_alone_gets_the_same_answer_as_in_a_batch(name):
    f, w, x = contractive_problem(batch=5, dim=16, norm=0.9, seed=2)
    x = x * torch.tensor([0.1, 1.0, 3.0, 0.5, 2.0], dtype=torch.float64)[:, None]  # unequal difficulty
    batched = get_solver(name)(lambda z: torch.tanh(z @ w.T + x), torch.zeros(5, 16, dtype=torch.float64),
                               max_iter=60, tol=1e-9)
    for i in range(5):
        xi = x[i:i + 1]
        alone = get_solver(name)(lambda z: torch.tanh(z @ w.T + xi), torch.zeros(1, 16, dtype=torch.float64),
                                 max_iter=60, tol=1e-9)
        torch.testing.assert_close(alone.z[0], batched.z[i], rtol=1e-10, atol=1e-12)
        assert alone.nstep == batched.best_step[i] + 1  # it stopped where the batch froze it
        torch.testing.assert_close(alone.abs_trace[0], batched.abs_trace[i, :alone.nstep], rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_a_failed_sample_keeps_its_best_iterate_while_the_others_improve(name):
    # Sample 1 has no fixed point: f(z) = z + 1 + z^2, so |f(z) - z| = |1 + z^2| is lowest at z0 = 0
    # and its best iterate stays z0, while its iterates move on. At the 6th evaluation it turns
    # NaN, so it is rolled back to its last finite iterate (not z0) and frozen, and the other
    # samples keep improving: the tracker must not take the rolled-back rows for its best.
    f_ok, _, _ = contractive_problem(batch=3, dim=8, norm=0.9)
    calls = [0]

    def f(z):
        calls[0] += 1
        out = f_ok(z).clone()
        out[1] = z[1] + 1.0 + z[1] ** 2 if calls[0] < 6 else math.nan
        return out

    res = get_solver(name)(f, torch.zeros(3, 8, dtype=torch.float64), max_iter=80, tol=1e-10)
    assert res.nonfinite.tolist() == [False, True, False]
    assert res.converged[[0, 2]].all() and res.nstep > 10  # the others went on well after the failure
    assert res.best_step[1] == 0
    assert torch.equal(res.z[1], torch.zeros(8, dtype=torch.float64))


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_converged_samples_are_frozen(name):
    f, w, _ = contractive_problem(batch=3, dim=8)
    x = torch.randn(3, 8, dtype=torch.float64)
    x[0] = 0.0  # z = 0 is already the fixed point of sample 0
    res = get_solver(name)(lambda z: torch.tanh(z @ w.T + x), torch.zeros(3, 8, dtype=torch.float64),
                           max_iter=50, tol=1e-8)
    assert res.converged.all() and res.best_step[0] == 0
    assert torch.equal(res.z[0], torch.zeros(8, dtype=torch.float64))
    assert (res.abs_trace[0] == 0).all()  # repeated, never re-measured as something else


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_non_finite_values_stop_the_sample_and_say_so(name):
    f_ok, _, _ = contractive_problem(batch=3, dim=8)
    calls = [0]

    def f(z):
        calls[0] += 1
        out = f_ok(z)
        if calls[0] >= 4:  # sample 1 turns NaN from the 4th evaluation on
            out = out.clone()
            out[1] = math.nan
        return out

    res = get_solver(name)(f, torch.zeros(3, 8, dtype=torch.float64), max_iter=80, tol=1e-10)
    assert res.nonfinite.tolist() == [False, True, False]
    assert res.converged.tolist() == [True, False, True]
    assert math.isinf(res.abs_residual[1]) and math.isinf(res.rel_residual[1])
    assert torch.isfinite(res.z).all()  # the last finite (lowest-residual) iterate
    assert torch.isfinite(res.abs_residual[[0, 2]]).all()


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_never_reports_convergence_on_a_non_finite_answer(name):
    f = lambda z: z * math.inf  # noqa: E731
    res = get_solver(name)(f, torch.ones(2, 3), max_iter=10, tol=1e30)
    assert not res.converged.any() and res.nonfinite.all()
    assert res.nstep == 1  # every sample stopped at once
    assert torch.isinf(res.abs_residual).all()


def test_overflow_in_a_diverging_iteration_is_caught():
    a = 2.0 * torch.eye(4)
    res = fixed_point_iter(lambda z: z @ a.T + 1.0, torch.zeros(2, 4), max_iter=1000, tol=1e-6)
    assert res.nonfinite.all() and not res.converged.any()
    assert res.nstep < 1000  # stopped when every sample had overflowed
    assert torch.isfinite(res.z).all()


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_half_precision_problems_are_solved_in_float32(name):
    f32, w, x = contractive_problem(dtype=torch.float32)
    f16 = lambda z: torch.tanh(z @ w.bfloat16().T + x.bfloat16())  # noqa: E731
    res = get_solver(name)(f16, torch.zeros(4, 20, dtype=torch.bfloat16), max_iter=60, tol=2e-2, stop_mode="rel")
    assert res.z.dtype == torch.bfloat16 and res.converged.all()
    reference = get_solver(name)(f32, torch.zeros(4, 20), max_iter=60, tol=1e-6).z
    assert (res.z.float() - reference).abs().max() < 0.1


def test_max_iter_one_measures_z0_only():
    f, _, _ = contractive_problem()
    z0 = torch.zeros(4, 20, dtype=torch.float64)
    for name in SOLVER_NAMES:
        res = get_solver(name)(f, z0, max_iter=1, tol=1e-8)
        assert res.nstep == 1 and torch.equal(res.z, z0) and not res.converged.any()


def test_registry_lookups_and_registration():
    assert set(SOLVER_NAMES) <= set(SOLVERS)
    assert get_solver("broyden") is broyden and get_solver("anderson") is anderson
    with pytest.raises(ValueError, match="unknown name 'newton'.*anderson, broyden, fixed_point_iter"):
        get_solver("newton")
    with pytest.raises(ValueError, match="taken"):
        register_solver("broyden", fixed_point_iter)
    with pytest.raises(ValueError, match="callable"):
        register_solver("damped", 3)
    with pytest.raises(ValueError, match="non-empty string"):
        register_solver("", fixed_point_iter)

    def damped(f, z0, **kw):
        return fixed_point_iter(f, z0, tau=0.5, **kw)

    try:
        register_solver("damped", damped)
        assert get_solver("damped") is damped
        f, _, _ = contractive_problem()
        z, info = solvers.equilibrium(f, torch.zeros(4, 20, dtype=torch.float64), solver="damped", tol=1e-6,
                                      max_iter=200)
        assert info.forward.converged.all()
        register_solver("damped", fixed_point_iter, overwrite=True)
        assert get_solver("damped") is fixed_point_iter
    finally:
        SOLVERS.pop("damped", None)


@pytest.mark.parametrize("solver,kwargs,match", [
    (broyden, {"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
    (broyden, {"tol": -1.0}, "tol must be a finite number >= 0, got -1.0"),
    (broyden, {"stop_mode": "max"}, r"stop_mode must be one of \('abs', 'rel'\), got 'max'"),
    (broyden, {"memory": 0}, "memory must be an integer >= 1, got 0"),
    (broyden, {"memory_policy": "oldest"}, r"memory_policy must be one of \('restart', 'drop_oldest'\), got 'oldest'"),
    (anderson, {"m": 0}, "m must be an integer >= 1, got 0"),
    (anderson, {"lam": -1.0}, "lam must be a number >= 0, got -1.0"),
    (anderson, {"tau": 1.5}, r"tau must be a number in \(0, 1\], got 1.5"),
    (fixed_point_iter, {"tau": 0.0}, r"tau must be a number in \(0, 1\], got 0.0"),
])
def test_bad_options_raise_a_clear_error(solver, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solver(torch.tanh, torch.zeros(2, 3), **kwargs)


def test_bad_problems_raise_a_clear_error():
    with pytest.raises(ValueError, match="floating dtype"):
        broyden(torch.tanh, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        broyden(torch.tanh, torch.zeros(()))
    with pytest.raises(ValueError, match=r"shaped like z0 \(2, 3\), got \(2, 4\)"):
        anderson(lambda z: torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="callable"):
        fixed_point_iter("tanh", torch.zeros(2, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    f_cpu, w, x = contractive_problem()
    f_gpu = lambda z: torch.tanh(z @ w.cuda().T + x.cuda())  # noqa: E731
    for name in SOLVER_NAMES:
        cpu = get_solver(name)(f_cpu, torch.zeros(4, 20, dtype=torch.float64), max_iter=100, tol=1e-10)
        gpu = get_solver(name)(f_gpu, torch.zeros(4, 20, dtype=torch.float64, device="cuda"), max_iter=100,
                               tol=1e-10)
        torch.testing.assert_close(gpu.z.cpu(), cpu.z, rtol=1e-8, atol=1e-9)


def test_bench_prints_its_table(capsys):
    from solvers.bench import main

    assert main(["--batch", "2", "--seq", "8", "--dim", "16", "--heads", "2", "--repeats", "5"]) == 0
    out = capsys.readouterr().out
    # 5 rounds: 2 pairs (one round with each order first), the fifth round left out of the pairs
    floor_line = re.search(r"\(2\) CPU floor: .* time ([0-9.]+) <= 1.05 \(median over 2 pairs of rounds, one in "
                           r"each order; middle half ([0-9.]+)-([0-9.]+); rounds with broyden first ([0-9.]+), "
                           r"with the floor first ([0-9.]+);", out)
    assert floor_line, out
    median, q1, q3, first, second = map(float, floor_line.groups())
    assert q1 <= median <= q3
    assert min(first, second) / 2 < median < 2 * max(first, second)  # a pair's ratio lies near its rounds'
    assert "Broyden's small math: compiled (" in out or "Broyden's small math: numpy (" in out
    for row in ("broyden ", "broyden(memory=8)", "anderson", "fixed_point_iter", "broyden passes only", "overhead",
                "spectral radius"):
        assert row in out
    assert "/ floor" in out
    for target in ("(1) limited memory", "(2) CPU floor"):  # both measured on a CPU
        assert f"[PASS] {target}" in out or f"[FAIL] {target}" in out, target
    assert "[SKIP] (3) GPU launch bound: needs CUDA" in out or "(3) GPU launch bound" in out
    assert "(4)" in out


def test_bench_rejects_bad_options(capsys):
    from solvers.bench import main

    with pytest.raises(SystemExit) as exc:
        main(["--repeats", "0"])
    assert exc.value.code == 2
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err


def test_bench_rejects_a_bad_DEQBENCH_NATIVE(capsys, monkeypatch):
    from solvers.bench import main

    monkeypatch.setenv("DEQBENCH_NATIVE", "on")
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "DEQBENCH_NATIVE must be one of ('auto', '0', '1'), got 'on'" in capsys.readouterr().err


def test_bench_floor_row_takes_fixed_point_steps():
    """The bench's 'passes only' row makes Broyden's memory passes with s = -F: its iterates
    are those of fixed-point iteration, so its timing runs on sane values."""
    from solvers.bench import broyden_passes_only

    f, _, _ = contractive_problem(batch=3, dim=10, norm=0.9)
    z0 = torch.zeros(3, 10, dtype=torch.float64)
    expected = z0
    for _ in range(5):
        expected = f(expected)
    torch.testing.assert_close(broyden_passes_only(f, z0, nfe=6), expected)


def test_chunked_reduction_matches_the_plain_one():
    from solvers._broyden import pair_products, reduction_chunks

    assert reduction_chunks(131072, torch.device("cpu")) == 1
    assert reduction_chunks(131072, torch.device("cuda")) == 16  # chunks of 8192
    assert reduction_chunks(8192, torch.device("cuda")) == 1
    assert reduction_chunks(3 * 8192, torch.device("cuda")) == 2
    buf = torch.randn(6, 3, 64, dtype=torch.float64)  # rows first, as in the solver
    pair, stored = buf[1:5:3], buf[:5]  # a strided pair of rows, like [F, s_n]
    expected = torch.einsum("pbd,rbd->bpr", pair, stored)
    for chunks in (1, 2, 8):
        torch.testing.assert_close(pair_products(pair, stored, chunks), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_broyden_residuals_stay_exact_when_tf32_is_allowed():
    """Users often allow TF32 for speed. Broyden's residual norm comes from its own batched
    product, which must still run in full float32 (on an H200: relative error 8e-8 with the
    guard, 5e-5 without it), while f keeps the user's setting."""
    torch.manual_seed(0)
    w = (torch.randn(64, 64) * 0.9 / 64 ** 0.5).cuda()
    x = torch.randn(8, 64).cuda()
    f = lambda z: torch.tanh(z @ w.T + x)  # noqa: E731
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        res = broyden(f, torch.zeros(8, 64, device="cuda"), max_iter=30, tol=0.0)  # f's TF32 noise sets the floor
        recomputed = torch.linalg.vector_norm(f(res.z) - res.z, dim=1)
        assert torch.get_float32_matmul_precision() == "high"  # the user's setting is back
    finally:
        torch.set_float32_matmul_precision(saved)
    assert (res.abs_residual < 1e-2 * res.abs_trace[:, 0]).all()  # it did solve
    torch.testing.assert_close(res.abs_residual, recomputed, rtol=1e-5, atol=0.0)
