#!/usr/bin/env bash
# Full-MNIST VAE and IWAE (k=50), 1 stochastic layer, for a fixed wall-clock budget each, then the
# IWAE-5000 test on the 10,000 test images (test_after_fit, best checkpoint by val/elbo).
# One run at a time; single-threaded (the 2-core machine is shared). Results: runs/{vae,iwae}/budget*/summary.json
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-00:00:10:00}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=disabled LIGHTNING_GM_DATA=${LIGHTNING_GM_DATA:-/work/shared/data}
for cfg in vae iwae; do
  /work/venv/bin/python -m lightning_gm fit --config conf/$cfg.yaml --run_name=budget-${BUDGET//:/} \
    --trainer.max_time=$BUDGET --trainer.enable_progress_bar=false --trainer.accelerator=cpu
done
