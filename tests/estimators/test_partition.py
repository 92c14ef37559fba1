"""Tests of :mod:`lightning_gm.estimators.partition`: enumeration helpers and exact log Z."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_gm.estimators.partition import (
    EnumerationTooLargeError,
    base_parameter,
    enumerate_binary,
    iter_binary_chunks,
    log_partition_bruteforce,
    log_partition_enumerate,
    logsumexp_over_binary,
    sample_rbm_exact,
)
from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM
from tests.estimators.conftest import random_rbm


@pytest.mark.parametrize("n", [0, 1, 3, 6])
def test_enumerate_binary_lists_every_configuration_once(n: int) -> None:
    x = enumerate_binary(n, dtype=torch.float32)
    assert x.shape == (2**n, n) and x.dtype == torch.float32
    codes = (x.long() * (2 ** torch.arange(n))).sum(1)
    assert torch.equal(codes, torch.arange(2**n))  # row k is the little-endian binary code of k


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 1000])
def test_iter_binary_chunks_concatenate_to_full_enumeration(chunk_size: int) -> None:
    chunks = list(iter_binary_chunks(5, chunk_size=chunk_size))
    assert all(len(c) <= chunk_size for c in chunks)
    assert torch.equal(torch.cat(chunks), enumerate_binary(5))


@pytest.mark.parametrize("chunk_size", [1, 7, 2**16])
def test_logsumexp_over_binary_matches_closed_form(chunk_size: int) -> None:
    # log sum_x exp(a'x) = sum_i softplus(a_i) for independent units
    a = torch.randn(9, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    value = logsumexp_over_binary(9, lambda x: x @ a, chunk_size=chunk_size)
    torch.testing.assert_close(value, F.softplus(a).sum())


@pytest.mark.parametrize("shape", [(2, 3), (5, 2), (3, 6), (7, 7), (8, 4), (1, 1)])
@pytest.mark.parametrize("over", ["auto", "visible", "hidden"])
def test_enumerate_equals_bruteforce_over_both_layers(shape: tuple[int, int], over: str) -> None:
    rbm = random_rbm(*shape, seed=sum(shape))
    expected = log_partition_bruteforce(rbm.energy, *shape)
    assert log_partition_enumerate(rbm, over=over, chunk_size=5) == pytest.approx(expected, abs=1e-10)


def test_bruteforce_matches_independent_units() -> None:
    # W = 0: Z = prod_i (1 + e^{b_i}) prod_j (1 + e^{c_j})
    rbm = random_rbm(4, 3, seed=1, scale=0.0)
    expected = float(F.softplus(rbm.b.detach()).sum() + F.softplus(rbm.c.detach()).sum())
    assert log_partition_bruteforce(rbm.energy, 4, 3) == pytest.approx(expected, abs=1e-12)
    assert log_partition_enumerate(rbm) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_model_enumerates_in_float64(seed: int) -> None:
    rbm32 = random_rbm(12, 10, seed=seed, scale=2.0).float()
    rbm64 = BernoulliRBM(12, 10, dtype=torch.float64)
    rbm64.load_state_dict({k: v.double() for k, v in rbm32.state_dict().items()})
    exact64 = log_partition_enumerate(rbm64)
    assert log_partition_enumerate(rbm32, over="hidden") == pytest.approx(exact64, abs=1e-9)
    assert log_partition_enumerate(rbm32, over="visible") == pytest.approx(exact64, abs=1e-9)
    assert rbm32.W.dtype == torch.float32  # the model itself is untouched


def test_gaussian_log_partition_matches_numerical_integral() -> None:
    # Z = \int exp(-F(v)) dv over R^2 (trapezoid on a wide grid) vs enumerating the 3 hidden units.
    g = torch.Generator().manual_seed(3)
    rbm = GaussianBernoulliRBM(2, 3, sigma=torch.tensor([0.6, 1.4]), dtype=torch.float64)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(2, 3, generator=g, dtype=torch.float64))
        rbm.b.copy_(torch.randn(2, generator=g, dtype=torch.float64))
        rbm.c.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    grid = torch.linspace(-20.0, 20.0, 801, dtype=torch.float64)
    vv = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        numeric = float(torch.logsumexp(-rbm.free_energy(vv), 0)) + 2 * math.log(float(grid[1] - grid[0]))
    assert log_partition_enumerate(rbm) == pytest.approx(numeric, abs=1e-8)
    with pytest.raises(ValueError, match="continuous"):
        log_partition_enumerate(rbm, over="visible")


def test_too_many_units_raise_value_error() -> None:
    rbm = BernoulliRBM(30, 26)
    with pytest.raises(ValueError, match="2\\^26"):
        log_partition_enumerate(rbm)
    with pytest.raises(EnumerationTooLargeError):
        log_partition_enumerate(BernoulliRBM(10, 8), over="visible", max_units=9)
    with pytest.raises(ValueError):
        log_partition_enumerate(BernoulliRBM(3, 2), over="both")  # type: ignore[arg-type]


def test_sample_rbm_exact_matches_exact_marginal() -> None:
    rbm = random_rbm(4, 3, seed=5)
    v_all = enumerate_binary(4)
    log_z = log_partition_enumerate(rbm)
    with torch.no_grad():
        p_v = torch.exp(-rbm.free_energy(v_all) - log_z)
    assert float(p_v.sum()) == pytest.approx(1.0, abs=1e-12)
    n = 40000
    v, h = sample_rbm_exact(rbm, n, generator=torch.Generator().manual_seed(6))
    assert v.shape == (n, 4) and h.shape == (n, 3)
    freq = torch.bincount((v.long() * (2 ** torch.arange(4))).sum(1), minlength=16).double() / n
    assert torch.all((freq - p_v).abs() < 5 * torch.sqrt(p_v * (1 - p_v) / n) + 1e-3)


def test_base_parameter_takes_a_number_or_every_unit_and_names_a_wrong_size() -> None:
    image = torch.arange(12.0).reshape(3, 4)
    got = base_parameter(image.reshape(-1), (3, 4), "base_visible_bias", "cpu")
    assert got.dtype == torch.float64 and torch.equal(got, image.double())  # flat in, image-shaped out
    assert torch.equal(base_parameter(2.5, (3,), "tau", "cpu"), torch.full((3,), 2.5, dtype=torch.float64))
    default = torch.tensor([1.0, -1.0])
    got = base_parameter(None, (2,), "base_mean", "cpu", default=default)
    got += 1  # a copy: the default is untouched
    assert torch.equal(default, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"base_visible_bias must have 12 entries \(shape \(3, 4\)\).*got shape \(5,\)"):
        base_parameter(torch.zeros(5), (3, 4), "base_visible_bias", "cpu")
