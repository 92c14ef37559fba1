"""Fréchet distance (through torchmetrics with a custom feature module) against the closed form for two
Gaussians, and k-NN manifold precision/recall against hand-counted constructions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lightning_gm.estimators.sample_quality import frechet_distance, knn_radii, precision_recall


class Flatten64(nn.Module):
    """Features = the input itself (float64): the metric then sees exactly the statistics we construct."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).double()


def _with_moments(n: int, mean: Tensor, cov_sqrt: Tensor, gen: torch.Generator) -> Tensor:
    """``n`` points whose *sample* mean is ``mean`` and unbiased sample covariance is ``A A^T`` exactly."""
    d = mean.numel()
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z = z - z.mean(0)
    cov = z.T @ z / (n - 1)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(cov)).T  # whitened: sample covariance = I
    return mean + z @ cov_sqrt.T


def _random_rotation(d: int, gen: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("d", [1, 3, 8])
def test_identical_sets_have_zero_distance(seed: int, d: int) -> None:
    x = torch.randn(300, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 + 1
    batches = list(x.split(64))
    assert abs(frechet_distance(Flatten64(d), batches, batches)) < 1e-8


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("d,rotate", [(1, False), (4, False), (4, True), (10, True)])
def test_distance_matches_closed_form_for_two_gaussians(seed: int, d: int, rotate: bool) -> None:
    r"""Covariances :math:`R\,\mathrm{diag}(a)R^T` and :math:`R\,\mathrm{diag}(b)R^T` commute, so
    :math:`d^2 = \lVert\mu_1-\mu_2\rVert^2 + \sum_i (\sqrt{a_i} - \sqrt{b_i})^2`."""
    gen = torch.Generator().manual_seed(seed)
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    a = torch.rand(d, generator=gen, dtype=torch.float64) * 4 + 0.1
    b = torch.rand(d, generator=gen, dtype=torch.float64) * 4 + 0.1
    rot = _random_rotation(d, gen) if rotate else torch.eye(d, dtype=torch.float64)
    x1 = _with_moments(400, mu1, rot @ torch.diag(a.sqrt()), gen)
    x2 = _with_moments(500, mu2, rot @ torch.diag(b.sqrt()), gen)
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    got = frechet_distance(Flatten64(d), x1.split(100), x2.split(128))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_distance_matches_closed_form_for_non_commuting_covariances() -> None:
    r"""2-D: :math:`\Sigma_1 = I`, :math:`\Sigma_2` anything: :math:`\operatorname{tr}(\Sigma_2^{1/2}) = \sqrt{\operatorname{tr}\Sigma_2 + 2\sqrt{\det\Sigma_2}}`."""
    gen = torch.Generator().manual_seed(3)
    s2 = torch.tensor([[2.0, 0.7], [0.7, 0.5]], dtype=torch.float64)
    x1 = _with_moments(300, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), gen)
    x2 = _with_moments(300, torch.tensor([1.0, -2.0], dtype=torch.float64), torch.linalg.cholesky(s2), gen)
    tr_sqrt = math.sqrt(float(torch.trace(s2)) + 2 * math.sqrt(float(torch.linalg.det(s2))))
    expected = 5.0 + 2.0 + float(torch.trace(s2)) - 2 * tr_sqrt
    assert frechet_distance(Flatten64(2), [x1], [x2]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_radii_on_a_grid(k: int) -> None:
    """Points 0..m-1 on a line: the k-th smallest distance to the other points, listed by hand."""
    m = 12
    x = torch.arange(m, dtype=torch.float64).unsqueeze(1)
    expected = torch.tensor([sorted(abs(i - j) for j in range(m) if j != i)[k - 1] for i in range(m)], dtype=torch.float64)
    torch.testing.assert_close(knn_radii(x, k, chunk_size=5), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_identical_sets_have_precision_and_recall_one(seed: int, k: int) -> None:
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(seed))
    assert precision_recall(x, x.clone(), k=k, chunk_size=64) == (1.0, 1.0)


@pytest.mark.parametrize("d", [1, 3, 16])
@pytest.mark.parametrize("m,h,far", [(20, 5, 5), (30, 12, 3), (10, 10, 0)])
def test_precision_recall_closed_form_on_a_shifted_half_grid(d: int, m: int, h: int, far: int) -> None:
    """Real: the grid 0..m-1 on a line (k=1 radii: 1). Generated: h points at i+1/2 (i < h) plus ``far``
    points at 1000+i (k=1 radii: 1). A generated point is on the real manifold iff it is one of the h
    (distance 1/2 < 1); a real point j is on the generated manifold iff |j - (i+1/2)| <= 1 for some i < h,
    i.e. j <= h. So precision = h/(h+far), recall = min(h+1, m)/m. The line is rotated into d dimensions."""
    real = torch.arange(m, dtype=torch.float64)
    fake = torch.cat([torch.arange(h, dtype=torch.float64) + 0.5, 1000 + torch.arange(far, dtype=torch.float64)])
    rot = _random_rotation(d, torch.Generator().manual_seed(d))
    embed = lambda t: t.unsqueeze(1) * rot[0]  # noqa: E731  (a unit direction in R^d)
    offset = torch.randn(d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    p, r = precision_recall(embed(real) + offset, embed(fake) + offset, k=1, chunk_size=7)
    assert p == pytest.approx(h / (h + far))
    assert r == pytest.approx(min(h + 1, m) / m)


def test_disjoint_sets_have_zero_precision_and_recall() -> None:
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)


def test_bad_shapes_and_k_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="must be"):
        precision_recall(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="k must be in"):
        knn_radii(torch.zeros(4, 2), k=4)
