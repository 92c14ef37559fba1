#!/usr/bin/env bash
# Issue 5: a short-budget DBM run on MNIST (784-500-1000, conf/dbm.yaml with 2+2 pretraining epochs and
# 3 joint epochs instead of 100+200 and 300), then the test bound with a longer AIS schedule.
# Runs from the repository root (the script changes there); results go to ${RUNS:-runs}/dbm/budget22/.
# See bench/RESULTS.md (issue 5 section). Data: $LIGHTNING_GM_DATA (or the platform's default data root).
source "$(dirname "$0")/env.sh"
"$PY" -m lightning_gm fit --config conf/dbm.yaml --runs_dir "$RUNS" --model.init_args.epochs_per_layer=[2,2] \
  --trainer.max_epochs=7 --model.init_args.ais.steps=1000 --trainer.enable_progress_bar=false \
  --trainer.logger=lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir=runs \
  --trainer.callbacks.every_n_epochs=1 --run_name=budget22
"$PY" -m lightning_gm test --config "$RUNS/dbm/budget22/config.yaml" \
  --ckpt_path "$RUNS/dbm/budget22/checkpoints/last.ckpt" --model.init_args.ais.steps=14500 --trainer.enable_progress_bar=false
# time per joint step of the full-size model without data loading / validation:
"$PY" bench/dbm_speed.py --hidden 500 1000 --steps 10 --ais_steps 100
