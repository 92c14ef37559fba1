"""Plain torch building blocks (no Lightning): networks, likelihoods, priors, RBM layers, flow layers."""

from lightning_gm.nn.likelihoods import BernoulliLikelihood, DiscretizedLogisticLikelihood, GaussianLikelihood, Likelihood
from lightning_gm.nn.mlp import MLP
from lightning_gm.nn.conv import ConvDecoder, ConvEncoder, MLPNet
from lightning_gm.nn.posterior import IAFPosterior, PlanarPosterior, PosteriorFlow
from lightning_gm.nn.priors import MixtureOfGaussians, Prior, StandardNormal, VampPrior
from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM, GibbsState, RBMBase

__all__ = [
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "MLP",
    "RBMBase",
    "BernoulliRBM",
    "GaussianBernoulliRBM",
    "GibbsState",
    "DiscretizedLogisticLikelihood",
    "ConvEncoder",
    "ConvDecoder",
    "MLPNet",
    "PosteriorFlow",
    "PlanarPosterior",
    "IAFPosterior",
    "Prior",
    "StandardNormal",
    "MixtureOfGaussians",
    "VampPrior",
]

from lightning_gm.nn.dbm import BinaryDBM  # noqa: E402

__all__ += ["BinaryDBM"]
