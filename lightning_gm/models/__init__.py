"""One LightningModule per model family, all sharing :class:`GenerativeModel`."""

from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.vae import VAE

__all__ = ["GenerativeModel", "VAE"]
