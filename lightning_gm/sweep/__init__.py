"""``lightning_gm sweep``: Optuna studies over any experiment config, from one process to many workers.

A sweep file names a base config and a search space over its dotted keys::

    base_config: conf/vae_digits.yaml      # any experiment config (relative to the sweep file or cwd)
    study_name: vae_digits
    metric: val/elbo
    direction: maximize
    n_trials: 20                           # trials in the study, shared by every worker
    timeout: null                          # seconds this worker keeps starting trials
    sampler: {name: tpe, seed: 0}          # tpe | random
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 1}   # median | hyperband | none
    storage: null                          # default sqlite:///<runs_dir>/sweeps/<study>.db; any RDB URL
    runs_dir: runs
    test: best                             # test the best trial at the end (best), every trial (each), or none
    overrides: {trainer.max_epochs: 5}     # fixed for every trial
    enqueue:                               # optional points to try first (part of n_trials)
      - {model.init_args.latent_dim: 8}
    space:
      model.init_args.latent_dim: {type: int, low: 2, high: 32, log: true}
      model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.init_args.activation: {type: categorical, choices: [tanh, relu]}
      model.init_args.num_layers:          # conditional: only sampled when the condition holds
        {type: int, low: 2, high: 8, when: {model.class_path: lightning_gm.models.Flow}}

Each trial is a full ``lightning_gm fit`` in its own process (so crashes, NaNs, out-of-memory kills and
DDP re-launches stay inside the trial), in the study's own folder ``<runs_dir>/sweeps/<study>/trial-NNNN/``
(its console in ``trial-NNNN.log`` beside it), W&B-grouped by study and tagged with the trial number. The
trial process reports ``metric`` after every validation epoch to the study and stops early when the pruner
says so. A line is printed as each trial ends (its value, state and time), the trial's ``summary.json``
records its ``sweep`` value (the leaderboard's column), and the best trial (or each) is tested. SIGINT or
SIGTERM stops the worker within seconds: the running trial is stopped the same way (its ``last.ckpt`` and
status written), marked failed with the signal as its reason and queued again, and the report is written;
the same command continues the study. The study's budget of ``n_trials`` is enqueued once,
when the study is created, and workers pop trials from that queue atomically, so several workers on
several machines (PostgreSQL storage) run exactly ``n_trials`` trials between them. Trials have a
heartbeat: a worker killed mid-trial leaves its trial marked failed by the next living worker,
which re-queues it with the same parameters and runs it.
"""

from __future__ import annotations

import argparse

from lightning_gm.sweep.spec import Param, SweepSpec, TESTS, load_sweep
from lightning_gm.sweep.trials import run_sweep

__all__ = ["Param", "SweepSpec", "load_sweep", "run_sweep", "main"]


def main(argv: list[str]) -> int:
    """``lightning_gm sweep --config SWEEP.yaml [--storage URL] [--n_trials N] [--timeout S] [--test best|each|none]``."""
    parser = argparse.ArgumentParser(prog="lightning_gm sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", required=True, help="the sweep file (YAML)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (overrides the file's)")
    parser.add_argument("--n_trials", type=int, default=None, help="study budget (overrides the file's)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds this worker starts new trials")
    parser.add_argument("--test", choices=TESTS, default=None,
                        help="test the best trial at the end, each trial, or none (overrides the file's; default best)")
    parser.add_argument("--check", action="store_true", help="only validate the sweep file and exit")
    args = parser.parse_args(argv)
    spec = load_sweep(args.config, storage=args.storage)
    if args.n_trials is not None:
        spec.n_trials = args.n_trials
    if args.timeout is not None:
        spec.timeout = args.timeout
    if args.test is not None:
        spec.test = args.test
    if args.check:
        print(f"{args.config}: OK ({len(spec.space)} parameters over {spec.base_config})")
        return 0
    run_sweep(spec, log=lambda line: print(line, flush=True))
    return 0
