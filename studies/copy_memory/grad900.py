"""Why is the default DEQ's gradient at cosine 0.823 to the float64 reference at step 900?
(issue 23 item 8; the row of logs/gradcheck_deq_default.jsonl at step 900.)

Retrains exactly as gradcheck.py does with its defaults (deq max_iter 30 / tol 1e-3, IFT,
seed 0, blank 50, lr 3e-3 on the 1200-step schedule) up to step 900, re-running
gradcheck.check at --at (the records must equal those of logs/gradcheck_deq_default.jsonl),
then, on the step-900 weights:

  sweep   the model's own gradient (the project's DEQ, float32) with other forward and
          backward tolerances, on the same check batch (validation batch 0 of 16);
  decomp  the same IFT formula with the fixed point z and the adjoint solve swapped one at a
          time: z = the model's z* (Broyden 30, tol 1e-3) or the float64 reference z_ref;
          precision float32 or float64; adjoint = the project's _ImplicitGradient (Broyden
          35 / 1e-6) or GMRES to 1e-11;
  interp  float64 exact (GMRES) gradient at z_ref + t (z_model - z_ref), t = 0.01 .. 2;
  sample  per-sample gradients at z_ref and at z_model: per-sample error against the
          cancellation in the batch sum;
  cond    at z_ref: rho(J) (power iteration, 100 it.), ||J||_2, ||(I - J)^-1||_2 (inverse
          power iteration on (A^T A)^-1 with GMRES solves), ||y|| / ||g|| for the adjoint;
  batches the model's gradient versus the reference on three other validation batches and
          on the training batch of step 900.

Writes logs/LOG.jsonl (--log, default grad900; one record per measurement); the same records go to stdout.
usage: python grad900.py [--save /tmp/deq_default_s900.pt]            (train to 900, then analyse)
       python grad900.py --load /tmp/deq_default_s900.pt --batch_index 3 --log NAME --no_batches
"""
import argparse
import copy
import json
import os
import sys
import time

import torch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..")))
from gradcheck import check, cos, flat_grad, gmres  # noqa: E402
from train import lr_at, make_model, evaluate  # noqa: E402
from harness.data import CopyMemory  # noqa: E402
from solvers import broyden, get_solver, jacobian_spectral_radius  # noqa: E402
from solvers._equilibrium import EquilibriumInfo, _AdjointSpec, _ImplicitGradient  # noqa: E402

DEFAULT = {"kind": "deq", "max_iter": 30, "tol": 1e-3}
LOG = None


def emit(rec):
    LOG.write(json.dumps(rec) + "\n")
    LOG.flush()
    print(json.dumps(rec), flush=True)


def cell_params(m):
    return [p for n, p in m.named_parameters() if n.startswith("strategy.")]


def fixed_point_ref(m64, x):
    """float64 fixed point: Broyden 300 it. to 1e-12, then fixed-point polish (as gradcheck)."""
    cell = m64.strategy.cell
    with torch.no_grad():
        inj = cell.prepare_injection(m64.embedding(x) * m64.emb_scale)
        f = lambda z: cell(z, inj)  # noqa: E731
        z = broyden(f, torch.zeros_like(inj), max_iter=300, tol=1e-12, stop_mode="rel").z
        for _ in range(100):
            zn = f(z)
            if (zn - f(zn)).norm() < (z - zn).norm():
                z = zn
            else:
                break
    return z


def model_fixed_point(m, x):
    """The model's own z* (the solve its forward makes, deterministic)."""
    o = m.strategy.options
    cell = m.strategy.cell
    with torch.no_grad():
        inj = cell.prepare_injection(m.embedding(x) * m.emb_scale)
        r = broyden(lambda z: cell(z, inj), torch.zeros_like(inj), max_iter=o.max_iter, tol=o.tol,
                    stop_mode=o.stop_mode)
    return r.z


def rel_res(m, x, z):
    cell = m.strategy.cell
    with torch.no_grad():
        inj = cell.prepare_injection(m.embedding(x) * m.emb_scale)
        fz = cell(z, inj)
    return float(((fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)).mean())


def ift_at(m, x, y, z, adjoint="gmres", bmax=35, btol=1e-6, per_sample=False):
    """IFT gradient of the cell parameters at the given z (not re-solved), in m's precision.
    adjoint "gmres": (I - J^T) y = g by GMRES to 1e-11; "project": the project's
    _ImplicitGradient with Broyden (bmax, btol, rel), i.e. exactly the code the DEQ runs."""
    for p in m.parameters():
        p.grad = None
    cell = m.strategy.cell
    inj = cell.prepare_injection(m.embedding(x) * m.emb_scale)
    z_leaf = z.detach().clone().to(inj.dtype).requires_grad_()
    z_out = cell(z_leaf, inj)
    rec = {}
    if adjoint == "project":
        info = EquilibriumInfo(forward=None)
        spec = _AdjointSpec("broyden", get_solver("broyden"), dict(max_iter=bmax, tol=btol, stop_mode="rel"), info)
        out = _ImplicitGradient.apply(z_out, z_leaf, spec)
        m.head(out, y).loss.backward()
        rec["bwd_rel_res_mean"] = float(info.backward.rel_residual.mean())
        rec["bwd_nstep"] = info.backward.nstep
        return flat_grad(m), rec, None
    zo = z_out.detach().requires_grad_()
    loss = m.head(zo, y).loss
    (g,) = torch.autograd.grad(loss, zo)

    def A(v):
        (vjp,) = torch.autograd.grad(z_out, z_leaf, v.view_as(g), retain_graph=True)
        return v - vjp.flatten()

    yv, res, it = gmres(A, g.flatten(), tol=1e-11 if g.dtype == torch.float64 else 1e-6)
    rec.update(adj_rel_res=res, adj_iters=it, y_over_g=float(yv.norm() / g.norm()))
    yv = yv.view_as(g)
    samples = None
    if per_sample:
        params = cell_params(m)
        samples = []
        for b in range(g.shape[0]):
            mask = torch.zeros_like(yv)
            mask[b] = yv[b]
            gs = torch.autograd.grad(z_out, params, mask, retain_graph=True, allow_unused=True)
            samples.append(torch.cat([(t if t is not None else torch.zeros_like(p)).flatten().double()
                                      for t, p in zip(gs, params)]))
    z_out.backward(yv)
    return flat_grad(m), rec, (samples, g.detach(), yv.detach())


def compare(G, ref):
    return {"cos": round(cos(G, ref), 5), "ratio": round(float(G.norm() / ref.norm()), 5),
            "rel_err": round(float((G - ref).norm() / ref.norm()), 5)}


def model_grad(state, depth, x, y):
    """The project's DEQ (float32, eval mode, grad on: IFT) with ``depth``; its gradient and stats."""
    m = make_model(depth, 32, 0)
    m.load_state_dict(state)
    m.eval()
    m.set_step(900)
    for p in m.parameters():
        p.grad = None
    o = m(x, y)
    o.loss.backward()
    G = flat_grad(m)
    z = model_fixed_point(m, x)
    return G, z, {"fwd_rel_res_mean": o.stats["fwd_rel_res_mean"], "fwd_nstep": o.stats["fwd_nstep"],
                  "fwd_converged_frac": o.stats["fwd_converged_frac"], **o.backward_stats()}


def jacobian_norms(m64, x, z, n_power=30, n_inv=12):
    """At z (float64): ||J||_2 by power iteration on J^T J, and ||(I - J)^-1||_2 by power iteration
    on (A^T A)^-1, A = I - J, each solve by GMRES; J v by the double-VJP trick. Batch-wide
    (the operator is block-diagonal over samples, so this is the worst sample)."""
    cell = m64.strategy.cell
    inj = cell.prepare_injection(m64.embedding(x) * m64.emb_scale).detach()
    z_leaf = z.detach().clone().requires_grad_()
    z_out = cell(z_leaf, inj)
    u = torch.zeros_like(z_out, requires_grad=True)
    (jtu,) = torch.autograd.grad(z_out, z_leaf, u, create_graph=True)  # J^T u, linear in u

    def JT(v):
        (r,) = torch.autograd.grad(z_out, z_leaf, v.view_as(z), retain_graph=True)
        return r.flatten()

    def Jv(v):
        (r,) = torch.autograd.grad(jtu, u, v.view_as(z), retain_graph=True)
        return r.flatten()

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(z.numel(), dtype=z.dtype, generator=gen)
    v /= v.norm()
    # check the JVP against a finite difference once
    with torch.no_grad():
        eps = 1e-6
        fd = ((cell(z + eps * v.view_as(z), inj) - cell(z - eps * v.view_as(z), inj)) / (2 * eps)).flatten()
    jvp_check = float((Jv(v) - fd).norm() / fd.norm())
    s = 0.0
    w = v.clone()
    for _ in range(n_power):
        w2 = JT(Jv(w))
        s = float(w2.norm())
        w = w2 / s
    normJ = s ** 0.5
    w = v.clone()
    lam = 0.0
    iters = []
    for _ in range(n_inv):
        a, r1, k1 = gmres(lambda q: q - JT(q), w, max_iter=400, tol=1e-10)  # A^T a = w
        b, r2, k2 = gmres(lambda q: q - Jv(q), a, max_iter=400, tol=1e-10)  # A b = a
        lam = float(b.norm())
        w = b / lam
        iters.append((k1, k2, r1, r2))
    return {"normJ_2": normJ, "inv_I_minus_J_norm_2": lam ** 0.5, "jvp_fd_rel_err": jvp_check,
            "gmres_iters_last": iters[-1][:2], "gmres_res_last": iters[-1][2:]}


def analyse(model, state, xc, yc, valid, train, batches=True):
    m64 = copy.deepcopy(model).double()
    m64.eval()
    m32 = copy.deepcopy(model)
    m32.eval()
    z_ref = fixed_point_ref(m64, xc)
    G_ref, r_ref, (S_ref, g_ref, y_ref) = ift_at(m64, xc, yc, z_ref, per_sample=True)
    emit({"what": "reference", "fwd_rel_res": rel_res(m64, xc, z_ref), **r_ref,
          "G_ref_norm": float(G_ref.norm())})

    # sweep: the model's own gradient with other tolerances
    variants = [("fwd 30/1e-3, bwd 35/1e-6 (default)", {}),
                ("fwd 60/1e-4", {"max_iter": 60, "tol": 1e-4}),
                ("fwd 100/1e-5", {"max_iter": 100, "tol": 1e-5}),
                ("fwd 200/1e-6", {"max_iter": 200, "tol": 1e-6}),
                ("fwd 30/1e-3, bwd 100/1e-8", {"backward_max_iter": 100, "backward_tol": 1e-8}),
                ("fwd 30/1e-3, bwd 35/1e-4", {"backward_tol": 1e-4}),
                ("fwd 30/1e-3, bwd 10/1e-6", {"backward_max_iter": 10}),
                ("fwd 100/1e-5, bwd 100/1e-8", {"max_iter": 100, "tol": 1e-5, "backward_max_iter": 100,
                                                "backward_tol": 1e-8})]
    z_model = None
    for name, change in variants:
        G, z, st = model_grad(state, {**DEFAULT, **change}, xc, yc)
        if not change:
            z_model = z
        zerr = float(((z.double() - z_ref).flatten(1).norm(dim=1) / z_ref.flatten(1).norm(dim=1)).mean())
        emit({"what": "sweep", "variant": name, **st, "z_err_vs_ref": zerr, **compare(G, G_ref)})

    # decomp: which ingredient carries the error
    zm64 = z_model.double()
    for zname, z in (("z_model", z_model), ("z_ref", z_ref)):
        for prec, m in (("float32", m32), ("float64", m64)):
            for adj in ("project", "gmres"):
                zz = z.to(torch.float64 if prec == "float64" else torch.float32)
                G, rec, _ = ift_at(m, xc, yc, zz, adjoint=adj)
                emit({"what": "decomp", "z": zname, "precision": prec, "adjoint": adj, **rec, **compare(G, G_ref)})

    # interp: smoothness of the exact gradient in z between z_ref and z_model
    dz = zm64 - z_ref
    for t in (0.01, 0.1, 0.25, 0.5, 1.0, 2.0):
        zt = z_ref + t * dz
        G, rec, _ = ift_at(m64, xc, yc, zt)
        emit({"what": "interp", "t": t, "fwd_rel_res": rel_res(m64, xc, zt),
              "z_err_vs_ref": float((t * dz).flatten(1).norm(dim=1).div(z_ref.flatten(1).norm(dim=1)).mean()),
              **rec, **compare(G, G_ref)})

    # sample: per-sample errors against the batch-sum cancellation
    G_m, r_m, (S_m, g_m, y_m) = ift_at(m64, xc, yc, zm64, per_sample=True)
    per = []
    for b in range(len(S_ref)):
        per.append({"b": b, "norm_ref": float(S_ref[b].norm()),
                    "rel_err": float((S_m[b] - S_ref[b]).norm() / S_ref[b].norm()),
                    "cos": cos(S_m[b], S_ref[b]),
                    "z_err": float((zm64[b] - z_ref[b]).norm() / z_ref[b].norm()),
                    "fwd_rel_res": float(((m64.strategy.cell(zm64[b:b + 1], m64.strategy.cell.prepare_injection(
                        m64.embedding(xc[b:b + 1]) * m64.emb_scale)) - zm64[b:b + 1]).norm()
                        / zm64[b:b + 1].norm()).detach())})
    sum_norms = sum(float(s.norm()) for s in S_ref)
    err_sum = float(sum((S_m[b] - S_ref[b]).norm() for b in range(len(S_ref))))
    emit({"what": "sample", "batch_sum_norm": float(G_ref.norm()), "sum_of_sample_norms": sum_norms,
          "cancellation_ratio": float(G_ref.norm()) / sum_norms,
          "err_norm": float((G_m - G_ref).norm()), "sum_of_sample_err_norms": err_sum,
          "g_rel_change": float((g_m - g_ref).norm() / g_ref.norm()),
          "y_rel_change": float((y_m - y_ref).norm() / y_ref.norm()),
          "per_sample": per})
    # per parameter tensor: where the error sits (model's own gradient)
    G_def, _, _ = model_grad(state, DEFAULT, xc, yc)
    names = [n for n, p in model.named_parameters() if n.startswith("strategy.")]
    sizes = [p.numel() for n, p in model.named_parameters() if n.startswith("strategy.")]
    parts, i = [], 0
    for n, s in zip(names, sizes):
        a, r = G_def[i:i + s], G_ref[i:i + s]
        parts.append({"param": n, "ref_norm": round(float(r.norm()), 6), "err_norm": round(float((a - r).norm()), 6),
                      "cos": round(cos(a, r), 4)})
        i += s
    emit({"what": "per_param", "parts": parts})

    # cond: Jacobian at z_ref
    rho = jacobian_spectral_radius(lambda z: m64.strategy.cell(z, m64.strategy.cell.prepare_injection(
        m64.embedding(xc) * m64.emb_scale)), z_ref, n_iter=100)
    t0 = time.time()
    jn = jacobian_norms(m64, xc, z_ref)
    emit({"what": "cond", "rho_per_sample_max": float(rho.max()), "rho_per_sample_mean": float(rho.mean()),
          "one_over_1_minus_rho_max": 1 / (1 - float(rho.max())), **jn,
          "z_err_over_fwd_res": float(((zm64 - z_ref).norm() / (m64.strategy.cell(zm64, m64.strategy.cell.prepare_injection(
              m64.embedding(xc) * m64.emb_scale)) - zm64).norm()).detach()),
          "time_s": round(time.time() - t0, 1)})
    # the sample with the largest gradient error: its Jacobian at z_ref and at the model's z*
    b = max(per, key=lambda p: p["rel_err"])["b"]
    xb, yb = xc[b:b + 1], yc[b:b + 1]
    for zname, z in (("z_ref", z_ref[b:b + 1]), ("z_model", zm64[b:b + 1])):
        fb = lambda q: m64.strategy.cell(q, m64.strategy.cell.prepare_injection(  # noqa: E731
            m64.embedding(xb) * m64.emb_scale))
        rho_b = float(jacobian_spectral_radius(fb, z, n_iter=100)[0])
        _, rb, _ = ift_at(m64, xb, yb, z)
        emit({"what": "cond_worst_sample", "b": b, "at": zname, "rho": rho_b, **jacobian_norms(m64, xb, z),
              "y_over_g": rb["y_over_g"], "fwd_rel_res": rel_res(m64, xb, z)})

    # batches: is step 900's check batch typical?
    if not batches:
        return
    batches = [("valid batch %d of 16" % i, valid.batch(16, i)) for i in (1, 2, 3)]
    batches.append(("train batch of step 900 (32)", train.batch(32, 900)))
    for name, (x, y) in batches:
        zr = fixed_point_ref(m64, x)
        Gr, rr, _ = ift_at(m64, x, y, zr)
        for vname, change in (("default", {}), ("fwd 100/1e-5", {"max_iter": 100, "tol": 1e-5})):
            G, z, st = model_grad(state, {**DEFAULT, **change}, x, y)
            emit({"what": "batch", "batch": name, "variant": vname, **st, **compare(G, Gr),
                  "z_err_vs_ref": float(((z.double() - zr).flatten(1).norm(dim=1)
                                         / zr.flatten(1).norm(dim=1)).mean()), "ref_adj_iters": rr["adj_iters"]})


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--at", default="0,300,600,900")
    ap.add_argument("--save", default=None)
    ap.add_argument("--load", default=None, help="skip training: load step-900 weights from here")
    ap.add_argument("--batch_index", type=int, default=0, help="check batch: validation batch i of 16")
    ap.add_argument("--log", default="grad900", help="writes logs/LOG.jsonl")
    ap.add_argument("--no_batches", action="store_true", help="skip the other-batches section")
    args = ap.parse_args()
    LOG = open(os.path.join(HERE, "logs", args.log + ".jsonl"), "w")
    model = make_model(DEFAULT, 32, 0)
    train = CopyMemory(50, seed=0)
    valid = CopyMemory(50, seed=10_000)
    xc, yc = valid.batch(16, args.batch_index)
    at = [int(s) for s in args.at.split(",")]
    t0 = time.time()
    if args.load:
        model.load_state_dict(torch.load(args.load))
    else:
        old = {json.loads(line)["step"]: json.loads(line)
               for line in open(os.path.join(HERE, "logs", "gradcheck_deq_default.jsonl"))}
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for step in range(901):
            if step in at:
                rec = check(model, xc, yc, [8, 30, 100], step)
                rec["acc"] = evaluate(model, valid)[0]
                keys = [k for k in rec if isinstance(rec[k], float) and k in old[step]]
                diff = {k: rec[k] - old[step][k] for k in keys}
                emit({"what": "repro_check", **rec, "time_s": round(time.time() - t0, 1),
                      "max_abs_diff_vs_logged": max(abs(v) for v in diff.values()),
                      "fields_differing": {k: v for k, v in diff.items() if v != 0 and k != "time_s"}})
            if step == 900:
                break
            model.set_step(step)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, 1200, 3e-3, 50)
            x, y = train.batch(32, step)
            out = model(x, y)
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        if args.save:
            torch.save(model.state_dict(), args.save)
    state = copy.deepcopy(model.state_dict())
    emit({"what": "setup", "load": args.load, "batch_index": args.batch_index})
    analyse(model, state, xc, yc, valid, train, batches=not args.no_batches)
    emit({"what": "done", "time_s": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
