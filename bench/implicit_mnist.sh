#!/usr/bin/env bash
# GAN (MLP pair, conf/gan.yaml) and generative moment-matching net (conf/gmmn.yaml) on MNIST grey levels in
# [0, 1] (not binarised), a fixed wall-clock budget each (default 10 min), one run at a time, single-threaded
# (the 2-core machine is shared). The best checkpoint (lowest val/mmd2, on the first 10 validation batches =
# 1,000 images) is then tested with decoder AIS (Wu et al. 2017) on a SUBSET: the first TEST_EXAMPLES test images,
# AIS_CHAINS chains x AIS_STEPS steps (10 leapfrog steps), Gaussian observation model sigma = SIGMA. The configs
# ship 100 examples x 16 chains x 1000 steps; the defaults here are far cheaper (and so a looser lower bound).
# Results: $RUNS/{gan,gmmn}/budget*/ (samples/, metrics.csv) and $RUNS/{gan,gmmn}/test_ais*/summary.json
source "$(dirname "$0")/env.sh"
TEST_EXAMPLES=${TEST_EXAMPLES:-50}
AIS_CHAINS=${AIS_CHAINS:-8}
AIS_STEPS=${AIS_STEPS:-300}
SIGMA=${SIGMA:-0.05}  # 0.2 (GAN) and 0.3 (GMMN) were best on validation after 10 min of training
# one test batch of TEST_EXAMPLES images, as a fraction of the 10,000 test images: the CLI reads an int 1 as 1.0 (= all)
FRACTION=$("$PY" -c "print($TEST_EXAMPLES / 10000)")
LG="nice -n 5 $PY -m lightning_gm"
for m in gan gmmn; do
  # the GAN's epoch is 782 batches of 64: validate (val/mmd2, sample grid) every 250; the GMMN's is 50 of 1000
  every=$([ $m = gan ] && echo "--trainer.val_check_interval=250" || echo "")
  $LG fit --config conf/$m.yaml --runs_dir="$RUNS" --run_name=budget --trainer.max_time=$BUDGET \
    --trainer.limit_val_batches=10 $every --test_after_fit=false \
    --trainer.enable_progress_bar=false --trainer.logger=lightning_gm.loggers.CSVLogger \
    --trainer.logger.init_args.save_dir=runs
  best=$(ls "$RUNS/$m/budget/checkpoints"/best-*.ckpt | head -1)
  $LG test --config "$RUNS/$m/budget/config.yaml" --ckpt_path="$best" --run_name=test_ais \
    --data.init_args.eval_batch_size=$TEST_EXAMPLES --trainer.limit_test_batches=$FRACTION \
    --model.init_args.ais.chains=$AIS_CHAINS --model.init_args.ais.steps=$AIS_STEPS \
    --model.init_args.obs_sigma=$SIGMA --trainer.enable_progress_bar=false
done
