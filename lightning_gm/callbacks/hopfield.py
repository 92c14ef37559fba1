r"""Pictures of Hopfield retrieval: stored patterns, corrupted cues and what the dynamics made of them, and the
energy :math:`E = -\tfrac12 s^\top W s` falling sweep by sweep.

References: Hopfield (1982); MacKay (2003), chapter 42 (figures of retrieval from corrupted memories).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_gm.callbacks.pictures import SamplePictures
from lightning_gm.images import as_images, make_grid, save_figure, save_png

__all__ = ["HopfieldPictures"]


class HopfieldPictures(SamplePictures):
    """After each validation (and at test): ``retrieval_<tag>.png`` (rows of cues, the states they converged to,
    and the stored patterns), ``energy_<tag>.png`` (energy per sweep of every cue) and the attractors reached from
    random states (``samples_<tag>.png``), in ``<run>/samples/`` and on W&B.

    Args:
        every_n_epochs: how often (in validation epochs).
        num_samples: random starting states whose attractors are shown.
        num_cues: cues shown in the retrieval picture (the first ones: one per stored pattern first).
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 16, num_cues: int = 10) -> None:
        super().__init__(every_n_epochs, num_samples, num_reconstructions=0)
        self.num_cues = num_cues

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(trainer, pl_module, "test")

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: Any, tag: str) -> list[Path]:
        paths = list(super().write(trainer, pl_module, tag))
        last = getattr(pl_module, "last_retrieval", None)
        if last is None:
            return paths
        cues, targets, run = last
        repeats = max(1, cues.shape[0] // max(1, pl_module.patterns.shape[0]))
        idx = torch.arange(0, cues.shape[0], repeats)[: self.num_cues]  # the first cue of each pattern
        rows = [((t[idx] + 1) / 2).float().cpu() for t in (cues, run.state, targets)]
        images = as_images(torch.cat(rows), pl_module.data_shape)
        folder = self._folder(trainer)
        if images is not None:
            path = save_png(make_grid(images, nrow=len(idx)), folder / f"retrieval_{tag}.png")
            self._log(trainer, "retrieval", path)
            paths.append(path)
        paths.append(self._energy_plot(run.energies, folder / f"energy_{tag}.png", pl_module.update))
        self._log(trainer, "energy", paths[-1])
        self.last_paths = paths
        return paths

    @staticmethod
    def _energy_plot(energies: torch.Tensor, path: Path, mode: str) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        e = energies.float().cpu().numpy()
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot(e, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(e.mean(1), color="black", lw=2, label="mean")
        ax.set_xlabel(f"sweep ({mode} updates)")
        ax.set_ylabel(r"energy $-\frac{1}{2}s^\top W s$")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)
