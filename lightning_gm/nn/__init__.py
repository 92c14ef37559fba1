"""Plain torch building blocks (no Lightning): networks, likelihoods, priors, RBM layers, flow layers."""

from lightning_gm.nn.likelihoods import (
    BernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    Likelihood,
)
from lightning_gm.nn.mlp import MLP
from lightning_gm.nn.conv import ConvDecoder, ConvEncoder, MLPNet
from lightning_gm.nn.posterior import IAFPosterior, PlanarPosterior, PosteriorFlow
from lightning_gm.nn.priors import MixtureOfGaussians, Prior, StandardNormal, VampPrior
from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM, GibbsState, RBMBase
from lightning_gm.nn.dbm import BinaryDBM
from lightning_gm.nn.sbn import HelmholtzMachine
from lightning_gm.nn.classifier import FeatureExtractor, LeNet, load_feature_network, save_feature_network
from lightning_gm.nn.generators import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from lightning_gm.nn.pixelcnn import GatedPixelCNNLayer, MaskedConv2d, PixelCNN, PixelCNNLikelihood
from lightning_gm.nn.mpdbm import inpaint, masked_mean_field
from lightning_gm.nn.subspace_rbm import SubspaceRBMNet
from lightning_gm.nn.ssrbm import SpikeSlabRBMNet
from lightning_gm.nn.conv_rbm import ConvolutionalRBM
from lightning_gm.nn.hopfield import HopfieldNetwork

__all__ = [
    "Likelihood", "BernoulliLikelihood", "GaussianLikelihood", "MLP", "RBMBase", "BernoulliRBM",
    "GaussianBernoulliRBM", "GibbsState", "DiscretizedLogisticLikelihood", "ConvEncoder", "ConvDecoder", "MLPNet",
    "PosteriorFlow", "PlanarPosterior", "IAFPosterior", "Prior", "StandardNormal", "MixtureOfGaussians", "VampPrior",
    "BinaryDBM", "HelmholtzMachine", "LeNet", "FeatureExtractor", "load_feature_network", "save_feature_network",
    "MLPGenerator", "ConvGenerator", "MLPDiscriminator", "ConvDiscriminator", "MaskedConv2d", "GatedPixelCNNLayer",
    "PixelCNN", "PixelCNNLikelihood", "masked_mean_field", "inpaint", "SubspaceRBMNet", "SpikeSlabRBMNet",
    "ConvolutionalRBM", "HopfieldNetwork",
]
