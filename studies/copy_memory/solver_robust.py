"""Is a trained DEQ's recall a property of its equilibrium, or of the particular solve?

usage: python solver_robust.py STATE_DICT.pt '{"kind":"deq",...}' [blank]
Loads the weights into DEQs with different forward solves and evaluates recall (eval mode,
no grad: the DEQ output is the solver's z*, no phantom steps), plus the forward residual and
rho(J_f(z*)).
"""
import json
import os
import sys

import torch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..")))
from train import make_model, evaluate  # noqa: E402
from harness.data import CopyMemory  # noqa: E402

state = torch.load(sys.argv[1])
base = json.loads(sys.argv[2])
blank = int(sys.argv[3]) if len(sys.argv) > 3 else 50
valid = CopyMemory(blank, seed=10_000)
variants = {
    "as_trained": {},
    "broyden_100it_tol1e-6": {"max_iter": 100, "tol": 1e-6},
    "anderson_100it_tol1e-6": {"solver": "anderson", "max_iter": 100, "tol": 1e-6},
    "fixed_point_200it_tol1e-6": {"solver": "fixed_point_iter", "max_iter": 200, "tol": 1e-6},
    "broyden_10it": {"max_iter": 10},
}
for name, change in variants.items():
    depth = {k: v for k, v in base.items() if k not in ("pretrain_steps",)}
    depth.update(change)
    m = make_model(depth)
    m.load_state_dict(state)
    acc, loss, st = evaluate(m, valid)
    x, _ = valid.batch(8, 0)
    rho = float(m.spectral_radius(x).mean())
    print(json.dumps({"variant": name, "acc": acc, "loss": round(loss, 4),
                      "fwd_rel_res_mean": st.get("fwd_rel_res_mean"), "fwd_nstep": st.get("fwd_nstep"),
                      "converged": st.get("fwd_converged_frac"), "rho": round(rho, 3)}), flush=True)
for layers in (8, 30):
    m = make_model({"kind": "weight_tied", "layers": layers})
    m.load_state_dict(state)
    acc, loss, _ = evaluate(m, valid)
    print(json.dumps({"variant": f"weight_tied_{layers}_same_weights", "acc": acc, "loss": round(loss, 4)}))
