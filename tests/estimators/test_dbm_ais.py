"""DBM AIS (:mod:`lightning_gm.estimators.dbm`) against exact log Z by enumeration on tiny trained DBMs,
and the annealing path's endpoints against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators.ais import base_rate_log_odds
from lightning_gm.estimators.ais import ais_log_partition
from lightning_gm.estimators.dbm import DBMAnnealingPath, dbm_log_partition_enumerate
from lightning_gm.estimators.partition import enumerate_binary, logsumexp_over_binary
from lightning_gm.nn.dbm import BinaryDBM


def toy_data(n: int, d: int, seed: int) -> torch.Tensor:
    """Noisy copies of three binary prototypes: structured data a DBM has something to learn from."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.bernoulli(torch.full((3, d), 0.5), generator=g)
    x = protos[torch.randint(0, 3, (n,), generator=g)]
    flip = torch.bernoulli(torch.full_like(x, 0.1), generator=g)
    return (x + flip) % 2


def trained_dbm(sizes: list[int], steps: int = 300, seed: int = 0, centered: bool = False) -> tuple[BinaryDBM, torch.Tensor]:
    """A few hundred steps of mean-field + PCD on toy data: non-trivial, data-shaped weights."""
    torch.manual_seed(seed)
    data = toy_data(500, sizes[0], seed)
    d = BinaryDBM(sizes, weight_std=0.1, centered=centered)
    with torch.no_grad():
        d.biases[0].copy_(base_rate_log_odds(data).float())
        if centered:
            d.set_offset(0, data.mean(0))
            for l in range(1, len(sizes)):
                d.set_offset(l, torch.full((sizes[l],), 0.5))
    opt = torch.optim.SGD(d.parameters(), lr=0.1, momentum=0.5)
    chains = [torch.bernoulli(torch.full((100, s), 0.5)) for s in sizes]
    for step in range(steps):
        v = data[torch.randint(0, len(data), (50,))]
        mus, _ = d.mean_field(v, iterations=10, tol=1e-5)
        mus = [m.detach() for m in mus]
        with torch.no_grad():
            chains = d.gibbs_sweep(chains)
        loss = d.energy(mus).mean() - d.energy(chains).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.requires_grad_(False)
    return d, data


@pytest.fixture(scope="module")
def models() -> dict:
    out = {tuple(s): trained_dbm(s) for s in ([8, 6, 4], [8, 5, 4, 3])}
    out["centred"] = trained_dbm([8, 6, 4], steps=150, seed=3, centered=True)
    return out


SPLITS = [((8, 6, 4), None), ((8, 5, 4, 3), None), ((8, 6, 4), [1]), ((8, 5, 4, 3), [1, 3]), ("centred", None),
          ("centred", [1])]


@pytest.mark.parametrize("sizes,summed", SPLITS)
def test_path_endpoints_have_the_closed_form_partition_functions(models, sizes, summed) -> None:
    """Whichever layers are summed out (the default visible and top layers, or the odd ones, keeping v), and for a
    centred DBM: the kept layers' log f sums to log Z_0 at beta = 0 and to the DBM's log Z at beta = 1."""
    d, data = models[sizes]
    path = DBMAnnealingPath(d, base_rate_log_odds(data), summed=summed)
    n_kept = sum(d.sizes[l] for l in path.kept)

    def log_f(beta: float):
        def fn(x: torch.Tensor) -> torch.Tensor:
            state: list = [None] * len(d.sizes)
            start = 0
            for l in path.kept:
                state[l] = x[:, start : start + d.sizes[l]]
                start += d.sizes[l]
            return path.log_unnormalized(state, beta)
        return fn

    # beta = 0: the base model's Z_0; beta = 1: the DBM's Z
    assert float(logsumexp_over_binary(n_kept, log_f(0.0))) == pytest.approx(path.log_z_base(), abs=1e-9)
    assert float(logsumexp_over_binary(n_kept, log_f(1.0))) == pytest.approx(dbm_log_partition_enumerate(d), abs=1e-9)
    assert path.summed == (summed or [0, d.num_layers])  # default: the visible and top layers are summed out
    # the fused float32 step: its increment is the float64 log f ratio, to float32's precision of the difference
    x = enumerate_binary(n_kept)
    state: list = [None] * len(d.sizes)
    start = 0
    for l in path.kept:
        state[l] = x[:, start : start + d.sizes[l]]
        start += d.sizes[l]
    for lo, hi in ((0.2, 0.6), (0.9, 0.9001), (0.6, 0.2)):
        want = log_f(hi)(x) - log_f(lo)(x)
        exact = DBMAnnealingPath(d, base_rate_log_odds(data), summed=summed, dtype=torch.float64)
        torch.testing.assert_close(exact.log_ratio(state, lo, hi), want, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(path.log_ratio([t if t is None else t.float() for t in state], lo, hi), want,
                                   rtol=1e-5, atol=1e-5 * abs(hi - lo))


def test_summed_layers_must_not_touch() -> None:
    with pytest.raises(ValueError, match="non-adjacent"):
        DBMAnnealingPath(BinaryDBM([4, 3, 2]), summed=[0, 1])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sizes", [(8, 6, 4), (8, 5, 4, 3)])
def test_ais_is_within_a_tenth_of_a_nat_of_exact_log_z(models, sizes, seed) -> None:
    d, data = models[sizes]
    exact = dbm_log_partition_enumerate(d)
    assert float(d.W(1).abs().max()) > 0.5  # trained: non-trivial weights
    assert abs(exact - sum(d.sizes) * math.log(2.0)) > 1.0  # and far from the uniform model's log Z
    result = ais_log_partition(DBMAnnealingPath(d, base_rate_log_odds(data)), runs=100, steps=1000,
                               generator=torch.Generator().manual_seed(seed))
    assert abs(result.log_z - exact) < 0.1
    assert result.log_z_stderr < 0.1 and result.steps == 1000


def test_ais_handles_a_centred_dbm() -> None:
    d, data = trained_dbm([8, 6, 4], steps=150, seed=3, centered=True)
    exact = dbm_log_partition_enumerate(d)
    result = ais_log_partition(DBMAnnealingPath(d, base_rate_log_odds(data)), runs=100, steps=1000,
                               generator=torch.Generator().manual_seed(0))
    assert abs(result.log_z - exact) < 0.1


def test_bad_arguments_are_named() -> None:
    d = BinaryDBM([4, 3, 2])
    with pytest.raises(ValueError, match="runs"):
        ais_log_partition(DBMAnnealingPath(d), runs=0)
    with pytest.raises(ValueError, match="base_visible_bias"):
        DBMAnnealingPath(d, torch.zeros(5))
    with pytest.raises(ValueError, match="max_units"):
        dbm_log_partition_enumerate(BinaryDBM([30, 30, 30]), max_units=20)
    assert enumerate_binary(0).shape == (1, 0)
