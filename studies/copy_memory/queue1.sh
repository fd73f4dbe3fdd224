#!/bin/bash
# Remedy sweep 1 on blank 50, d_model 32, 1200 steps, lr 3e-3 (run one at a time).
PY=${PY:-../../.venv/bin/python}  # run from this folder
run() { timeout 590 $PY train.py --blank 50 --steps 1200 --lr 3e-3 --eval_every 200 --rho --name "$1" --depth "$2" 2>&1 | grep -v Warn | grep -E "RESULT|step" > logs/$1.out; }
run deq_phantom5 '{"kind":"deq","max_iter":30,"tol":1e-3,"grad":"phantom","grad_steps":5,"tau":1.0}'
run deq_pre400x8 '{"kind":"deq","max_iter":30,"tol":1e-3,"pretrain_steps":400,"pretrain_depth":8}'
run deq_jac1 '{"kind":"deq","max_iter":30,"tol":1e-3,"jac_reg":1.0,"jac_reg_freq":1}'
