r"""Docs figure of a trained convolutional RBM (or the first layer of a convolutional DBN): the filters, and one
test digit with its pooling-unit probabilities :math:`P(p^k_\alpha = 1 \mid v)` per group.

Usage::

    python bench/conv_rbm_figures.py --ckpt runs/conv_rbm/mnist10c/checkpoints/last.ckpt \
        --out docs/conv_rbm_filters.png

References: Lee, Grosse, Ranganath & Ng (2009), figures 2-3 (bases and their activations).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lightning_gm.images import save_figure

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="filters and pooled maps of a trained ConvRBM / ConvDBN")
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--index", type=int, default=0, help="test image shown with its pooled maps")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_gm.data import MNISTDataModule
    from lightning_gm.models import ConvDBN, ConvRBM

    state = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    cls = ConvDBN if any(k.startswith("layers.") for k in state["state_dict"]) else ConvRBM
    model = cls.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    rbm = model.layers[0] if isinstance(model, ConvDBN) else model.rbm
    dm = MNISTDataModule(binarize="threshold", flatten=False)
    dm.setup("test")
    v = dm.splits["test"][0][args.index : args.index + 1].reshape(1, rbm.in_channels, *rbm.image_size)
    with torch.no_grad():
        pooled = rbm.pool_probs(v)[0]
    w = rbm.W.detach()[:, 0]
    k = w.shape[0]
    cols = min(k, 12)
    rows = -(-k // cols)
    fig, axes = plt.subplots(2 * rows + 1, cols, figsize=(cols * 0.9, (2 * rows + 1) * 0.95))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        ax = axes[i // cols, i % cols]
        ax.imshow(w[i].numpy(), cmap="gray")
        ax.set_title(f"W{i}", fontsize=6)
    axes[rows, 0].imshow(v[0, 0].numpy(), cmap="gray")
    axes[rows, 0].set_title("test digit", fontsize=6)
    for i in range(k):
        ax = axes[rows + 1 + i // cols, i % cols]
        ax.imshow(pooled[i].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"p{i}", fontsize=6)
    fig.suptitle(f"{cls.__name__}: {k} filters {w.shape[-1]}x{w.shape[-1]} (top), pooled maps "
                 f"{tuple(pooled.shape[-2:])} of the digit (bottom)", fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, args.out, dpi=90)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
