"""NADE and MADE against exact answers: normalisation over all 2^D binary vectors, autoregressive
Jacobians, NADE's O(DH) recursion against the naive definition, ancestral sampling frequencies."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.models import MADEDensity, NADE
from lightning_gm.models.autoregressive import AutoregressiveBinaryModel


D = 6
MODELS: dict[str, Callable[[], AutoregressiveBinaryModel]] = {
    "nade-natural": lambda: NADE((D,), hidden=7, ordering="natural", init_std=1.0),
    "nade-reversed": lambda: NADE((D,), hidden=7, ordering="reversed", init_std=1.0),
    "nade-random": lambda: NADE((D,), hidden=7, ordering="random", seed=3, init_std=1.0),
    "made-natural": lambda: MADEDensity((D,), hidden=(16,), ordering="natural", hidden_degrees="sequential"),
    "made-random-1mask": lambda: MADEDensity((D,), hidden=(16, 16), ordering="random", seed=2),
    "made-4masks": lambda: MADEDensity((D,), hidden=(16,), ordering="random", hidden_degrees="random", num_masks=4),
    "made-degrees-only": lambda: MADEDensity((D,), hidden=(16,), ordering="natural", hidden_degrees="random", num_masks=3),
}


def _build(name: str, seed: int = 0) -> AutoregressiveBinaryModel:
    torch.manual_seed(seed)
    model = MODELS[name]().double()
    with torch.no_grad():  # make the conditionals far from uniform
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def _orderings(model: AutoregressiveBinaryModel) -> list[tuple[int, torch.Tensor]]:
    """(mask index, generation order) of every connectivity of the model."""
    if isinstance(model, NADE):
        return [(0, model.order)]
    out = []
    for k in range(model.num_masks):
        model.use_mask(k)
        out.append((k, model.made.order.clone()))
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("seed", [0, 1])
def test_probabilities_over_all_binary_vectors_sum_to_one(name, seed):
    model = _build(name, seed)
    x = enumerate_binary(D)
    logp = model.log_prob(x)
    assert torch.logsumexp(logp, 0).item() == pytest.approx(0.0, abs=1e-10)
    assert logp.std() > 0.5  # a non-trivial distribution, not uniform
    if isinstance(model, MADEDensity):  # each mask alone is normalised too: the mixture is a real density
        for k, _ in _orderings(model):
            model.use_mask(k)
            single = torch.distributions.Bernoulli(logits=model.logits(x)).log_prob(x).sum(-1)
            assert torch.logsumexp(single, 0).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_jacobian_is_strictly_lower_triangular_in_the_ordering(name):
    model = _build(name)
    for k, order in _orderings(model):
        if isinstance(model, MADEDensity):
            model.use_mask(k)
        for x in (torch.rand(D, dtype=torch.float64), torch.bernoulli(torch.full((D,), 0.5, dtype=torch.float64))):
            jac = torch.autograd.functional.jacobian(lambda v: model.logits(v[None])[0], x)  # [out, in]
            sorted_jac = jac[order][:, order]
            assert torch.equal(torch.triu(sorted_jac), torch.zeros_like(sorted_jac)), (k, sorted_jac)
            # and the model is not trivially independent: the last conditional sees earlier inputs
            assert sorted_jac[-1, :-1].abs().sum() > 0


def test_nade_recursion_matches_the_definition():
    model = _build("nade-random")
    x = torch.bernoulli(torch.full((5, D), 0.5, dtype=torch.float64))
    W, V, b, c, o = model.W, model.V, model.b, model.c, model.order
    naive = torch.empty(5, D, dtype=torch.float64)
    for d in range(D):  # h_d = sigma(c + W[:, <d] x_{o<d}); eta = b_d + V_d h_d, in generation order
        h = torch.sigmoid(c + x[:, o[:d]] @ W[:, :d].T)
        naive[:, o[d]] = b[d] + h @ V[d]
    torch.testing.assert_close(model.logits(x), naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["nade-random", "made-4masks"])
def test_ancestral_samples_follow_the_model(name):
    model = _build(name).float()
    d = D
    x = enumerate_binary(d, dtype=torch.float32)
    p = model.log_prob(x).double().exp()
    torch.manual_seed(0)
    n = 40_000
    s = model.sample(n)
    codes = (s.long() * (2 ** torch.arange(d))).sum(-1)  # enumerate_binary: out[k, j] = (k >> j) & 1
    freq = torch.bincount(codes, minlength=2**d).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-3).all(), (freq - p).abs().max()


def test_made_cycles_masks_during_training_and_validates_its_config():
    model = MADEDensity((D,), hidden=(16,), ordering="random", num_masks=3)
    orders = [o.tolist() for _, o in _orderings(model)]
    assert len({tuple(o) for o in orders}) == 3  # three different orderings
    with pytest.raises(ConfigError, match="num_masks=4 needs something to resample"):
        MADEDensity((D,), ordering="natural", hidden_degrees="sequential", num_masks=4)
    with pytest.raises(ConfigError, match="test_num_masks"):
        MADEDensity((D,), ordering="random", num_masks=2, test_num_masks=3)


def test_made_mixture_is_the_mean_of_the_mask_probabilities():
    model = _build("made-4masks")
    x = enumerate_binary(D)[::5]
    per_mask = []
    for k in range(4):
        model.use_mask(k)
        per_mask.append(torch.distributions.Bernoulli(logits=model.logits(x)).log_prob(x).sum(-1).exp())
    torch.testing.assert_close(model.log_prob(x).exp(), torch.stack(per_mask).mean(0), rtol=1e-10, atol=0)


def test_made_state_dict_round_trip_gives_the_same_log_prob():
    model = _build("made-4masks")
    x = enumerate_binary(D)
    before = model.log_prob(x)
    clone = MADEDensity((D,), hidden=(16,), ordering="random", hidden_degrees="random", num_masks=4).double()
    clone.load_state_dict(model.state_dict())
    clone.mask_index = model.mask_index
    torch.testing.assert_close(clone.log_prob(x), before, rtol=0, atol=1e-12)
