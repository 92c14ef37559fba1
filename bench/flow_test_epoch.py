"""A flow's test epoch with one model evaluation per batch (``Flow.test_terms``) against the base's two
(``loss_terms`` then ``log_prob``), in one run, on a shipped config's model and data (issue 18).

    python bench/flow_test_epoch.py [--config conf/maf_mnist.yaml] [--repeats 3] [--threads 1]

The model is built from the config exactly as ``lightning_gm fit`` builds it (untrained: the cost of an
evaluation does not depend on the weights), put in evaluation mode (batch-norm statistics set from one
training batch), and tested by a plain ``Trainer.test`` on the config's full test set, alternately with the
family's ``test_terms`` (new) and with the base's default (old), ``--repeats`` times each, so that machine
load hits both alike. Prints the median seconds per test epoch, their ratio new/old, and checks that the
logged ``test/nll``, ``test/nll_stderr`` and ``test/loss`` are the same both ways.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any

from timing import parse, parser, rounds, timed

ROOT = Path(__file__).resolve().parents[1]


def _build(config: str) -> tuple[Any, Any]:
    from lightning_gm.cli import GenerativeCLI

    cli = GenerativeCLI(args=["--config", config, "--trainer.logger=false"], run=False)
    return cli.model, cli.datamodule


def main() -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--config", default=str(ROOT / "conf" / "maf_mnist.yaml"))
    args = parse(p)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import lightning.pytorch as pl
    import torch

    from lightning_gm.models.base import GenerativeModel

    torch.manual_seed(0)
    model, dm = _build(args.config)
    dm.setup("fit")
    x0 = next(iter(dm.train_dataloader()))
    x0 = x0[0] if isinstance(x0, (tuple, list)) else x0
    model.train()
    with torch.no_grad():  # ActNorm's data-dependent start and batch-norm statistics, as after training
        if hasattr(model, "initialize_actnorm"):
            model.initialize_actnorm(x0)
        model.log_prob(x0)
    model.eval()
    new_terms = model.test_terms

    def old_terms(x: Any) -> Any:
        return GenerativeModel.test_terms(model, x)

    def run(kind: str) -> tuple[float, dict[str, float]]:
        model.test_terms = new_terms if kind == "new" else old_terms
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        seconds, outs = timed(lambda: trainer.test(model, datamodule=dm, verbose=False))
        return seconds, outs[0]

    run("new")  # warm-up (data loading, allocator)
    results = rounds({"old": lambda: run("old"), "new": lambda: run("new")}, args.repeats)
    times = {kind: [t for t, _ in res] for kind, res in results.items()}
    outs = {kind: res[-1][1] for kind, res in results.items()}
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    n_test = len(dm.splits["test"][0])
    print(f"config: {args.config}; model: {type(model).__name__}, {model.num_parameters():,} parameters; "
          f"test set: {n_test:,} examples in batches of {dm.eval_batch_size}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"old (loss_terms + log_prob): {old:.2f} s per test epoch (runs: {', '.join(f'{t:.2f}' for t in times['old'])})")
    print(f"new (test_terms, one pass):  {new:.2f} s per test epoch (runs: {', '.join(f'{t:.2f}' for t in times['new'])})")
    print(f"ratio new/old: {new / old:.3f}")
    for key in ("test/nll", "test/nll_stderr", "test/loss"):
        a, b = outs["old"][key], outs["new"][key]
        print(f"{key}: old {a:.6f}, new {b:.6f}, equal: {abs(a - b) <= 1e-6 * max(1.0, abs(a))}")


if __name__ == "__main__":
    main()
