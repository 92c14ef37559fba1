# Sourced by every bench/*.sh (`source "$(dirname "$0")/env.sh"`): work from the repository root, one thread per
# process (the 2-core machine is shared), W&B offline unless WANDB_MODE says otherwise, and the knobs the scripts
# read from the environment:
#   RUNS    folder of the run folders (default runs, below the repository root)
#   PYTHON  the interpreter (default: python on PATH, e.g. the activated venv's); the scripts call it as $PY
#   BUDGET  training wall time of a budgeted run, DD:HH:MM:SS (default 10 minutes; a script may set its own first)
# The data are read from $LIGHTNING_GM_DATA, else the platform's default data root (README, "Data").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=${WANDB_MODE:-disabled}
RUNS=${RUNS:-runs}
PY=${PYTHON:-python}
BUDGET=${BUDGET:-00:00:10:00}
