r"""Inpainting evaluation of Boltzmann machines on fixed, seeded masks, as test metrics and pictures.

At the end of the test epoch the first ``num_examples`` test examples are inpainted under each mask kind
(:func:`~lightning_gm.nn.mpdbm.inpainting_mask`: ``random50`` = each pixel missing with probability 0.5,
drawn from a generator seeded by ``seed``; ``bottom`` = the bottom half, ...). The masks depend only on
``seed``, the kind and the example's position, so two models tested on the same data see the same masks.
The model's ``inpaint(x, missing)`` is used when it has one (the MP-DBM); a model with a
:class:`~lightning_gm.nn.dbm.BinaryDBM` in ``.dbm`` (the standard DBM) is inpainted by
:func:`~lightning_gm.nn.mpdbm.inpaint` (mean field, observed pixels clamped, ``steps`` rounds, default the
model's ``mf_iterations``). For each kind it logs, over the missing pixels :math:`S` only,

.. math::

    \texttt{inpaint\_xent} = -\frac{1}{|S|}\sum_{i\in S}\big[x_i\log\hat x_i + (1-x_i)\log(1-\hat x_i)\big], \qquad
    \texttt{inpaint\_err} = \frac{1}{|S|}\sum_{i\in S} [\,[\hat x_i > \tfrac12] \ne x_i\,]

(nats per missing pixel, and the fraction of missing pixels wrong after thresholding; pixels are
thresholded at 1/2 first if the data are grey levels), as ``test/inpaint_xent_<kind>`` and
``test/inpaint_err_<kind>``, and writes ``<run>/samples/inpaint_<kind>.png`` (rows of 8: original, the
observed pixels with missing ones grey, the inpainting).

References: Goodfellow, Mirza, Courville & Bengio (2013), Multi-prediction deep Boltzmann machines, NIPS.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_gm.callbacks.iwae import fetch_examples, test_examples
from lightning_gm.errors import ConfigError
from lightning_gm.images import as_images, make_grid, save_png
from lightning_gm.nn.dbm import BinaryDBM
from lightning_gm.nn.mpdbm import inpaint, inpainting_mask

__all__ = ["InpaintingEvaluation", "inpainting_scores"]


def inpainting_scores(x: Tensor, probs: Tensor, missing: Tensor, eps: float = 1e-7) -> tuple[float, float]:
    """``(xent, err)`` over the missing pixels of binary ``x`` (both ``(N, D)``): see the module docstring."""
    x, p, m = x.double(), probs.double().clamp(eps, 1 - eps), missing.double()
    xent = -(x * p.log() + (1 - x) * (1 - p).log())
    err = ((p > 0.5).double() != x).double()
    n = m.sum().clamp_min(1.0)
    return float((xent * m).sum() / n), float((err * m).sum() / n)


class InpaintingEvaluation(pl.Callback):
    """Inpainting error on fixed masks at test time (module docstring).

    Args:
        masks: mask kinds (``randomNN``, ``bottom``, ``top``, ``left``, ``right``).
        num_examples: test examples inpainted (``None`` = all).
        seed: seed of the random masks.
        steps: mean-field rounds (``None``: the model's ``mf_steps`` / ``mf_iterations``).
        batch_size: examples per mean-field batch.
        num_pictures: examples shown per mask picture (0 = no pictures).
    """

    def __init__(self, masks: Sequence[str] = ("random50", "bottom"), num_examples: Optional[int] = None,
                 seed: int = 0, steps: Optional[int] = None, batch_size: int = 500, num_pictures: int = 16) -> None:
        self.masks = list(masks)
        for kind in self.masks:
            try:
                inpainting_mask(kind, 1, (784,))
            except ValueError as exc:
                raise ConfigError(f"InpaintingEvaluation.masks: {exc}") from None
        if num_examples is not None and num_examples < 1:
            raise ConfigError(f"InpaintingEvaluation.num_examples must be >= 1 or null, got {num_examples}")
        self.num_examples, self.seed, self.steps = num_examples, seed, steps
        self.batch_size, self.num_pictures = batch_size, num_pictures
        self.results: dict[str, float] = {}
        self.last_paths: list[Path] = []

    def _inpaint(self, pl_module: Any, x: Tensor, missing: Tensor) -> Tensor:
        if hasattr(pl_module, "inpaint"):
            return pl_module.inpaint(x, missing, steps=self.steps)
        dbm = getattr(pl_module, "dbm", None)
        if not isinstance(dbm, BinaryDBM):
            raise ConfigError(
                f"InpaintingEvaluation: {type(pl_module).__name__} has neither inpaint() nor a BinaryDBM in .dbm"
            )
        steps = self.steps or int(getattr(pl_module, "mf_iterations", 10))
        return inpaint(dbm, x, missing, steps=steps)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        """Inpaint the test examples under every mask kind, log and return the numbers."""
        start = time.time()
        dataset = test_examples(trainer)
        n = len(dataset) if self.num_examples is None else min(self.num_examples, len(dataset))
        x_all = fetch_examples(dataset, torch.arange(n)).reshape(n, -1).float()
        if not bool(((x_all == 0) | (x_all == 1)).all()):
            x_all = (x_all > 0.5).float()
        data_shape = tuple(pl_module.data_shape)
        was_training = pl_module.training
        pl_module.eval()
        res: dict[str, float] = {}
        paths: list[Path] = []
        try:
            for kind in self.masks:
                gen = torch.Generator().manual_seed(self.seed)
                missing = inpainting_mask(kind, n, data_shape, gen)
                probs = torch.cat([
                    self._inpaint(pl_module, xb.to(pl_module.device), mb.to(pl_module.device)).float().cpu()
                    for xb, mb in zip(x_all.split(self.batch_size), missing.split(self.batch_size))
                ])
                xent, err = inpainting_scores(x_all, probs, missing)
                res[f"test/inpaint_xent_{kind}"], res[f"test/inpaint_err_{kind}"] = xent, err
                if self.num_pictures and trainer.is_global_zero:
                    path = self._picture(trainer, x_all, probs, missing, kind, data_shape)
                    if path is not None:
                        paths.append(path)
        finally:
            pl_module.train(was_training)
        res["test/inpaint_seconds"] = time.time() - start
        for key, value in res.items():
            pl_module.log(key, value, sync_dist=False)
        self.results, self.last_paths = res, paths
        return res

    def _picture(self, trainer: pl.Trainer, x: Tensor, probs: Tensor, missing: Tensor, kind: str,
                 data_shape: tuple[int, ...]) -> Optional[Path]:
        k = min(self.num_pictures, x.shape[0])
        shown = x[:k] * (1 - missing[:k]) + 0.5 * missing[:k]
        rows = [as_images(t, data_shape) for t in (x[:k], shown, probs[:k])]
        if any(r is None for r in rows):
            return None
        tiles = [t for i in range(0, k, 8) for r in rows for t in (r[i : i + 8],)]  # type: ignore[index]
        return save_png(make_grid(torch.cat(tiles), nrow=8), Path(trainer.default_root_dir) / "samples" / f"inpaint_{kind}.png")
