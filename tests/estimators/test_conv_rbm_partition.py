"""Exact log Z of tiny convolutional RBMs (enumeration of v with the closed-form free energy, checked against the
full joint sum over v and valid h) and the AIS estimate within 0.1 nats of it."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.estimators.ais import ais_log_partition, base_rate_log_odds
from lightning_gm.estimators.conv_rbm import ConvRBMAnnealingPath, conv_rbm_log_partition_enumerate
from lightning_gm.estimators.partition import EnumerationTooLargeError, enumerate_binary
from lightning_gm.nn.conv_rbm import ConvolutionalRBM


def _model(shape, seed: int, scale: float = 1.0) -> ConvolutionalRBM:
    cin, img, k, nw, c = shape
    torch.manual_seed(seed)
    m = ConvolutionalRBM(cin, img, k, nw, c, weight_std=scale)
    with torch.no_grad():
        m.b.normal_(-1.0, 0.5)
        m.c.normal_(0.0, 0.5)
    return m


@pytest.mark.parametrize("shape", [(1, (3, 3), 2, 2, 2), (1, (3, 3), 1, 1, 2)])  # the second has boundary blocks
def test_exact_log_z_equals_joint_enumeration(shape) -> None:
    m = _model(shape, 0).double()
    vs = enumerate_binary(m.n_visible).reshape(-1, 1, *m.image_size)
    hs = enumerate_binary(m.n_hidden).reshape(-1, m.n_filters, *m.hidden_size)
    hs = hs[m.valid(hs)]
    with torch.no_grad():
        joint = torch.logsumexp(torch.stack([torch.logsumexp(-m.energy(v.expand(len(hs), -1, -1, -1), hs), 0)
                                             for v in vs]), 0)
    assert conv_rbm_log_partition_enumerate(m) == pytest.approx(float(joint), abs=1e-9)


def test_log_z_base_is_exact_at_beta_zero() -> None:
    """At beta = 0 the path is the base model: enumerating f_0 over v gives log Z_0."""
    m = _model((1, (4, 4), 2, 2, 2), 1)
    b_a = torch.randn(16, dtype=torch.float64)
    path = ConvRBMAnnealingPath(m, b_a)
    vs = enumerate_binary(16).reshape(-1, 1, 4, 4)
    assert float(torch.logsumexp(path.log_unnormalized(vs, 0.0), 0)) == pytest.approx(path.log_z_base(), abs=1e-9)
    # and at beta = 1 it is the target's unnormalised marginal -F(v)
    assert torch.allclose(path.log_unnormalized(vs[:50], 1.0), -m.double().free_energy(vs[:50]), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ais_within_a_tenth_of_a_nat(seed: int) -> None:
    """4x4 binary image, 3 groups of 2x2 filters, 2x2 pooling with boundary blocks: AIS (100 runs, 300 steps,
    base-rate start from the model's own samples' marginals) within 0.1 nats of the enumerated log Z."""
    m = _model((1, (4, 4), 3, 2, 2), seed, scale=1.5)
    exact = conv_rbm_log_partition_enumerate(m)
    g = torch.Generator().manual_seed(seed)
    samples = m.double().gibbs(torch.zeros(500, 1, 4, 4), k=50, generator=g).v
    path = ConvRBMAnnealingPath(m, base_rate_log_odds(samples.flatten(1)))
    res = ais_log_partition(path, runs=100, steps=300, generator=g)
    assert abs(res.log_z - exact) < 0.1, (res.log_z, exact)


def test_enumeration_refuses_large_models() -> None:
    m = ConvolutionalRBM(1, (6, 6), 2, 3, 2)
    with pytest.raises(EnumerationTooLargeError, match="2\\^36 terms"):
        conv_rbm_log_partition_enumerate(m)
