"""The subspace RBM's maths against brute-force enumeration of (x, h, S) on tiny instances, and AIS against
the exact log Z."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.estimators.ais import ais_log_partition
from lightning_gm.estimators.rbm_variants import SubspaceRBMAnnealingPath, subspace_rbm_log_partition_enumerate
from lightning_gm.nn.subspace_rbm import SubspaceRBMNet


def _net(d: int, m: int, k: int, seed: int, scale: float = 1.0) -> SubspaceRBMNet:
    torch.manual_seed(seed)
    net = SubspaceRBMNet(d, m, k, weight_std=scale).double()
    with torch.no_grad():
        net.b.normal_()
        net.c.normal_()
        net.A.normal_()
    return net.requires_grad_(False)


def _joint(net: SubspaceRBMNet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-E over every (x, h, S): ``(2^D, 2^M, 2^{MK})`` and the enumerated configurations."""
    d, m, k = net.n_visible, net.n_gates, net.subspace_size
    x, h, S = enumerate_binary(d), enumerate_binary(m), enumerate_binary(m * k).reshape(-1, m, k)
    neg_e = -net.energy(x[:, None, None, :], h[None, :, None, :], S[None, None])
    return neg_e, x, h, S


SIZES = [(5, 2, 2, 0), (4, 2, 3, 1), (6, 1, 4, 2), (3, 3, 2, 3)]


@pytest.mark.parametrize("d,m,k,seed", SIZES)
def test_closed_form_free_energy_is_the_sum_over_h_and_S(d: int, m: int, k: int, seed: int) -> None:
    net = _net(d, m, k, seed)
    neg_e, x, _, _ = _joint(net)
    brute = -torch.logsumexp(neg_e.reshape(2**d, -1), dim=1)
    torch.testing.assert_close(net.free_energy(x), brute, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d,m,k,seed", SIZES)
def test_exact_log_partition_both_ways_matches_brute_force(d: int, m: int, k: int, seed: int) -> None:
    net = _net(d, m, k, seed)
    neg_e, _, _, _ = _joint(net)
    want = float(torch.logsumexp(neg_e.reshape(-1), 0))
    assert subspace_rbm_log_partition_enumerate(net) == pytest.approx(want, abs=1e-9)  # the smaller side
    # the other side too: the hidden free energy F(h, S) summed over every (h, S)
    h = enumerate_binary(m)[:, None, :]
    S = enumerate_binary(m * k).reshape(1, -1, m, k)
    other = float(torch.logsumexp(-net.free_energy_hidden(h, S).reshape(-1), 0))
    assert other == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("d,m,k,seed", SIZES)
def test_conditionals_match_the_joint(d: int, m: int, k: int, seed: int) -> None:
    """p(h|x), p(S|x,h) and p(x|h,S) of the closed forms equal the normalised joint by enumeration."""
    net = _net(d, m, k, seed)
    neg_e, x, h, S = _joint(net)
    # p(h_j = 1 | x): marginalise S and the other gates
    p_xh = torch.softmax(torch.logsumexp(neg_e, 2), dim=1)  # (2^D, 2^M)
    torch.testing.assert_close(net.mean_hiddens(x), p_xh @ h, rtol=1e-9, atol=1e-12)
    # p(S_jk = 1 | x, h)
    p_s = torch.softmax(neg_e, dim=2)  # (2^D, 2^M, 2^{MK})
    want_s = torch.einsum("xhs,sjk->xhjk", p_s, S)
    a = net.subspace_logits(x)[:, None]  # (2^D, 1, M, K)
    torch.testing.assert_close(torch.sigmoid(h[None, :, :, None] * a).expand_as(want_s), want_s, rtol=1e-9, atol=1e-12)
    # p(x_i = 1 | h, S)
    p_x = torch.softmax(neg_e, dim=0)  # over x
    want_x = torch.einsum("xhs,xi->hsi", p_x, x)
    z = h[:, None, :, None] * S[None]
    torch.testing.assert_close(net.mean_visibles(z), want_x, rtol=1e-9, atol=1e-12)


def test_gibbs_sampler_leaves_the_exact_marginal_invariant() -> None:
    """Start 40,000 chains at exact samples of p(x) (by enumeration) and take one sweep: the visible
    histogram stays at p(x) (total variation at the Monte Carlo level, far below a wrong sampler's)."""
    net = _net(3, 2, 2, 4, scale=1.5)
    x = enumerate_binary(3)
    p = torch.softmax(-net.free_energy(x), 0)
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 40000, replacement=True, generator=g)
    out = net.gibbs_vhv(x[idx], k=1, generator=g).v
    codes = (out * torch.tensor([1.0, 2.0, 4.0], dtype=out.dtype)).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).double() / out.shape[0]
    assert float((freq - p).abs().sum()) < 0.03


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ais_is_within_a_tenth_of_a_nat_of_exact_log_z(seed: int) -> None:
    net = _net(8, 3, 3, seed, scale=0.7)
    exact = subspace_rbm_log_partition_enumerate(net)
    base = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    res = ais_log_partition(SubspaceRBMAnnealingPath(net, base), runs=200, steps=1000,
                            generator=torch.Generator().manual_seed(100 + seed))
    assert res.log_z == pytest.approx(exact, abs=0.1)
    assert res.log_z_interval[0] - 1e-9 <= res.log_z <= res.log_z_interval[1] + 1e-9


def test_base_log_partition_is_the_uncoupled_model() -> None:
    """At beta = 0 the path is the base-rate model: its log Z_0 is the exact log Z of a subspace RBM with
    W = 0, A = 0, c = 0 and visible biases b_A."""
    net = _net(5, 2, 2, 7)
    b_a = torch.randn(5, dtype=torch.float64)
    base = SubspaceRBMNet(5, 2, 2, weight_std=0.0).double()
    with torch.no_grad():
        base.b.copy_(b_a)
    assert SubspaceRBMAnnealingPath(net, b_a).log_z_base() == pytest.approx(subspace_rbm_log_partition_enumerate(base), abs=1e-10)
    assert SubspaceRBMAnnealingPath(base, b_a).log_z_base() == pytest.approx(5 * 0 + float(torch.nn.functional.softplus(b_a).sum()) + 2 * 3 * math.log(2), abs=1e-12)
