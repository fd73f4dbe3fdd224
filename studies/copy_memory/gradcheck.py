"""Gradient quality of the DEQ during training (issue 16 item 4, check 2).

Trains a DEQ (depth block --depth) on copy memory as train.py does; at the --at steps, on the
current weights and one fixed validation batch, compares
  (a) the gradient the model produces (as configured),
  (b) a reference implicit gradient: float64 copy, forward Broyden 300 it. + 100 fixed-point polish,
      adjoint system y = y J + g solved by GMRES (float64, up to 400 iterations) to ~1e-10,
  (c) the gradient of an unrolled weight-tied forward: K applications from z0 = 0, K in --unroll,
  (d) the gradient of the 8-layer weight-tied stack on the same weights (what weight_tied trains with),
reporting cosine and norm ratio to (b), forward/backward residuals, rho(J_f(z*)), and the
relative residual at the 10 recall positions. Writes logs/gradcheck_NAME.jsonl.
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
from train import lr_at, make_model, evaluate  # noqa: E402
from harness.data import CopyMemory  # noqa: E402
from solvers import broyden  # noqa: E402


def flat_grad(model, prefix="strategy."):
    """Flat float64 gradient of the parameters whose name starts with ``prefix`` (the cell:
    the part the equilibrium gradient reaches; the head's gradient does not depend on it)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                      for n, p in model.named_parameters() if n.startswith(prefix)])


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm() + 1e-300))


def gmres(apply_A, b, max_iter=400, tol=1e-11):
    """Solve A y = b (flat float64 vectors) by GMRES without restart; returns y, rel residual."""
    n = b.numel()
    beta = b.norm()
    V = [b / beta]
    H = torch.zeros(max_iter + 1, max_iter, dtype=b.dtype)
    y = torch.zeros_like(b)
    res = 1.0
    for k in range(max_iter):
        w = apply_A(V[k])
        for j in range(k + 1):  # modified Gram-Schmidt (twice for stability)
            h = w @ V[j]
            H[j, k] += h
            w = w - h * V[j]
        for j in range(k + 1):
            h = w @ V[j]
            H[j, k] += h
            w = w - h * V[j]
        H[k + 1, k] = w.norm()
        e1 = torch.zeros(k + 2, dtype=b.dtype)
        e1[0] = beta
        coef = torch.linalg.lstsq(H[:k + 2, :k + 1], e1[:, None]).solution[:, 0]
        res = float((H[:k + 2, :k + 1] @ coef - e1).norm() / beta)
        if res < tol or H[k + 1, k] < 1e-14:
            break
        V.append(w / H[k + 1, k])
    y = sum(c * v for c, v in zip(coef, V[:k + 1]))
    return y, res, k + 1


def reference_grads(model, x, y, unroll_ks):
    """(b) reference implicit gradient, (c) unrolled gradients, (d) weight-tied-8 gradient,
    on a float64 copy of ``model``. Returns dict of flat grads and diagnostics."""
    m = copy.deepcopy(model).double()
    m.eval()
    strat = m.strategy
    cell = strat.cell
    out = {}
    # forward reference fixed point
    emb = m.embedding(x) * m.emb_scale
    with torch.no_grad():
        inj = cell.prepare_injection(emb)
        f = lambda z: cell(z, inj)  # noqa: E731
        res = broyden(f, torch.zeros_like(emb), max_iter=300, tol=1e-12, stop_mode="rel")
        z = res.z
        for _ in range(100):  # polish by fixed-point iteration if it contracts
            zn = f(z)
            if (zn - f(zn)).norm() < (z - zn).norm():
                z = zn
            else:
                break
        fz = f(z)
        out["ref_fwd_rel_res"] = float(((fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)).max())
    # adjoint with GMRES: (I - J^T) y = g, where g = dL/dz at z*
    z_star = z.detach()
    for p in m.parameters():
        p.grad = None
    emb = m.embedding(x) * m.emb_scale
    inj = cell.prepare_injection(emb)
    z_leaf = z_star.clone().requires_grad_()
    z_out = cell(z_leaf, inj)
    zo = z_out.detach().requires_grad_()
    loss = m.head(zo, y).loss
    loss.backward()  # head parameter grads and g = dL/dz_out
    g = zo.grad

    def A(v):
        (vjp,) = torch.autograd.grad(z_out, z_leaf, v.view_as(g), retain_graph=True)
        return v - vjp.flatten()

    yv, gres, git = gmres(A, g.flatten())
    out["ref_adj_rel_res"] = gres
    out["ref_adj_iters"] = git
    z_out.backward(yv.view_as(g))
    out["ref"] = flat_grad(m)
    # (c) unrolled
    for K in unroll_ks:
        for p in m.parameters():
            p.grad = None
        emb = m.embedding(x) * m.emb_scale
        inj = cell.prepare_injection(emb)
        zz = torch.zeros_like(emb)
        for _ in range(K):
            zz = cell(zz, inj)
        m.head(zz, y).loss.backward()
        out[f"unroll{K}"] = flat_grad(m)
    # (d) 8-layer weight-tied forward (same weights): what weight_tied would train on
    for p in m.parameters():
        p.grad = None
    emb = m.embedding(x) * m.emb_scale
    inj = cell.prepare_injection(emb)
    zz = torch.zeros_like(emb)
    for _ in range(8):
        zz = cell(zz, inj)
    m.head(zz, y).loss.backward()
    out["wt8"] = flat_grad(m)
    out["z_ref"] = z_star
    return out


def check(model, x, y, unroll_ks, step):
    model.eval()  # no dropout here anyway (dropout 0); eval only to avoid jac_reg in the loss
    for p in model.parameters():
        p.grad = None
    model.set_step(step)
    strat = model.strategy
    with torch.enable_grad():
        o = model(x, y)
        o.loss.backward()
    bst = o.backward_stats()
    g_model = flat_grad(model)
    # model's forward fixed point for recall-position residual
    emb = model.embedding(x) * model.emb_scale
    with torch.no_grad():
        inj = strat.cell.prepare_injection(emb)
        f = lambda z: strat.cell(z, inj)  # noqa: E731
        o2 = strat.options
        r = broyden(f, torch.zeros_like(emb), max_iter=o2.max_iter, tol=o2.tol, stop_mode=o2.stop_mode)
        fz = f(r.z)
        d = (fz - r.z)[:, -10:].flatten(1).norm(dim=1) / fz[:, -10:].flatten(1).norm(dim=1)
    refs = reference_grads(model, x, y, unroll_ks)
    zerr = float(((r.z.double() - refs["z_ref"]).flatten(1).norm(dim=1) / refs["z_ref"].flatten(1).norm(dim=1)).mean())
    rho = float(model.spectral_radius(x[:8]).mean())
    rec = {"step": step, "loss": float(o.loss.detach()), "fwd_rel_res_mean": o.stats.get("fwd_rel_res_mean"),
           "fwd_nstep": o.stats.get("fwd_nstep"), "recall_pos_rel_res_mean": float(d.mean()),
           "z_err_vs_ref": zerr, "bwd": bst, "rho": rho,
           "ref_fwd_rel_res": refs["ref_fwd_rel_res"], "ref_adj_rel_res": refs["ref_adj_rel_res"],
           "ref_adj_iters": refs["ref_adj_iters"]}
    ref = refs["ref"]
    comps = {"model": g_model}
    comps.update({k: v for k, v in refs.items() if k.startswith("unroll") or k == "wt8"})
    for k, v in comps.items():
        rec[f"cos_{k}_vs_ref"] = round(cos(v, ref), 4)
        rec[f"norm_{k}/ref"] = round(float(v.norm() / ref.norm()), 4)
    rec["cos_model_vs_wt8"] = round(cos(g_model, refs["wt8"]), 4)
    model.train()
    for p in model.parameters():
        p.grad = None
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--depth", default='{"kind":"deq","max_iter":30,"tol":1e-3}')
    ap.add_argument("--blank", type=int, default=50)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--at", default="0,300,600,900,1200")
    ap.add_argument("--unroll", default="8,30,100")
    ap.add_argument("--batch", type=int, default=16, help="check batch size")
    args = ap.parse_args()
    depth = json.loads(args.depth)
    model = make_model(depth, 32, 0)
    train = CopyMemory(args.blank, seed=0)
    valid = CopyMemory(args.blank, seed=10_000)
    xc, yc = valid.batch(args.batch, 0)
    at = [int(s) for s in args.at.split(",")]
    ks = [int(s) for s in args.unroll.split(",")]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    log = open(os.path.join(HERE, "logs", f"gradcheck_{args.name}.jsonl"), "w")
    t0 = time.time()
    for step in range(args.steps + 1):
        if step in at:
            rec = check(model, xc, yc, ks, step)
            rec["acc"] = evaluate(model, valid)[0]
            rec["time_s"] = round(time.time() - t0, 1)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if step == args.steps:
            break
        model.set_step(step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x, y = train.batch(32, step)
        out = model(x, y)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


if __name__ == "__main__":
    main()
