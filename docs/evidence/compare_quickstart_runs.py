"""Compare two quickstart sweeps run from the same job file: every metrics line and the summary
figures that are not timings, per run present in both with the same step count.

    python docs/evidence/compare_quickstart_runs.py results/quickstart /elsewhere/quickstart
"""
import glob
import json
import os
import sys

KEYS = ["train_loss", "val_loss", "val_ppl", "test_loss", "test_ppl", "rank_param_sha", "fwd_nstep_mean",
        "fwd_rel_res_mean", "bwd_res_mean", "activation_bytes", "spectral_radius"]


def runs(root):
    out = {}
    for d in glob.glob(os.path.join(root, "runs", "*")):
        if os.path.exists(os.path.join(d, "summary.json")):
            summary = json.load(open(os.path.join(d, "summary.json")))
            lines = [{k: v for k, v in json.loads(line).items() if "time" not in k and k not in ("elapsed_s", "tokens_per_s")}
                     for line in open(os.path.join(d, "metrics.jsonl"))]
            out[summary["name"]] = (summary, lines)
    return out


a, b = runs(sys.argv[1]), runs(sys.argv[2])
for name in sorted(set(a) & set(b)):
    (sa, la), (sb, lb) = a[name], b[name]
    if sa["steps"] != sb["steps"]:
        print(f"{name}: different step counts ({sa['steps']} and {sb['steps']}), not compared")
        continue
    differ = [k for k in KEYS if k in sa and sa[k] != sb.get(k)]
    print(f"{name}: world_size {sa['world_size']}, {len(la)} metrics lines equal: {la == lb}; "
          f"summary figures that differ: {differ or 'none'}; parameters' SHA-256 per rank: {sa['rank_param_sha']}")
