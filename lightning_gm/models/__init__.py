"""One LightningModule per model family, all sharing :class:`GenerativeModel`."""

from lightning_gm.models.base import CheckpointLoadError, GenerativeModel
from lightning_gm.models.vae import VAE, HierarchicalVAE
from lightning_gm.models.flow import Flow
from lightning_gm.models.rbm import RBM, GaussianRBM
from lightning_gm.models.dbn import DBN
from lightning_gm.models.linear_gaussian import PPCA, FactorAnalysis, LinearGaussianModel
from lightning_gm.models.autoencoder import Autoencoder
from lightning_gm.models.density_network import DensityNetwork
from lightning_gm.models.autoregressive import NADE, MADEDensity
from lightning_gm.models.dbm import DBM
from lightning_gm.models.sbn import SigmoidBeliefNet
from lightning_gm.models.classifier import MNISTClassifier
from lightning_gm.models.gan import GAN
from lightning_gm.models.gmmn import GMMN
from lightning_gm.models.mpdbm import MPDBM
from lightning_gm.models.subspace_rbm import SubspaceRBM
from lightning_gm.models.conv_dbn import ConvDBN
from lightning_gm.models.conv_rbm import ConvRBM
from lightning_gm.models.ssrbm import SpikeSlabRBM
from lightning_gm.models.hopfield import Hopfield

__all__ = [
    "GenerativeModel", "CheckpointLoadError", "VAE", "Flow", "HierarchicalVAE", "RBM", "GaussianRBM", "DBN", "PPCA",
    "FactorAnalysis", "LinearGaussianModel", "Autoencoder", "DensityNetwork", "NADE", "MADEDensity", "DBM",
    "SigmoidBeliefNet", "MNISTClassifier", "GAN", "GMMN", "MPDBM", "SubspaceRBM", "ConvRBM", "ConvDBN",
    "SpikeSlabRBM", "Hopfield",
]
