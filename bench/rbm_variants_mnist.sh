#!/usr/bin/env bash
# Issue 11 (part 1): the subspace RBM next to a plain RBM with the same number of parameters, the same data
# (the statically binarised MNIST of Larochelle & Murray), the same optimiser/PCD settings and the same
# wall-clock budget; then the spike-and-slab RBM on dequantised real-valued MNIST. One run at a time,
# single-threaded (the 2-core machine is shared). Test log Z: AIS, 100 runs x $AIS_STEPS intermediate
# distributions (the literature uses 14,500), on the best checkpoint.
# Results: $RUNS/i11/<run>/summary.json
source "$(dirname "$0")/env.sh"
AIS_STEPS=${AIS_STEPS:-5000}
common=(--runs_dir "$RUNS" --experiment i11 --trainer.max_time=$BUDGET --model.init_args.ais.steps=$AIS_STEPS)
# subspace RBM: 100 gates x 5 subspace units = 393,384 parameters
nice -n 5 "$PY" -m lightning_gm fit --config conf/subspace_rbm.yaml "${common[@]}" --run_name subspace_m100k5
# plain RBM, 500 hidden units = 393,284 parameters, same data and settings
nice -n 5 "$PY" -m lightning_gm fit --config conf/rbm.yaml "${common[@]}" --run_name rbm_h500 \
  --data=lightning_gm.data.BinarizedMNISTDataModule --data.init_args.batch_size=100 --data.init_args.eval_batch_size=1000
# spike-and-slab RBM on dequantised MNIST
nice -n 5 "$PY" -m lightning_gm fit --config conf/ssrbm.yaml "${common[@]}" --run_name ssrbm_n256
