#!/bin/bash
# Issue 23 item 8, after queue5.sh: lr 1e-2 was the best of the three for the IFT DEQ (the highest tried),
# so weight_tied gets lr 1e-2 too (it had only 1e-3 and 3e-3), and the IFT DEQ at 1e-2 a second seed.
# Run from this folder, one process at a time; wall and CPU seconds of each go to logs/queue5.time.
PY=${PY:-../../.venv/bin/python}
run() { n=$1; shift; /usr/bin/time -f "$n wall_s %e user_s %U" -a -o logs/queue5.time timeout 590 $PY train.py --blank 50 --steps 1200 --eval_every 200 --rho --name "$n" "$@" 2>&1 | grep -v Warn | grep -E "RESULT|step" > logs/$n.out; }
run wt8_b50_lr1e-2 --lr 1e-2 --depth '{"kind":"weight_tied","layers":8}'
run deq_default_b50_lr1e-2_s1 --lr 1e-2 --seed 1 --depth '{"kind":"deq","max_iter":30,"tol":1e-3}'
