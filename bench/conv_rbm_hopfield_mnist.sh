#!/usr/bin/env bash
# Issue 11 (part 2): the MNIST runs behind the ConvRBM / ConvDBN / Hopfield numbers in bench/RESULTS.md.
# Run by hand on the shared 2-core machine (one run at a time, nice'd, one thread), never in CI.
# Budget: each training run is capped at 10 minutes wall-clock (--trainer.max_time), epochs of 100 batches
# (10,000 images) so that validation, pictures and checkpoints happen within the budget.
source "$(dirname "$0")/env.sh"

# 1. convolutional RBM (24 x 6x6 filters, 2x2 probabilistic max-pooling), CD-1, AIS test NLL (64 runs x 1,000 steps)
nice -n 5 "$PY" -m lightning_gm fit --config conf/conv_rbm.yaml --runs_dir "$RUNS" --run_name mnist10c \
  --trainer.max_time=00:00:10:00 --trainer.limit_train_batches=100 --trainer.limit_val_batches=2 \
  --model.init_args.sample_steps=50 --trainer.enable_progress_bar=false

# 2. convolutional DBN, two layers greedily (epochs of 100 batches, 3 + 3 epochs)
nice -n 5 "$PY" -m lightning_gm fit --config conf/conv_dbn.yaml --runs_dir "$RUNS" --run_name mnist10 \
  --trainer.max_time=00:00:10:00 --trainer.limit_train_batches=100 --trainer.limit_val_batches=2 \
  --trainer.max_epochs=6 --model.init_args.epochs_per_layer='[3, 3]' --model.init_args.sample_steps=50 \
  --trainer.enable_progress_bar=false

# 3. Hopfield network on MNIST digits (storage pass + retrieval test; seconds)
nice -n 5 "$PY" -m lightning_gm fit --config conf/hopfield.yaml --runs_dir "$RUNS" --run_name mnist2 --trainer.enable_progress_bar=false
nice -n 5 "$PY" -m lightning_gm fit --config conf/hopfield.yaml --runs_dir "$RUNS" --run_name mnist3 \
  --model.init_args.num_patterns=3 --trainer.enable_progress_bar=false

# 4. capacity curve of random patterns -> docs/hopfield_capacity.png
nice -n 5 "$PY" bench/hopfield_capacity.py --n 500 --trials 5
