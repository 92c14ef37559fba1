r"""Sample quality in a feature space: the Fréchet distance and k-NN manifold precision/recall (no Lightning).

**Fréchet distance** between Gaussians fitted to the features :math:`\phi` of real and generated images
(computed by torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` with a custom feature
module; no Inception network, no ``torch-fidelity``, no scipy):

.. math::

    d^2 = \lVert \mu_r - \mu_g \rVert^2 + \operatorname{tr}\big(\Sigma_r + \Sigma_g - 2 (\Sigma_r \Sigma_g)^{1/2}\big).

With a small MNIST classifier as :math:`\phi` this is *not* the Inception FID; call it what it is
(e.g. ``fd_lenet``).

**Precision and recall** (Kynkäänniemi et al. 2019): each feature vector :math:`\phi` of a set
:math:`\Phi` gets the radius :math:`\mathrm{NND}_k(\phi)`, the distance to its ``k``-th nearest neighbour
in :math:`\Phi` (itself excluded); the manifold of :math:`\Phi` is the union of these balls, and

.. math::

    f(\phi, \Phi) = \mathbb 1\big[\exists \phi' \in \Phi: \lVert \phi - \phi' \rVert_2 \le \mathrm{NND}_k(\phi')\big],
    \quad
    \mathrm{precision} = \frac1{|\Phi_g|} \sum_{\phi_g \in \Phi_g} f(\phi_g, \Phi_r), \quad
    \mathrm{recall} = \frac1{|\Phi_r|} \sum_{\phi_r \in \Phi_r} f(\phi_r, \Phi_g).

Distances are computed in row chunks, so memory is ``chunk_size x N`` whatever ``N``.

References: Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter (2017), GANs trained by a two time-scale
update rule converge to a local Nash equilibrium (FID); Kynkäänniemi, Karras, Laine, Lehtinen & Aila
(2019), Improved precision and recall metric for assessing generative models.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["PrecisionRecall", "knn_radii", "manifold_coverage", "precision_recall", "frechet_distance",
           "frechet_metric"]


class PrecisionRecall(NamedTuple):
    """k-NN manifold precision (fraction of generated samples on the real manifold) and recall
    (fraction of real examples on the generated manifold)."""

    precision: float
    recall: float


def _pairwise(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``(len(a), len(b))`` (matrix-product form; clamped at 0 before the root)."""
    sq = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)
    return sq.clamp_min(0.0).sqrt()


def knn_radii(features: Tensor, k: int = 3, chunk_size: int = 1000) -> Tensor:
    r""":math:`\mathrm{NND}_k` of every row of ``features`` ``(N, F)`` within the set, itself excluded: ``(N,)``."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} feature vectors, got {k}")
    out = []
    for start in range(0, n, chunk_size):
        d = _pairwise(features[start : start + chunk_size], features)
        # the k+1 smallest include the point itself (distance ~0): the (k+1)-th is the k-th neighbour
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def manifold_coverage(query: Tensor, reference: Tensor, radii: Tensor, chunk_size: int = 1000) -> Tensor:
    r""":math:`f(q, \Phi)` for each row ``q`` of ``query``: is it inside some ball ``(reference[j], radii[j])``?
    Boolean ``(len(query),)``."""
    out = []
    for start in range(0, query.shape[0], chunk_size):
        d = _pairwise(query[start : start + chunk_size], reference)
        out.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk_size: int = 1000) -> PrecisionRecall:
    """k-NN manifold precision and recall of generated features ``fake`` ``(M, F)`` against real ``real``
    ``(N, F)`` (computed in float64)."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features must be (N, F) and (M, F); got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    real, fake = real.double(), fake.double()
    r_real, r_fake = knn_radii(real, k, chunk_size), knn_radii(fake, k, chunk_size)
    precision = manifold_coverage(fake, real, r_real, chunk_size).double().mean()
    recall = manifold_coverage(real, fake, r_fake, chunk_size).double().mean()
    return PrecisionRecall(float(precision), float(recall))


def frechet_metric(feature: nn.Module) -> "torchmetrics.image.fid.FrechetInceptionDistance":  # noqa: F821
    """torchmetrics' Fréchet metric on the features of ``feature`` (a module ``x -> (N, F)``, ideally with a
    ``num_features`` attribute; else torchmetrics infers it with a dummy ``(1, 1, 28, 28)`` input).

    Every process keeps its own statistics (``sync_on_compute=False``): the callers feed the same data
    on every process, so a sum over processes would count it twice."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=feature, normalize=True, input_img_size=(1, 28, 28),
                                    sync_on_compute=False)


def frechet_distance(feature: nn.Module, real: Iterable[Tensor], fake: Iterable[Tensor]) -> float:
    """Fréchet distance between the ``feature`` statistics of two streams of batches (each batch any shape
    ``feature`` accepts). Uses :func:`frechet_metric`; returns :math:`d^2` as a float (float64 maths)."""
    metric = frechet_metric(feature)
    for batch in real:
        metric.update(batch, real=True)
    for batch in fake:
        metric.update(batch, real=False)
    return float(metric.compute())
