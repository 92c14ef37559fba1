#!/usr/bin/env bash
# Sigmoid belief net 784-200-200-10 on binarised MNIST (Larochelle & Murray), wake-sleep then reweighted
# wake-sleep (k = 5), a fixed wall-clock budget each (default 10 min), one run at a time, single-threaded
# (the 2-core machine is shared). test_after_fit tests the best checkpoint (val/nll) with the seeded
# importance-weighted estimator on all 10,000 test images; TEST_K samples per example (the configs ship
# 5000, about 2 h per model on one loaded core, so the budget runs use fewer; see bench/sbn_eval.py for
# the k-dependence on a subset). Results: $RUNS/sbn_{ws,rws}/budget*/summary.json
source "$(dirname "$0")/env.sh"
TEST_K=${TEST_K:-200}
for t in ws rws; do
  nice -n 5 "$PY" -m lightning_gm fit --config conf/sbn_$t.yaml --runs_dir="$RUNS" \
    --run_name=budget-${BUDGET//:/} --trainer.max_time=$BUDGET --trainer.enable_progress_bar=false \
    --trainer.accelerator=cpu --model.init_args.evaluation.test_k=$TEST_K
done
