r"""The subspace RBM (Tomczak & Gonczarek 2017) as a LightningModule, on the RBM machinery.

:class:`SubspaceRBM` reuses :class:`~lightning_gm.models.rbm.RBMModelBase` (CD-k/PCD with persistent chains
in checkpoints, weight cost, sparsity on the gates, momentum warm-up, data initialisation, free-energy gap,
test :math:`\log Z` and its interval through :class:`~lightning_gm.models.energy.PartitionMixin`) with the maths
of :class:`~lightning_gm.nn.subspace_rbm.SubspaceRBMNet`; it supplies the two :math:`\log Z` hooks, an exact
enumeration and an :class:`~lightning_gm.estimators.ais.AnnealingPath`.

.. math::

    \log p(x) = b^\top x + \sum_j \operatorname{logaddexp}\Big(K\log 2,\ c_j + \sum_k
        \operatorname{softplus}\big(A_{jk} + \textstyle\sum_i W_{ijk} x_i\big)\Big) - \log Z.

References:
    Tomczak & Gonczarek (2017), Learning invariant features using subspace restricted Boltzmann machine;
    Tieleman (2008); Salakhutdinov & Murray (2008).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AnnealingPath, base_rate_log_odds
from lightning_gm.estimators.rbm_variants import SubspaceRBMAnnealingPath, subspace_rbm_log_partition_enumerate
from lightning_gm.models.rbm import RBMModelBase, cd_step
from lightning_gm.nn.subspace_rbm import SubspaceRBMNet

__all__ = ["SubspaceRBM"]


class SubspaceRBM(RBMModelBase):
    r"""Subspace RBM (family ``rbm``) on binary data, trained by CD-k or PCD.

    .. math::

        E(x, h, S) = -\sum_{ijk} W_{ijk} x_i h_j S_{jk} - b^\top x - c^\top h - \sum_{jk} A_{jk} h_j S_{jk}

    with ``n_hidden`` gates :math:`h` and ``subspace_size`` subspace units per gate; parameters
    :math:`DMK + D + M + MK`. Gibbs sampling draws the gates with the subspace summed out, then the subspace
    units given the gates, then the visibles (:class:`~lightning_gm.nn.subspace_rbm.SubspaceRBMNet`). The
    sparsity penalty, when used, acts on the gates' log-odds. Test: :math:`\log Z` exact by enumeration when
    :math:`\min(D, M(K+1)) \le` ``ais.exact_max_units``, else AIS from the data's base-rate model
    (:class:`~lightning_gm.estimators.rbm_variants.SubspaceRBMAnnealingPath`). Pictures (with
    :class:`~lightning_gm.callbacks.RBMPictures`): ``filters`` are the ``K`` filters :math:`W_{:jk}` of each
    gate one after the other (with ``K`` dividing 10, every grid row holds whole subspaces), and ``fantasy``.

    Args:
        n_hidden: gate units ``M``.
        subspace_size: subspace units per gate ``K``.
        **kwargs: the other arguments of :class:`~lightning_gm.models.rbm.RBMModelBase` (``cd``, ``penalties``,
            ``ais``, ...), by keyword; ``ais.exact_max_units`` bounds the smaller side (``D`` visibles or
            ``M(K+1)`` gate and subspace units).

    References:
        Tomczak & Gonczarek (2017); Hinton (2002); Tieleman (2008); Salakhutdinov & Murray (2008).
    """

    monitor = "val/pll"
    monitor_mode = "max"

    def __init__(self, n_hidden: int = 100, subspace_size: int = 5, **kwargs: Any) -> None:
        if subspace_size < 1:
            raise ConfigError(f"model.init_args.subspace_size: must be >= 1, got {subspace_size!r}")
        self.subspace_size = subspace_size
        super().__init__(n_hidden=n_hidden, **kwargs)

    rbm: SubspaceRBMNet  # type: ignore[assignment]

    def _make_rbm(self, weight_std: float) -> SubspaceRBMNet:  # type: ignore[override]
        return SubspaceRBMNet(self.data_dim, self.n_hidden, self.subspace_size, weight_std=weight_std)

    # ------------------------------------------------------------------ log Z
    def exact_log_partition(self) -> Optional[float]:
        if min(self.data_dim, self.n_hidden * (self.subspace_size + 1)) > self.ais.exact_max_units:
            return None
        return subspace_rbm_log_partition_enumerate(self.rbm, max_units=max(self.ais.exact_max_units, 1))

    def annealing_path(self) -> AnnealingPath:
        return SubspaceRBMAnnealingPath(self.rbm, self.ais_base)

    # ------------------------------------------------------------------ data and training
    def _init_from_data(self, mean: Tensor, sq_mean: Tensor) -> None:
        with torch.no_grad():
            log_odds = base_rate_log_odds(mean.unsqueeze(0))
            if self.init_visible_bias:
                self.rbm.b.copy_(log_odds.to(self.rbm.b))
            self.ais_base.copy_(log_odds.to(self.ais_base))

    def _monitor_terms(self, v: Tensor) -> dict[str, Tensor]:
        return {"pll": self.rbm.pseudo_log_likelihood(v).mean()}

    def _negative(self, v: Tensor, data_logits: Optional[Tensor] = None) -> Tensor:
        if not self.cd.persistent:
            return cd_step(self.rbm, v, self.cd.k, None, self.generator)  # type: ignore[arg-type]
        if not bool(self.chains_ready):
            with torch.no_grad():  # chains start at the visible marginals with every gate off
                self.chains.copy_(self.rbm.sample_visibles(self.rbm.zero_hidden(self.cd.chains), generator=self.generator))
                self.chains_ready.fill_(True)
        return cd_step(self.rbm, v, self.cd.k, self.chains, self.generator)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ sampling and pictures: the base's, on gated hiddens
    def zero_hidden(self, n: int) -> Tensor:
        """Every gate off, ``(n, M, K)``: sampling starts at the gates-off visible marginals."""
        return self.rbm.zero_hidden(n)

    def hidden_means(self, v: Tensor) -> Tensor:
        """:math:`E[z \\mid v]`, the gated subspace means ``(B, M, K)`` the up-down pass sends down."""
        return self.rbm.mean_z(v)

    def filter_rows(self) -> Tensor:
        """:math:`W_{:jk}`, the ``K`` filters of each gate consecutive, ``(M K, D)``."""
        return self.rbm.W.detach().permute(1, 2, 0).reshape(-1, self.data_dim)
