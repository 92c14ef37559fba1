"""The spike-and-slab RBM's maths on tiny instances: spikes enumerated, slabs integrated by quadrature, the
Gaussian conditionals' moments from the energy itself, exact log Z against a grid integral, the
normalisability constraint, and AIS against the exact log Z."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.estimators.ais import ais_log_partition
from lightning_gm.estimators.rbm_variants import SpikeSlabAnnealingPath, ssrbm_log_partition_enumerate
from lightning_gm.nn.ssrbm import SpikeSlabRBMNet


def _net(d: int, n: int, seed: int, scale: float = 1.0) -> SpikeSlabRBMNet:
    torch.manual_seed(seed)
    net = SpikeSlabRBMNet(d, n, visible_precision=1.3, slab_precision=1.7, phi=0.2, weight_std=scale).double()
    with torch.no_grad():
        net.b.normal_()
        net.mu.normal_(0.0, 0.5)
        net.alpha_raw.normal_(0.5, 0.3)
        net.lambda_raw.normal_(0.5, 0.3)
        net.phi_raw.normal_(-1.0, 0.5)
    return net.requires_grad_(False)


_S = torch.linspace(-25.0, 25.0, 10001, dtype=torch.float64)


def _slab_integrals(net: SpikeSlabRBMNet, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quadrature over each slab of exp(-E) with the energy itself (the other slabs held at 0): the log of
    the 1-D integrals and the slab means and variances, each ``(N,)``."""
    n = net.n_hidden
    s = torch.zeros(_S.numel(), n, dtype=torch.float64)
    logs, means, variances = [], [], []
    for i in range(n):
        si = s.clone()
        si[:, i] = _S
        le = -net.energy(v.expand(_S.numel(), -1), si, h.expand(_S.numel(), -1))
        w = torch.softmax(le, 0)
        logs.append(torch.logsumexp(le, 0) + torch.log(_S[1] - _S[0]))
        m = (w * _S).sum()
        means.append(m)
        variances.append((w * (_S - m) ** 2).sum())
    return torch.stack(logs), torch.stack(means), torch.stack(variances)


CASES = [(2, 3, 0), (3, 2, 1), (2, 4, 2)]


@pytest.mark.parametrize("d,n,seed", CASES)
def test_spike_conditional_and_free_energy_match_the_joint(d: int, n: int, seed: int) -> None:
    """Slabs integrated numerically from E(v, s, h), spikes enumerated: -log of the total is F(v) and the
    normalised spike marginals are sigmoid of the closed-form spike log-odds."""
    net = _net(d, n, seed)
    hs = enumerate_binary(n)
    for v in torch.randn(2, 1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)):
        log_joint = []
        for h in hs:
            logs, _, _ = _slab_integrals(net, v, h.unsqueeze(0))
            # exp(-E) separates over the slabs: the product of the 1-D integrals, corrected for the
            # (n - 1) copies of the slab-free part they each contain
            log_joint.append(logs.sum() + (n - 1) * net.energy(v, torch.zeros(1, n, dtype=torch.float64), h.unsqueeze(0))[0])
        lj = torch.stack(log_joint)
        assert float(-torch.logsumexp(lj, 0)) == pytest.approx(float(net.free_energy(v)[0]), abs=1e-6)
        p_h = torch.softmax(lj, 0) @ hs
        torch.testing.assert_close(net.mean_hiddens(v)[0], p_h, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("d,n,seed", CASES)
def test_slab_conditional_moments_by_quadrature(d: int, n: int, seed: int) -> None:
    net = _net(d, n, seed)
    g = torch.Generator().manual_seed(10 + seed)
    for _ in range(3):
        v = torch.randn(1, d, dtype=torch.float64, generator=g)
        h = torch.bernoulli(torch.full((1, n), 0.5, dtype=torch.float64), generator=g)
        _, mean, var = _slab_integrals(net, v, h)
        x, _ = net.projections(v)
        torch.testing.assert_close(net.slab_mean(x, h)[0], mean, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(1.0 / net.slab_precision, var, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("d,n,seed", CASES)
def test_visible_conditional_is_the_gaussian_of_the_energy(d: int, n: int, seed: int) -> None:
    """E is quadratic in v given (s, h): its Hessian is the conditional precision and its gradient
    vanishes at the conditional mean."""
    net = _net(d, n, seed)
    g = torch.Generator().manual_seed(20 + seed)
    for _ in range(3):
        h = torch.bernoulli(torch.full((n,), 0.5, dtype=torch.float64), generator=g)
        s = torch.randn(n, dtype=torch.float64, generator=g)
        mean, var = net.visible_moments(h, s)
        hess = torch.autograd.functional.hessian(lambda v: net.energy(v, s, h), torch.zeros(d, dtype=torch.float64))
        torch.testing.assert_close(hess, torch.diag(1.0 / var), rtol=1e-9, atol=1e-10)
        grad = torch.autograd.functional.jacobian(lambda v: net.energy(v, s, h), mean)
        torch.testing.assert_close(grad, torch.zeros(d, dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed,scale", [(0, 0.5), (1, 1.5), (2, 4.0)])
def test_exact_log_partition_equals_a_grid_integral_of_the_density(seed: int, scale: float) -> None:
    """Two visibles: log sum_h int int e^{-E} (closed form) = log of the grid integral of e^{-F(v)}, also for
    large weights (the parameterisation keeps the model normalisable)."""
    net = _net(2, 3, seed, scale)
    grid = torch.linspace(-12.0, 12.0, 801, dtype=torch.float64)
    v = torch.cartesian_prod(grid, grid)
    numeric = float(torch.logsumexp(-net.free_energy(v), 0) + 2 * torch.log(grid[1] - grid[0]))
    assert ssrbm_log_partition_enumerate(net) == pytest.approx(numeric, abs=1e-6)


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_every_spike_configuration_has_a_positive_definite_precision(scale: float) -> None:
    """P_h = Lambda + sum_i h_i (Phi_i - W_i W_i' / alpha_i) >= Lambda for every h, whatever the weights."""
    net = _net(5, 6, 3, scale)
    eig = torch.linalg.eigvalsh(net.conditional_precision(enumerate_binary(6)) - torch.diag(net.visible_precision))
    assert float(eig.min()) > -1e-9 * max(1.0, scale**2)
    assert float(net.visible_precision.min()) > net.min_precision


@pytest.mark.parametrize("key,kwargs", [
    ("visible_precision", {"visible_precision": 0.0}),
    ("visible_precision", {"visible_precision": -1.0}),
    ("slab_precision", {"slab_precision": 1e-4, "min_precision": 1e-3}),
    ("min_precision", {"min_precision": 0.0}),
    ("phi", {"phi": 0.0}),
])
def test_non_normalisable_settings_are_refused_by_name(key: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=key):
        SpikeSlabRBMNet(3, 2, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ais_is_within_a_tenth_of_a_nat_of_exact_log_z(seed: int) -> None:
    net = _net(6, 8, seed, scale=0.8)
    exact = ssrbm_log_partition_enumerate(net)
    path = SpikeSlabAnnealingPath(net, base_mean=torch.zeros(6), base_precision=net.visible_precision)
    res = ais_log_partition(path, runs=200, steps=1000, generator=torch.Generator().manual_seed(50 + seed))
    assert res.log_z == pytest.approx(exact, abs=0.1)


def test_base_log_partition_is_exact() -> None:
    """log Z_0 of the path: the Gaussian base times the uncoupled slabs and spikes, checked by enumerating an
    ssRBM whose couplings are off (W = 0, mu = 0, b = 0, phi -> 0) with Lambda = tau."""
    net = _net(3, 2, 5)
    tau = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    path = SpikeSlabAnnealingPath(net, base_mean=torch.zeros(3), base_precision=tau)
    off = SpikeSlabRBMNet(3, 2, phi=1e-12, weight_std=0.0).double().requires_grad_(False)
    with torch.no_grad():
        off.lambda_raw.copy_(torch.log(torch.expm1(tau - off.min_precision)))
        off.alpha_raw.copy_(net.alpha_raw)
    assert path.log_z_base() == pytest.approx(ssrbm_log_partition_enumerate(off), abs=1e-9)
