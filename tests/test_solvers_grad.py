"""Tests of solvers.equilibrium (IFT / phantom / unrolled gradients, the info dict,
graph hygiene) and of the Jacobian diagnostics."""
import math
import weakref

import pytest
import torch

from solvers import equilibrium, jacobian_frobenius_loss, jacobian_spectral_radius

TIGHT = dict(max_iter=100, tol=1e-13, backward_max_iter=100, backward_tol=1e-13)


def make_params(dim=5, batch=3, norm=0.6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    w = (norm * w / torch.linalg.matrix_norm(w, 2)).requires_grad_()
    x = torch.randn(batch, dim, generator=gen, dtype=torch.float64).requires_grad_()
    return w, x


def cell(w, x):
    return lambda z: torch.tanh(z @ w.T + x)


@pytest.mark.parametrize("solver", ["broyden", "anderson"])
def test_ift_gradient_passes_gradcheck(solver):
    w, x = make_params()
    z0 = torch.zeros(3, 5, dtype=torch.float64)

    def fixed_point(x, w):
        return equilibrium(cell(w, x), z0, solver=solver, backward_solver=solver, **TIGHT)[0]

    assert torch.autograd.gradcheck(fixed_point, (x, w), eps=1e-6, atol=1e-6, rtol=1e-4)


def unrolled_grads(w, x, loss_fn, steps=300):
    z = torch.zeros(x.shape, dtype=x.dtype)
    for _ in range(steps):
        z = cell(w, x)(z)
    return torch.autograd.grad(loss_fn(z), (x, w))


def test_ift_gradient_matches_a_long_unrolled_iteration():
    w, x = make_params(dim=16, batch=4, norm=0.9)
    target = torch.randn(4, 16, dtype=torch.float64)
    loss_fn = lambda z: ((z - target) ** 2).sum()  # noqa: E731
    z, info = equilibrium(cell(w, x), torch.zeros(4, 16, dtype=torch.float64), **TIGHT)
    grads = torch.autograd.grad(loss_fn(z), (x, w))
    for got, want in zip(grads, unrolled_grads(w, x, loss_fn)):
        assert ((got - want).norm() / want.norm()).item() < 1e-4
    assert info.backward.converged.all()


@pytest.mark.parametrize("grad,kwargs", [("phantom", dict(grad_steps=5, tau=0.6)), ("unroll", dict(grad_steps=5))])
def test_cheap_gradients_point_the_same_way_as_ift(grad, kwargs):
    w, x = make_params(dim=16, batch=4, norm=0.3)
    z0 = torch.zeros(4, 16, dtype=torch.float64)
    loss_fn = lambda z: (z ** 3).sum()  # noqa: E731
    ift = torch.autograd.grad(loss_fn(equilibrium(cell(w, x), z0, **TIGHT)[0]), (x, w))
    z, info = equilibrium(cell(w, x), z0, grad=grad, max_iter=100, tol=1e-12, **kwargs)
    cheap = torch.autograd.grad(loss_fn(z), (x, w))
    for a, b in zip(cheap, ift):
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cosine > 0.99
        assert not torch.allclose(a, b, rtol=1e-10, atol=0)  # an estimate, not the same computation
    assert info.backward.nstep == 5 and torch.isnan(info.backward.abs_residual).all()


def test_info_has_forward_fields_and_backward_fills_the_same_info():
    w, x = make_params()
    z, info = equilibrium(cell(w, x), torch.zeros(3, 5, dtype=torch.float64), max_iter=50, tol=1e-8)
    assert isinstance(info.forward.nstep, int) and info.forward.nstep > 1
    fwd = info.forward
    assert fwd.abs_residual.shape == fwd.rel_residual.shape == fwd.converged.shape == (3,)
    assert fwd.solver == "broyden"
    assert info.forward.converged.all() and (info.forward.abs_residual < 1e-8).all()
    assert info.forward.abs_trace.shape == (3, info.forward.nstep)
    assert info.forward.time_s > 0
    assert info.backward is None
    same = info
    z.sum().backward()
    assert info is same
    assert isinstance(info.backward.nstep, int) and info.backward.nstep > 1
    assert info.backward.abs_residual.shape == info.backward.rel_residual.shape == (3,)
    assert (info.backward.abs_residual < 1e-6).all() and info.backward.time_s > 0


def test_two_equilibria_on_one_graph_and_a_second_backward():
    w1, x = make_params(dim=6, batch=2, norm=0.5, seed=1)
    w2, _ = make_params(dim=6, batch=2, norm=0.5, seed=2)
    z0 = torch.zeros(2, 6, dtype=torch.float64, requires_grad=True)  # z0 is never differentiated
    z1, info1 = equilibrium(cell(w1, x), z0, **TIGHT)
    z2, info2 = equilibrium(cell(w2, z1), z0, **TIGHT)  # the second layer's input is the first's output
    loss = (z2 ** 2).sum()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in (w1, w2, x)]
    assert z0.grad is None and info1.backward.nstep > 1 and info2.backward.nstep > 1

    def reference(w1, w2, x):
        a = torch.zeros(2, 6, dtype=torch.float64)
        for _ in range(200):
            a = cell(w1, x)(a)
        b = torch.zeros(2, 6, dtype=torch.float64)
        for _ in range(200):
            b = cell(w2, a)(b)
        return (b ** 2).sum()

    expected = torch.autograd.grad(reference(w1, w2, x), (w1, w2, x))
    for got, want in zip(first, expected):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    loss.backward()  # the retained graph gives the same gradient again, accumulated once more
    for p, g in zip((w1, w2, x), first):
        torch.testing.assert_close(p.grad, 2 * g)


def test_no_graph_or_hook_outlives_its_call():
    w, x = make_params()
    outputs = []

    def f(z):
        out = torch.tanh(z @ w.T + x)
        if torch.is_grad_enabled():
            outputs.append(weakref.ref(out))
        return out

    single = None
    for i in range(3):
        z, _ = equilibrium(f, torch.zeros(3, 5, dtype=torch.float64), **TIGHT)
        z.sum().backward()
        if single is None:
            single = w.grad.clone()
        del z
        assert outputs[-1]() is None  # freed without gc: no reference cycle keeps the graph
        torch.testing.assert_close(w.grad, (i + 1) * single)  # no stale hook fires twice


def test_without_grad_mode_or_grad_needs():
    w, x = make_params()
    with torch.no_grad():
        z, info = equilibrium(cell(w, x), torch.zeros(3, 5, dtype=torch.float64), tol=1e-10, max_iter=60)
    assert not z.requires_grad and info.forward.nstep > 0 and info.backward is None
    plain = cell(w.detach(), x.detach())  # nothing upstream needs a gradient: backward still works
    z, info = equilibrium(plain, torch.zeros(3, 5, dtype=torch.float64), tol=1e-10, max_iter=60)
    torch.testing.assert_close(z, plain(z), rtol=0, atol=1e-9)
    z.sum().backward()
    assert info.backward.nstep > 0 and w.grad is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(grad="implicit"), r"grad must be one of \('ift', 'phantom', 'unroll'\), got 'implicit'"),
    (dict(solver="newton"), "unknown name 'newton'"),
    (dict(backward_solver="newton"), "unknown name 'newton'"),
    (dict(grad_steps=0), "grad_steps must be an integer >= 1, got 0"),
    (dict(tau=0.0), r"tau must be a number in \(0, 1\], got 0.0"),
    (dict(backward_tol=-1.0), r"equilibrium \(backward\): tol must be a finite number >= 0, got -1.0"),
    (dict(solver_kwargs=[1]), "solver_kwargs must be a dict or None, got list"),
])
def test_equilibrium_rejects_bad_options(kwargs, match):
    w, x = make_params()
    with pytest.raises(ValueError, match=match):
        equilibrium(cell(w, x), torch.zeros(3, 5, dtype=torch.float64), **kwargs)


def test_spectral_radius_of_a_symmetric_linear_map():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    eigenvalues = torch.linspace(-0.85, 0.6, 12, dtype=torch.float64)  # rho = 0.85, from a negative eigenvalue
    a = q @ torch.diag(eigenvalues) @ q.T
    rho = jacobian_spectral_radius(lambda z: z @ a.T, torch.randn(3, 12, dtype=torch.float64), n_iter=200)
    assert rho.shape == (3,)
    torch.testing.assert_close(rho, torch.full((3,), 0.85, dtype=torch.float64), rtol=1e-3, atol=0)


def test_spectral_radius_with_a_complex_dominant_pair():
    torch.manual_seed(1)
    angle = 0.7
    rotation = 0.9 * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                                  dtype=torch.float64)
    block = torch.block_diag(rotation, torch.diag(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)))
    basis = torch.randn(5, 5, dtype=torch.float64) + 3 * torch.eye(5, dtype=torch.float64)
    a = basis @ block @ torch.linalg.inv(basis)  # not normal: eigenvalues 0.9 e^{+-0.7i}, 0.3, -0.2, 0.1
    rho = jacobian_spectral_radius(lambda z: z @ a.T, torch.randn(2, 5, dtype=torch.float64), n_iter=400)
    torch.testing.assert_close(rho, torch.full((2,), 0.9, dtype=torch.float64), rtol=0.03, atol=0)


def test_hutchinson_estimate_of_the_frobenius_norm():
    torch.manual_seed(0)
    dim = 10
    w = torch.randn(dim, dim, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, dim, dtype=torch.float64, requires_grad=True)
    f_z = z @ w.T
    estimate = jacobian_frobenius_loss(f_z, z, n_samples=500)
    expected = (w.detach() ** 2).sum() / dim
    assert abs(estimate.item() - expected.item()) / expected.item() < 0.05
    estimate.backward()  # differentiable: a regulariser; E[grad] = 2 W / dim
    assert w.grad is not None and torch.isfinite(w.grad).all()
    cosine = torch.nn.functional.cosine_similarity(w.grad.flatten(), (2 * w.detach() / dim).flatten(), dim=0)
    assert cosine > 0.9


def test_jacobian_helpers_reject_bad_input():
    z = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="computed from z with grad"):
        jacobian_frobenius_loss(torch.tanh(z).detach(), z)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1, got 0"):
        jacobian_frobenius_loss(torch.tanh(z), z, n_samples=0)
    with pytest.raises(ValueError, match="n_iter must be an integer >= 2, got 1"):
        jacobian_spectral_radius(torch.tanh, z, n_iter=1)
