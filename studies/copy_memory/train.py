"""Small copy-memory training run for one depth block (study of issue 16 item 4).

usage: python train.py --name NAME --depth '{"kind": "deq", ...}' [--blank 50 --steps 600 ...]
Appends one JSON line to results.jsonl and writes a per-run log to logs/NAME.jsonl.
Plain Adam, linear warm-up then cosine to 0.1 lr (as the shipped job), grad clip 1.0.
Recall = accuracy of argmax on the last n_digits positions (harness/run/workload.py evaluate).
"""
import argparse
import json
import math
import os
import sys
import time

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from harness.data import CopyMemory  # noqa: E402
from models import build_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def make_model(depth, d_model=32, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    cfg = {"task": "copy", "vocab_size": 10, "cell": "transformer", "d_model": d_model, "n_head": 4,
           "d_inner": 4 * d_model, "max_rel_distance": 512, "dropout": dropout, "depth": depth}
    return build_model(cfg)


def lr_at(step, steps, lr, warmup):
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def evaluate(model, data, n_batches=4, batch=32):
    model.eval()
    correct = total = 0
    loss = 0.0
    stats = {}
    for i in range(n_batches):
        x, y = data.batch(batch, i)
        out = model(x, y)
        pred = out.logits[:, -10:].argmax(-1)
        correct += int((pred == y[:, -10:]).sum())
        total += pred.numel()
        loss += float(out.loss)
        for k, v in out.stats.items():
            stats[k] = stats.get(k, 0.0) + v / n_batches
    model.train()
    return correct / total, loss / n_batches, stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--depth", required=True)
    ap.add_argument("--blank", type=int, default=50)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--d_model", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval_every", type=int, default=100)
    ap.add_argument("--rho", action="store_true", help="log spectral radius at each eval")
    ap.add_argument("--save", default=None, help="save state dict at the end to this path")
    args = ap.parse_args()
    depth = json.loads(args.depth)
    model = make_model(depth, args.d_model, args.seed)
    train = CopyMemory(args.blank, seed=args.seed)
    valid = CopyMemory(args.blank, seed=10_000 + args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    os.makedirs(os.path.join(HERE, "logs"), exist_ok=True)
    log = open(os.path.join(HERE, "logs", args.name + ".jsonl"), "w")
    t0 = time.time()
    best = 0.0
    evals = []
    agg = {}
    for step in range(args.steps):
        model.set_step(step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x, y = train.batch(args.batch, step)
        out = model(x, y)
        opt.zero_grad()
        out.loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        st = {**out.stats, **out.backward_stats(), "loss": float(out.loss), "gnorm": gn}
        for k, v in st.items():
            agg.setdefault(k, []).append(v)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc, vloss, est = evaluate(model, valid)
            rec = {"step": step + 1, "time_s": round(time.time() - t0, 1), "acc": acc, "vloss": vloss,
                   "train": {k: sum(v) / len(v) for k, v in agg.items()},
                   "eval": {k: v for k, v in est.items() if k.startswith("fwd") or k == "nfe"}}
            if args.rho and model.has_equilibrium and not getattr(model.strategy, "in_pretraining", False):
                xb, _ = valid.batch(8, 0)
                rec["rho"] = float(model.spectral_radius(xb).mean())
            agg = {}
            best = max(best, acc)
            evals.append(acc)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()
                              if k != "train"}),
                  {k: round(v, 4) for k, v in rec["train"].items()
                   if k in ("loss", "gnorm", "fwd_rel_res_mean", "bwd_res_mean", "nfe", "fwd_converged_frac",
                            "jac_loss")}, flush=True)
    wall = time.time() - t0
    if args.save:
        torch.save(model.state_dict(), args.save)
    result = {"name": args.name, "depth": depth, "blank": args.blank, "steps": args.steps, "lr": args.lr,
              "d_model": args.d_model, "seed": args.seed, "final_acc": evals[-1], "best_acc": best,
              "wall_s": round(wall, 1), "cmd": " ".join(sys.argv)}
    with open(os.path.join(HERE, "results.jsonl"), "a") as f:
        f.write(json.dumps(result) + "\n")
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
