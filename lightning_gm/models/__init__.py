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

__all__ = ["GenerativeModel", "CheckpointLoadError", "VAE", "Flow", "HierarchicalVAE", "RBM", "GaussianRBM", "DBN", "PPCA", "FactorAnalysis", "LinearGaussianModel", "Autoencoder", "DensityNetwork", "NADE", "MADEDensity"]

from lightning_gm.models.dbm import DBM  # noqa: E402

__all__ += ["DBM"]

from lightning_gm.models.sbn import SigmoidBeliefNet  # noqa: E402

__all__ += ["SigmoidBeliefNet"]

from lightning_gm.models.classifier import MNISTClassifier  # noqa: E402

__all__ += ["MNISTClassifier"]

from lightning_gm.models.gan import GAN  # noqa: E402
from lightning_gm.models.gmmn import GMMN  # noqa: E402

__all__ += ["GAN", "GMMN"]

from lightning_gm.models.mpdbm import MPDBM  # noqa: E402

__all__ += ["MPDBM"]

from lightning_gm.models.subspace_rbm import SubspaceRBM  # noqa: E402

__all__ += ["SubspaceRBM"]

from lightning_gm.models.conv_rbm import ConvDBN, ConvRBM  # noqa: E402

__all__ += ["ConvRBM", "ConvDBN"]

from lightning_gm.models.ssrbm import SpikeSlabRBM  # noqa: E402

__all__ += ["SpikeSlabRBM"]

from lightning_gm.models.hopfield import Hopfield  # noqa: E402

__all__ += ["Hopfield"]
