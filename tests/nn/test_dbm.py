"""The DBM maths of :mod:`lightning_gm.nn.dbm` against brute-force enumeration of every layer: analytic
marginals, exact log Z, mean-field fixed points and bounds, centring reparametrisation."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_gm.estimators.dbm import dbm_log_partition_enumerate
from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.nn.dbm import BinaryDBM

SIZES = [[5, 4, 3], [4, 3, 3, 2], [5, 3]]


def random_dbm(sizes: list[int], seed: int, centered: bool = False, scale: float = 1.0) -> BinaryDBM:
    torch.manual_seed(seed)
    d = BinaryDBM(sizes, weight_std=scale, centered=centered).double()
    with torch.no_grad():
        for b in d.biases:
            b.normal_()
        if centered:
            for l, s in enumerate(sizes):
                d.set_offset(l, torch.rand(s, dtype=torch.float64))
    d.requires_grad_(False)
    return d


def all_states(sizes: list[int]) -> list[torch.Tensor]:
    """Every joint configuration, as one broadcast tensor per layer (row k of the product)."""
    configs = [enumerate_binary(s) for s in sizes]
    idx = torch.tensor(list(itertools.product(*[range(len(c)) for c in configs])))
    return [configs[l][idx[:, l]] for l in range(len(sizes))]


def brute_log_z(d: BinaryDBM) -> float:
    return float(torch.logsumexp(-d.energy(all_states(d.sizes)), 0))


def brute_log_p(d: BinaryDBM, v: torch.Tensor) -> torch.Tensor:
    hidden = all_states(d.sizes[1:])
    out = []
    for row in v:
        states = [row.expand(hidden[0].shape[0], -1), *hidden]
        out.append(torch.logsumexp(-d.energy(states), 0))
    return torch.stack(out) - brute_log_z(d)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("sizes", SIZES)
def test_exact_log_partition_matches_brute_force(sizes, centered) -> None:
    d = random_dbm(sizes, seed=len(sizes) + 10 * centered, centered=centered)
    exact = brute_log_z(d)
    for over in ("odd", "even", "auto"):
        assert dbm_log_partition_enumerate(d, over=over) == pytest.approx(exact, abs=1e-9)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("sizes", SIZES)
def test_log_marginal_sums_out_non_adjacent_layers(sizes, centered) -> None:
    d = random_dbm(sizes, seed=3, centered=centered)
    L = d.num_layers
    summed = [0, L] if L >= 2 else [0]
    states = all_states(d.sizes)
    kept_key = torch.cat([states[l] for l in range(L + 1) if l not in summed] + [torch.zeros(len(states[0]), 1)], -1)
    # brute force: group the joint configurations by their kept layers and log-sum-exp the rest
    neg_e = -d.energy(states)
    keys, inverse = torch.unique(kept_key, dim=0, return_inverse=True)
    brute = torch.full((len(keys),), -torch.inf, dtype=torch.float64)
    for k in range(len(keys)):
        brute[k] = torch.logsumexp(neg_e[inverse == k], 0)
    first = torch.stack([torch.nonzero(inverse == k)[0, 0] for k in range(len(keys))])
    analytic = d.log_marginal([s[first] for s in states], summed)
    torch.testing.assert_close(analytic, brute, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="non-adjacent"):
        d.log_marginal(states, [0, 1])


@pytest.mark.parametrize("sizes", SIZES)
def test_mean_field_reaches_a_fixed_point_that_raises_a_valid_bound(sizes) -> None:
    d = random_dbm(sizes, seed=5, scale=0.7)
    v = enumerate_binary(d.sizes[0])
    init = d.mean_field_init(v)
    bounds = [d.mean_field_bound(init)]
    mus = init
    for _ in range(60):  # one round at a time: the bound never decreases (block coordinate ascent)
        mus, _ = d.mean_field(v, iterations=1, tol=0.0, init=mus)
        bounds.append(d.mean_field_bound(mus))
    steps = torch.stack(bounds)
    assert torch.all(steps[1:] >= steps[:-1] - 1e-10)
    if d.num_layers >= 2:
        assert float((steps[-1] - steps[0]).max()) > 1e-3  # the updates do raise it
    # the converged means are a fixed point
    for l in range(1, d.num_layers + 1):
        torch.testing.assert_close(torch.sigmoid(d.layer_input(mus, l)), mus[l], rtol=0, atol=1e-7)
    # the early stop returns a fixed point too, in fewer rounds than the cap
    mus_tol, rounds = d.mean_field(v, iterations=500, tol=1e-9)
    assert rounds < 500
    torch.testing.assert_close(mus_tol[-1], mus[-1], rtol=0, atol=1e-6)
    # a lower bound on the exact log-likelihood, for every visible configuration
    bound = steps[-1] - dbm_log_partition_enumerate(d)
    exact = brute_log_p(d, v)
    assert torch.all(bound <= exact + 1e-9)
    assert float((exact - bound).mean()) < 2.0  # and not a vacuous one
    if d.num_layers == 1:  # an RBM: the factorial posterior is exact, so is the bound
        torch.testing.assert_close(bound, exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sizes", SIZES)
def test_shifting_centring_offsets_keeps_the_distribution(sizes) -> None:
    d = random_dbm(sizes, seed=7, centered=True)
    states = all_states(d.sizes)
    before = -d.energy(states)
    d.shift_offsets([torch.rand(s, dtype=torch.float64) for s in d.sizes])
    after = -d.energy(states)
    diff = after - before  # a constant: the normalised distribution is unchanged
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), rtol=0, atol=1e-9)


@pytest.mark.parametrize("sizes", [[3, 2, 2], [2, 2, 2, 1]])
def test_gibbs_sweeps_sample_the_model(sizes) -> None:
    d = random_dbm(sizes, seed=11, scale=0.8)
    torch.manual_seed(0)
    n = 4000
    states = [torch.bernoulli(torch.full((n, s), 0.5, dtype=torch.float64)) for s in d.sizes]
    for _ in range(30):
        states = d.gibbs_sweep(states)
    # exact visible marginal p(v_i = 1) by enumeration
    joint = all_states(d.sizes)
    p = torch.softmax(-d.energy(joint), 0)
    exact = (p.unsqueeze(-1) * joint[0]).sum(0)
    se = (exact * (1 - exact) / n).sqrt()
    assert torch.all((states[0].mean(0) - exact).abs() < 5 * se + 1e-3)
