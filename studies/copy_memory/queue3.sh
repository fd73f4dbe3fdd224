#!/bin/bash
# After queue2: gradient quality of the phantom recipe vs exact IFT; the recipe at blank 100.
PY=${PY:-../../.venv/bin/python}  # run from this folder
while kill -0 $(cat logs/queue2.pid) 2>/dev/null; do sleep 5; done
P='{"kind":"deq","max_iter":30,"tol":1e-3,"grad":"phantom","grad_steps":5,"tau":1.0}'
timeout 590 $PY gradcheck.py --name deq_phantom5 --depth "$P" --at 300,600,900 --unroll 30 2>&1 | grep step > logs/gradcheck_deq_phantom5.out
run() { n=$1; shift; timeout 590 $PY train.py --steps 1200 --lr 3e-3 --eval_every 200 --rho --name "$n" "$@" 2>&1 | grep -v Warn | grep -E "RESULT|step" > logs/$n.out; }
run wt8_b100 --blank 100 --depth '{"kind":"weight_tied","layers":8}'
run deq_phantom5_b100 --blank 100 --depth "$P"
