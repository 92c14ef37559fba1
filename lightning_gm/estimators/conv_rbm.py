r"""Log-partition functions of the convolutional RBM with probabilistic max-pooling: exact and AIS.

Both rest on the closed-form free energy of :class:`~lightning_gm.nn.conv_rbm.ConvolutionalRBM`
(every pooling block summed out),

.. math:: \log Z = \log \sum_{v} e^{-F(v)},

so the exact value enumerates the binary visibles (:func:`conv_rbm_log_partition_enumerate`, tiny
images only) and AIS (:class:`ConvRBMAnnealingPath` through the one entry point
:func:`~lightning_gm.estimators.ais.ais_log_partition`) anneals from a base-rate model as for the RBM
(Salakhutdinov & Murray 2008): the intermediate distributions are the marginals of

.. math::

    p_\beta(v, h) \propto \exp\Big((1-\beta)\, b_A^\top v + \beta\big(c^\top v + \textstyle\sum_{k,ij} h^k_{ij} I^k_{ij}(v)\big)\Big)
    \ \text{(pooling constraint kept)}, \qquad
    \log f_\beta(v) = (1-\beta)\, b_A^\top v + \beta\, c^\top v
      + \sum_{k,\alpha} \log\Big(1 + \sum_{(i,j) \in B_\alpha} e^{\beta I^k_{ij}}\Big),

(:math:`c^\top v` the per-channel visible bias times the channel sums), with
:math:`\log Z_0 = \sum_i \operatorname{softplus}(b_{A,i}) + \sum_{k,\alpha} \log(1 + |B_\alpha|)` and the
Gibbs transition :math:`h \sim \text{block softmax}(\beta I(v))`,
:math:`v \sim \sigma\big((1-\beta) b_A + \beta(c + \sum_k W^k * h^k)\big)`.

References:
    Neal (2001), Annealed importance sampling; Salakhutdinov & Murray (2008), On the quantitative analysis
    of deep belief networks; Lee, Grosse, Ranganath & Ng (2009) (the model).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gm.estimators.ais import AnnealingPath, LastStateCache
from lightning_gm.estimators.partition import (
    MAX_ENUMERATION_UNITS,
    base_parameter,
    check_enumerable,
    frozen_copy,
    logsumexp_over_binary,
)
from lightning_gm.nn.conv_rbm import ConvolutionalRBM

__all__ = ["ConvRBMAnnealingPath", "conv_rbm_log_partition_enumerate"]


def conv_rbm_log_partition_enumerate(rbm: ConvolutionalRBM, max_units: int = 20) -> float:
    r"""Exact :math:`\log Z = \log\sum_{v \in \{0,1\}^{C_{in} H W}} e^{-F(v)}` of a binary-visible conv RBM (float64).

    Args:
        rbm: the model (binary visibles).
        max_units: refuse more than this many visible units (:math:`2^{D}` free energies).

    Returns:
        :math:`\log Z` as a float.
    """
    if rbm.visible != "binary":
        raise ValueError("exact enumeration needs binary visibles")
    check_enumerable(rbm.n_visible, min(max_units, MAX_ENUMERATION_UNITS), "conv_rbm_log_partition_enumerate")
    m = frozen_copy(rbm)
    with torch.no_grad():
        return float(logsumexp_over_binary(rbm.n_visible, lambda v: -m.free_energy(v), device=rbm.W.device))


class ConvRBMAnnealingPath(AnnealingPath[Tensor]):
    r"""AIS path from a base-rate model to a binary-visible convolutional RBM (see the module docstring).

    Float64 on a detached copy of the parameters. The state is the visible image ``(runs, C_in, H, W)``.

    Args:
        rbm: the target model (binary visibles).
        base_visible_bias: :math:`b_A`, ``(C_in * H * W,)`` or ``(C_in, H, W)``; default zeros (uniform).
            The data's log-odds (:func:`~lightning_gm.estimators.ais.base_rate_log_odds`) are a much better start.

    References:
        Salakhutdinov & Murray (2008); Lee et al. (2009).
    """

    def __init__(self, rbm: ConvolutionalRBM, base_visible_bias: Optional[Tensor] = None) -> None:
        if not isinstance(rbm, ConvolutionalRBM) or rbm.visible != "binary":
            raise TypeError("ConvRBMAnnealingPath needs a ConvolutionalRBM with binary visibles")
        self.rbm = frozen_copy(rbm)
        shape = (rbm.in_channels, *rbm.image_size)
        self.b_base = base_parameter(base_visible_bias, shape, "base_visible_bias", rbm.W.device)
        self._c_map = self.rbm.c.view(-1, 1, 1).expand(shape)
        # run_ais calls log_ratio(x_k) then transition(x_k) on the same tensor: convolve once
        self._logits = LastStateCache(self.rbm.detector_logits)

    def log_z_base(self) -> float:
        r""":math:`\sum_i \operatorname{softplus}(b_{A,i}) + K \sum_\alpha \log(1 + |B_\alpha|)`."""
        blocks = torch.log1p(self.rbm.block_sizes()).sum() * self.rbm.n_filters
        return float(F.softplus(self.b_base).sum() + blocks)

    def sample_base(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.b_base).expand(n, *self.b_base.shape), generator=generator)

    def _linear(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return (v * self.b_base).sum((1, 2, 3)), (v * self._c_map).sum((1, 2, 3))

    def log_unnormalized(self, state: Tensor, beta: float) -> Tensor:
        v = state.to(torch.float64)
        base, lin = self._linear(v)
        return (1.0 - beta) * base + beta * lin + self.rbm.block_log_partition(beta * self._logits(v)).sum((1, 2, 3))

    def log_ratio(self, state: Tensor, beta_from: float, beta_to: float) -> Tensor:
        v = state.to(torch.float64)
        base, lin = self._linear(v)
        x = self._logits(v)
        blocks = self.rbm.block_log_partition(beta_to * x) - self.rbm.block_log_partition(beta_from * x)
        return (beta_to - beta_from) * (lin - base) + blocks.sum((1, 2, 3))

    def transition(self, state: Tensor, beta: float, generator: Optional[torch.Generator] = None) -> Tensor:
        v = state.to(torch.float64)
        h, _ = self.rbm.sample_hiddens(v, generator, logits=beta * self._logits(v))
        logits = (1.0 - beta) * self.b_base + beta * self.rbm.visible_input(h)
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)
