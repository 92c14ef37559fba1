#!/usr/bin/env bash
# Full-MNIST VAE and IWAE (k=50), 1 stochastic layer, for a fixed wall-clock budget each, then the
# IWAE-5000 test on the 10,000 test images (test_after_fit, best checkpoint by val/elbo).
# One run at a time; single-threaded (the 2-core machine is shared). Results: runs/{vae,iwae}/budget*/summary.json
source "$(dirname "$0")/env.sh"
for cfg in vae iwae; do
  "$PY" -m lightning_gm fit --config conf/$cfg.yaml --run_name=budget-${BUDGET//:/} \
    --trainer.max_time=$BUDGET --trainer.enable_progress_bar=false --trainer.accelerator=cpu
done
