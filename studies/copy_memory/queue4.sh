#!/bin/bash
# After queue3: the default DEQ at blank 100 (the gap on the longer setting).
PY=${PY:-../../.venv/bin/python}  # run from this folder
while kill -0 $(cat logs/queue3.pid) 2>/dev/null; do sleep 5; done
timeout 590 $PY train.py --steps 1200 --lr 3e-3 --eval_every 200 --rho --blank 100 --name deq_default_b100 --depth '{"kind":"deq","max_iter":30,"tol":1e-3}' 2>&1 | grep -v Warn | grep -E "RESULT|step" > logs/deq_default_b100.out
