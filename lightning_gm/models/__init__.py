"""One LightningModule per model family, all sharing :class:`GenerativeModel`."""

from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.vae import VAE, HierarchicalVAE
from lightning_gm.models.flow import Flow
from lightning_gm.models.rbm import RBM, GaussianRBM
from lightning_gm.models.dbn import DBN
from lightning_gm.models.linear_gaussian import PPCA, FactorAnalysis, LinearGaussianModel
from lightning_gm.models.autoencoder import Autoencoder
from lightning_gm.models.density_network import DensityNetwork
from lightning_gm.models.autoregressive import NADE, MADEDensity

__all__ = ["GenerativeModel", "VAE", "Flow", "HierarchicalVAE", "RBM", "GaussianRBM", "DBN", "PPCA", "FactorAnalysis", "LinearGaussianModel", "Autoencoder", "DensityNetwork", "NADE", "MADEDensity"]

from lightning_gm.models.dbm import DBM  # noqa: E402

__all__ += ["DBM"]
