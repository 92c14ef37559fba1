"""The MMD estimators: a hand-computed value, exact zero (biased) and zero mean (unbiased) for equal
distributions, agreement with a brute-force double loop, gradients, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators.mmd import gaussian_kernel_mixture, mmd2, squared_distances

BANDWIDTHS = (1.0, 2.0)


def k(a: list[float], b: list[float], bandwidths=BANDWIDTHS) -> float:
    d2 = sum((u - v) ** 2 for u, v in zip(a, b))
    return sum(math.exp(-d2 / (2 * s * s)) for s in bandwidths)


def test_hand_computed_three_points():
    # x = {0, 1}, y = {3} on the line: every kernel value written out
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    k0, k1, k4, k9 = (sum(math.exp(-d / (2 * s * s)) for s in BANDWIDTHS) for d in (0, 1, 4, 9))
    expected = (2 * k0 + 2 * k1) / 4 + k0 - 2 * (k9 + k4) / 2
    assert mmd2(x, y, BANDWIDTHS).item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_unbiased():
    x = [[0.0, 0.0], [1.0, 0.0]]
    y = [[0.0, 2.0], [2.0, 2.0], [1.0, 1.0]]
    xx = sum(k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / (2 * 1)
    yy = sum(k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j) / (3 * 2)
    xy = sum(k(a, b) for a in x for b in y) / (2 * 3)
    got = mmd2(torch.tensor(x), torch.tensor(y), BANDWIDTHS, unbiased=True).item()
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("unbiased", [False, True])
def test_matches_double_loop(unbiased):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    xs, ys = x.tolist(), y.tolist()
    off = 1 if unbiased else 0
    xx = sum(k(a, b, (0.5, 3.0)) for i, a in enumerate(xs) for j, b in enumerate(xs) if not (unbiased and i == j))
    yy = sum(k(a, b, (0.5, 3.0)) for i, a in enumerate(ys) for j, b in enumerate(ys) if not (unbiased and i == j))
    xy = sum(k(a, b, (0.5, 3.0)) for a in xs for b in ys)
    expected = xx / (4 * (4 - off)) + yy / (5 * (5 - off)) - 2 * xy / 20
    assert mmd2(x, y, (0.5, 3.0), unbiased=unbiased).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_biased_is_exactly_zero_for_the_same_sample():
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert mmd2(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert mmd2(x, x.flip(0)).item() == pytest.approx(0.0, abs=1e-12)  # the same multiset in another order
    assert mmd2(x, x + 1.0).item() > 1e-3


def test_unbiased_is_zero_in_expectation_for_equal_distributions():
    """Over many independent pairs of samples from the same distribution the unbiased estimate averages to
    0 within its standard error, while the biased one is clearly positive (so the test can tell them apart)."""
    g = torch.Generator().manual_seed(123)
    n_rep, m, d = 400, 10, 3
    u, b = [], []
    for _ in range(n_rep):
        x, y = torch.randn(m, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
        u.append(mmd2(x, y, BANDWIDTHS, unbiased=True).item())
        b.append(mmd2(x, y, BANDWIDTHS, unbiased=False).item())
    u_t, b_t = torch.tensor(u), torch.tensor(b)
    se_u, se_b = u_t.std() / math.sqrt(n_rep), b_t.std() / math.sqrt(n_rep)
    assert abs(u_t.mean().item()) < 4 * se_u.item()
    assert b_t.mean().item() > 10 * se_b.item()  # the V-statistic's positive bias
    assert (u_t < 0).any()  # the U-statistic can be negative


@pytest.mark.parametrize("unbiased", [False, True])
def test_gradients(unbiased):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mmd2(a, b, (0.7, 2.0), unbiased=unbiased), (x, y))


def test_gradient_is_finite_at_coincident_points():
    x = torch.zeros(3, 2, dtype=torch.float64)
    y = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    mmd2(x, y).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().max() == 0


def test_kernel_and_distances():
    x, y = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert squared_distances(x, y).flatten().tolist() == pytest.approx([0.0, 25.0])
    K = gaussian_kernel_mixture(x, y, (5.0,))
    assert K.flatten().tolist() == pytest.approx([1.0, math.exp(-0.5)])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mmd2(torch.zeros(3, 2), torch.zeros(3, 2), ()), "bandwidths"),
        (lambda: mmd2(torch.zeros(3, 2), torch.zeros(3, 2), (1.0, -2.0)), "bandwidths"),
        (lambda: mmd2(torch.zeros(3, 2), torch.zeros(3, 4)), "feature sizes"),
        (lambda: mmd2(torch.zeros(1, 2), torch.zeros(3, 2), unbiased=True), "at least 2"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
