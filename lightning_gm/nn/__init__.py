"""Plain torch building blocks (no Lightning): networks, likelihoods, priors, RBM layers, flow layers."""

from lightning_gm.nn.likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from lightning_gm.nn.mlp import MLP
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
]
