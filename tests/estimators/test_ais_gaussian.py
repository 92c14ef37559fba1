"""AIS for Gaussian-Bernoulli RBMs (:class:`GaussianRBMAnnealingPath`) against the exact log Z."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators.ais import ais_log_partition
from lightning_gm.estimators.rbm_ais import GaussianRBMAnnealingPath
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.nn.rbm import GaussianBernoulliRBM


def _grbm(seed: int, learn_sigma: bool = True) -> GaussianBernoulliRBM:
    g = torch.Generator().manual_seed(seed)
    sigma = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    rbm = GaussianBernoulliRBM(6, 8, sigma=sigma, learn_sigma=learn_sigma, dtype=torch.float64)
    with torch.no_grad():
        rbm.W.normal_(0.0, 0.7, generator=g)
        rbm.b.normal_(generator=g)
        rbm.c.normal_(generator=g)
    return rbm


def test_path_endpoints_are_base_gaussian_and_target() -> None:
    rbm = _grbm(0)
    a = torch.randn(6, dtype=torch.float64)
    path = GaussianRBMAnnealingPath(rbm, a)
    v = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(path.log_unnormalized(v, 1.0), -rbm.free_energy(v))
    base = -(0.5 * (v - a).pow(2) / rbm.variance).sum(-1) + 8 * math.log(2.0)
    torch.testing.assert_close(path.log_unnormalized(v, 0.0), base)
    # log Z_0 is the normaliser of that base
    want = float((0.5 * torch.log(2 * math.pi * rbm.variance)).sum()) + 8 * math.log(2.0)
    assert path.log_z_base() == pytest.approx(want, abs=1e-12)
    torch.testing.assert_close(path.log_ratio(v, 0.3, 0.7), path.log_unnormalized(v, 0.7) - path.log_unnormalized(v, 0.3))


def test_transition_leaves_the_intermediate_distribution_invariant() -> None:
    """At beta = 1, chains started at exact samples of the model stay distributed as the model."""
    from lightning_gm.estimators.partition import sample_rbm_exact

    rbm = _grbm(1)
    path = GaussianRBMAnnealingPath(rbm)
    g = torch.Generator().manual_seed(0)
    v, _ = sample_rbm_exact(rbm, 20000, g)
    for _ in range(20):
        v = path.transition(v, 1.0, g)
    fresh, _ = sample_rbm_exact(rbm, 20000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(v.mean(0), fresh.mean(0), atol=0.06, rtol=0)
    torch.testing.assert_close(v.pow(2).mean(0), fresh.pow(2).mean(0), atol=0.15, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ais_matches_exact_log_partition(seed: int) -> None:
    rbm = _grbm(seed)
    exact = log_partition_enumerate(rbm)
    res = ais_log_partition(GaussianRBMAnnealingPath(rbm), runs=200, steps=2000, generator=torch.Generator().manual_seed(seed))
    assert abs(res.log_z - exact) < 0.05 and res.log_z_interval[0] - 0.02 <= exact <= res.log_z_interval[1] + 0.02
