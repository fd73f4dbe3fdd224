#!/bin/bash
# Recipe validation: phantom (saved, then solver-robustness eval), and a second seed for the gap.
PY=${PY:-../../.venv/bin/python}  # run from this folder
run() { n=$1; shift; timeout 590 $PY train.py --blank 50 --steps 1200 --lr 3e-3 --eval_every 200 --rho --name "$n" "$@" 2>&1 | grep -v Warn | grep -E "RESULT|step" > logs/$n.out; }
P='{"kind":"deq","max_iter":30,"tol":1e-3,"grad":"phantom","grad_steps":5,"tau":1.0}'
run deq_phantom5_s0_save --depth "$P" --save ckpt/phantom5_s0.pt
$PY solver_robust.py ckpt/phantom5_s0.pt "$P" 50 2>&1 | grep variant > logs/robust_phantom5_s0.out
run deq_phantom5_s1 --depth "$P" --seed 1
run wt8_s1 --depth '{"kind":"weight_tied","layers":8}' --seed 1
run deq_default_s1 --depth '{"kind":"deq","max_iter":30,"tol":1e-3}' --seed 1
