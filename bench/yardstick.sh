#!/usr/bin/env bash
# Issue 12's yardstick: train each model for a fixed wall-clock budget, test the best checkpoint (test NLL with
# its estimator) with the SampleQuality callback (Fréchet distance in the platform's LeNet features,
# k-NN precision/recall of 10,000 samples against the 10,000 MNIST test images), then print one markdown table
# from the runs' summary.json files. One run at a time, single-threaded (the 2-core machine is shared).
#
#   bench/yardstick.sh                         # all models, 10 minutes of training each
#   BUDGET=00:00:05:00 MODELS="vae gan" bench/yardstick.sh
#   ARGS_vae="--model.init_args.evaluation.test_k=500" MODELS=vae bench/yardstick.sh   # per-model extra overrides
#   TABLE_ONLY=1 bench/yardstick.sh            # only print the table of existing runs
#
# Needs the feature network (once, ~10 min): lightning_gm fit --config conf/classifier_mnist.yaml
# Environment: BUDGET (dd:hh:mm:ss, default 00:00:10:00), MODELS, RUNS (default runs),
# NUM_SAMPLES (default 10000), EXTRA (overrides for every model), ARGS_<config> (overrides for one config).
# A missing config (a model not merged yet) is skipped with a message; a failing run does not stop the others.
source "$(dirname "$0")/env.sh"
set +e  # a failing run does not stop the others
MODELS=${MODELS:-"vae sbn_rws gan gmmn vae_pixelcnn"}
NUM_SAMPLES=${NUM_SAMPLES:-10000}
EXTRA=${EXTRA:-}
RUN_NAME=budget-${BUDGET//:/}

if [[ -z "${TABLE_ONLY:-}" ]]; then
  for cfg in $MODELS; do
    conf=conf/$cfg.yaml
    if [[ ! -f $conf ]]; then
      echo "yardstick: skipping $cfg: $conf does not exist" >&2
      continue
    fi
    add=()
    grep -q "lightning_gm.callbacks.SampleQuality" "$conf" || add=(--trainer.callbacks+=lightning_gm.callbacks.SampleQuality)
    per_model_var="ARGS_${cfg}"
    echo "yardstick: $cfg (budget $BUDGET) -> $RUNS/$cfg/$RUN_NAME" >&2
    # shellcheck disable=SC2086  # EXTRA and ARGS_<cfg> are word lists on purpose
    nice -n 5 "$PY" -m lightning_gm fit --config "$conf" --runs_dir "$RUNS" --run_name "$RUN_NAME" \
      --trainer.max_time="$BUDGET" --trainer.enable_progress_bar=false --trainer.accelerator=cpu \
      "${add[@]}" --trainer.callbacks.num_samples="$NUM_SAMPLES" $EXTRA ${!per_model_var:-} \
      || echo "yardstick: $cfg failed (see $RUNS/$cfg/$RUN_NAME/summary.json)" >&2
  done
fi

"$PY" - "$RUNS" "$RUN_NAME" "$BUDGET" $MODELS <<'PYEOF'
import json, sys
from pathlib import Path

runs, run_name, budget, models = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


print("| model | test NLL (nats) | estimator | FD (LeNet) | precision | recall | budget | epochs | status |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for cfg in models:
    path = runs / cfg / run_name / "summary.json"
    if not path.is_file():
        print(f"| {cfg} | - | - | - | - | - | {budget} | - | not run |")
        continue
    s = json.loads(path.read_text())
    t = s.get("test") or {}
    nll = t.get("test/nll")
    err = t.get("test/nll_stderr")
    nll_txt = "-" if nll is None else f"{nll:.2f}" + (f" ± {err:.2f}" if err is not None else "")
    print(f"| {cfg} ({s.get('model', '').rsplit('.', 1)[-1]}) | {nll_txt} | {s.get('estimator') or '-'} "
          f"| {fmt(t.get('test/fd_lenet'), '.2f')} | {fmt(t.get('test/precision'), '.3f')} "
          f"| {fmt(t.get('test/recall'), '.3f')} | {budget} | {s.get('epochs', '-')} | {s.get('status', '?')} |")
PYEOF
