"""Random-number-generator state in checkpoints, so a resumed run continues exactly where it stopped."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

__all__ = ["RNGStateCheckpoint"]


class RNGStateCheckpoint(pl.Callback):
    """Save the torch / numpy / python RNG states with every checkpoint and restore them when training
    resumes, so the data order and the noise of a resumed run equal those of an uninterrupted one.

    The states are restored at ``on_fit_start``, and the sanity-check validation is made neutral for
    the RNG streams (states saved before it and put back after it), because Lightning creates the
    training data iterator, which draws the shuffling seed, right after the sanity check. Under DDP
    every rank restores rank 0's saved states; Lightning reseeds the distributed sampler by epoch.
    """

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None
        self._before_sanity: Optional[dict[str, Any]] = None

    def state_dict(self) -> dict[str, Any]:
        states = _collect_rng_states()
        # numpy's state holds an ndarray, which `torch.load(weights_only=True)` refuses: store a tensor
        name, keys, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("rng")
        if states is not None:
            name, keys, pos, has_gauss, gauss = states["numpy"]
            states = {**states, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)}
        self._pending = states

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_sanity = _collect_rng_states()

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._before_sanity is not None:
            _set_rng_states(self._before_sanity)
            self._before_sanity = None
