r"""Importance-weighted test NLL of a trained VAE-family run on a subset of the test set, with the KL term,
the ELBO and a grid of (pixel-by-pixel) samples: for runs whose full ``test_after_fit`` would be too slow
(a PixelCNN decoder costs one network pass per importance sample).

For test examples :math:`i = 0, \dots, n-1` (in the DataModule's test order) it reports
:math:`-\frac1n\sum_i \hat{\mathcal L}_k(x_i)` with the platform's seeded estimator (example ``i`` uses the
generator of ``(seed, i)``, as :class:`~lightning_gm.callbacks.iwae.IWAEEvaluation` does), its standard error,
the Monte Carlo ELBO from the same samples and the analytic :math:`\mathrm{KL}(q(z|x)\,\|\,p(z))`.

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.

Usage (from the repository root; the run folder holds ``config.yaml`` and ``checkpoints/``)::

    OMP_NUM_THREADS=1 python bench/pixelcnn_vae_mnist.py \
        --run runs/vae_pixelcnn/pcvae_12min --k 100 --n_test 500 --samples 36 \
        --out docs/vae_pixelcnn_samples.png
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from lightning_gm.estimators.seeded import seeded_importance_weighted
from lightning_gm.images import as_images, make_grid, save_png
from lightning_gm.models.base import GenerativeModel
from run_config import from_run_config
from timing import parse, parser

__all__: list[str] = []


def load_run(run: Path, which: str = "last") -> tuple[GenerativeModel, pl.LightningDataModule, Path]:
    """The model (weights of ``last.ckpt``, or of the best checkpoint by the model's monitor) and the
    DataModule of a run folder."""
    ckpts = sorted((run / "checkpoints").glob("best*.ckpt")) if which == "best" else []
    ckpt = (ckpts or [run / "checkpoints" / "last.ckpt"])[-1]
    model, data = from_run_config(yaml.safe_load((run / "config.yaml").read_text()), ckpt)
    return model.eval(), data, ckpt


def main() -> None:
    p = parser(__doc__, repeats=None)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--n_test", type=int, default=500)
    p.add_argument("--sample_block", type=int, default=100, help="samples per pass of 10 examples (protocol)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=0, help="sample grid size (0 = none)")
    p.add_argument("--out", type=Path, default=None, help="PNG for the sample grid")
    p.add_argument("--save", type=Path, default=None, help="write the per-example NLLs (torch.save) here")
    p.add_argument("--ckpt", choices=["last", "best"], default="last",
                   help="last.ckpt (end of the budget) or the best checkpoint by the model's monitor")
    args = parse(p)
    model, data, ckpt = load_run(args.run, args.ckpt)
    data.prepare_data()
    data.setup("test")
    xs = []
    for x, _ in data.test_dataloader():
        xs.append(x)
        if sum(len(b) for b in xs) >= args.n_test:
            break
    x = torch.cat(xs)[: args.n_test]
    t0 = time.perf_counter()
    with torch.no_grad():
        est = seeded_importance_weighted(model.log_weights, x, range(len(x)), args.k, args.seed,
                                         sample_block=args.sample_block)
        kl = model.kl_analytic(x) if hasattr(model, "kl_analytic") else torch.full((len(x),), float("nan"))
    secs = time.perf_counter() - t0
    nll = -est.log_prob
    if args.save is not None:
        torch.save(nll, args.save)
    out = {
        "run": str(args.run), "checkpoint": ckpt.name,
        "global_step": int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]),
        "estimator": f"iwae-{args.k}", "n_test": len(x),
        "nll": nll.mean().item(), "nll_stderr": (nll.std() / math.sqrt(len(x))).item(),
        "elbo": est.elbo.mean().item(), "kl": kl.mean().item(), "eval_seconds": round(secs, 1),
    }
    if args.samples > 0 and args.out is not None:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        with torch.no_grad():
            z = model.prior_top.sample(args.samples, device=model.device).to(model.dtype)
            s = model.likelihood.sample(model.decode(z))  # binary samples, pixel by pixel
        out["sample_seconds"] = round(time.perf_counter() - t0, 1)
        grid = make_grid(as_images(s.float(), model.data_shape), nrow=math.ceil(math.sqrt(args.samples)))
        out["samples"] = str(save_png(grid, args.out, scale=2))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
