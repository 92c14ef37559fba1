"""Seconds per training update of the shipped flow recipes (and overridden variants), measured interleaved in one
run, for planning hour-scale runs and the cost of a full recipe (RUNS.md).

    python bench/flow_step_time.py [--steps 5] [--threads 1] [--variant NAME=CONFIG[,--key=value...]] ...

Each variant is a config plus optional dotted overrides, built as ``lightning_gm fit`` builds it; an update is the
model's exact NLL on one training batch of the config's size, backward and an optimiser step (the optimiser of the
config; ActNorm initialised from the first batch). Variants are timed in turn, round after round, so a change of
machine load hits all of them; the median over rounds is printed with the update's multiply-accumulate count
(from PyTorch's FLOP counter, forward + backward), which converts the step time into GPU time at a stated
throughput.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from timing import interleaved, parse, parser

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [
    "maf=conf/maf_mnist.yaml",
    "realnvp=conf/realnvp_mnist.yaml",
    "glow=conf/glow_mnist.yaml",
]


def main() -> None:
    p = parser(__doc__, repeats=None)
    p.add_argument("--steps", type=int, default=5, help="rounds (one update of every variant per round)")
    p.add_argument("--variant", action="append", help="NAME=CONFIG[,--key=value,...] (repeatable)")
    args = parse(p)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_gm.cli import GenerativeCLI

    runs = {}
    for spec in args.variant or DEFAULT:
        name, rest = spec.split("=", 1)
        config, *overrides = rest.split(",")
        torch.manual_seed(0)
        cli = GenerativeCLI(args=["--config", str(ROOT / config), "--trainer.logger=false", *overrides], run=False)
        model, dm = cli.model, cli.datamodule
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        opt = model.configure_optimizers()
        opt = opt["optimizer"] if isinstance(opt, dict) else opt
        model.train()
        if hasattr(model, "initialize_actnorm"):
            model.initialize_actnorm(x)
        with FlopCounterMode(display=False) as counter:
            (-model.log_prob(x).mean()).backward()
        opt.zero_grad(set_to_none=True)
        runs[name] = dict(model=model, opt=opt, x=x, macs=counter.get_total_flops() / 2,
                          params=model.num_parameters(), batch=len(x))

    def update(run: dict) -> None:
        loss = -run["model"].log_prob(run["x"]).mean()
        run["opt"].zero_grad(set_to_none=True)
        loss.backward()
        run["opt"].step()

    times = interleaved({name: (lambda run=run: update(run)) for name, run in runs.items()}, repeats=args.steps)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.steps} rounds")
    print("| variant | parameters | batch | s / update | GMAC / update (fwd + bwd) |")
    print("|---|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name} | {run['params']:,} | {run['batch']} | {statistics.median(times[name]):.3f} | "
              f"{run['macs'] / 1e9:.1f} |")


if __name__ == "__main__":
    main()
