"""The model and DataModule a finished run's ``config.yaml`` describes, for the bench scripts that evaluate runs
(``pixelcnn_vae_mnist.py``, ``sample_quality_table.py``).

``lightning_gm.load_model`` rebuilds a model from its checkpoint alone; this is the route for checkpoints it cannot
rebuild (injected sub-modules written before the command saved them, e.g. a PixelCNN likelihood or a GAN
generator given by ``class_path``) and for scripts that need the run's data as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_gm.models.base import GenerativeModel

__all__ = ["from_run_config"]


def from_run_config(cfg: dict[str, Any], ckpt: Path) -> tuple[GenerativeModel, pl.LightningDataModule]:
    """The run's model (with ``ckpt``'s ``state_dict`` loaded) and DataModule, instantiated from its resolved
    ``config.yaml`` (``cfg``) with jsonargparse; the model's ``data_shape`` is the data's, as the command sets it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    parser.add_subclass_arguments(GenerativeModel, "model")
    data = parser.instantiate(parser.parse_object({"data": cfg["data"], "model": cfg["model"]})).data
    cfg["model"].setdefault("init_args", {})["data_shape"] = list(data.shape)
    model = parser.instantiate(parser.parse_object({"data": cfg["data"], "model": cfg["model"]})).model
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model, data
