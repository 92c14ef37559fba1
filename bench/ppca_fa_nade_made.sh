#!/usr/bin/env bash
# Issue 10's reference points, one run at a time, single-threaded (the 2-core machine is shared):
#   PPCA and factor analysis on continuous (dequantised) MNIST: closed form / EM, exact test NLL and bits/dim;
#   NADE and MADE on the binarised MNIST of Larochelle & Murray for a fixed wall-clock budget each, exact test
#   NLL on the best checkpoint (MADE: mixture over its 32 masks). Published: NADE 88.86, MADE 88.04 nats.
# Results: $RUNS/{ppca,fa,nade,made}/<run>/summary.json
BUDGET=${BUDGET:-00:00:15:00}
source "$(dirname "$0")/env.sh"
for cfg in ppca fa; do
  "$PY" -m lightning_gm fit --config conf/$cfg.yaml --runs_dir "$RUNS" --run_name=latent50 \
    --trainer.enable_progress_bar=false
done
for cfg in nade made; do
  "$PY" -m lightning_gm fit --config conf/$cfg.yaml --runs_dir "$RUNS" --run_name=budget-${BUDGET//:/} \
    --trainer.max_time=$BUDGET --trainer.val_check_interval=250 --trainer.enable_progress_bar=false
done
