r"""The pretraining half of the DBM recipe (Salakhutdinov & Hinton 2009, 2012): the modified RBMs trained greedily
before joint training, and their composition into the DBM, as the mixin :class:`DBMPretraining` of
:class:`~lightning_gm.models.dbm.DBM`.

Phases: ``epochs_per_layer`` :math:`(e_1, \dots, e_L)` gives phase ``l - 1`` (pretraining RBM ``l``) the epochs
:math:`[\sum_{m<l} e_m, \sum_{m \le l} e_m)`, and phase ``L`` (joint training) every epoch from
``joint_start`` :math:`= \sum_l e_l` (zeros = no pretraining). A zero entry skips that RBM.

1. **Pretraining** of modified RBMs :math:`R_l` (weights :math:`R_l`, visible bias :math:`\beta_l`, hidden bias
   :math:`\gamma_l`) by CD-k on the hidden probabilities of the RBM below:

   * bottom (:math:`l = 1`), doubled bottom-up input: :math:`p(h \mid v) = \sigma(2R_1^\top v + \gamma_1)`,
     :math:`p(v \mid h) = \sigma(R_1 h + \beta_1)`;
   * top (:math:`l = L`), doubled top-down input: :math:`p(h \mid x) = \sigma(R_L^\top x + \gamma_L)`,
     :math:`p(x \mid h) = \sigma(2R_L h + \beta_L)`;
   * middle layers: ordinary RBMs (input doubled in both directions relative to the DBM weights :math:`R_l/2`);
   * a 1-layer "DBM" is an ordinary RBM.

2. **Composition** at the first joint epoch: :math:`W_1 = R_1`, :math:`W_L = R_L`, middle :math:`W_l = R_l / 2`
   (halved); :math:`b_0 = \beta_1`, :math:`b_L = \gamma_L` and, for a layer shared by two RBMs, the mean of the
   two biases, :math:`b_l = (\gamma_l + \beta_{l+1}) / 2` (each RBM's doubled input stood in for half the
   DBM's input, bias included).

References:
    Salakhutdinov & Hinton (2009), Deep Boltzmann machines, AISTATS;
    Salakhutdinov & Hinton (2012), An efficient learning procedure for deep Boltzmann machines, Neural Computation 24.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_gm.models.greedy import phase_at
from lightning_gm.nn.dbm import BinaryDBM

__all__ = ["DBMPretraining"]


class DBMPretraining:
    """Mixin of :class:`~lightning_gm.models.dbm.DBM`: the pretraining phases, the modified RBMs (parameters
    ``pre_W``, ``pre_b``, ``pre_c``, created by :meth:`init_pretraining`) and :meth:`compose`.

    Attributes (the model's): ``hidden``, ``sizes`` (``[D, *hidden]``), ``epochs_per_layer``, ``pretrain_cd_k``,
    ``weight_cost``, the composed ``dbm`` and its ``composed`` flag (a buffer).
    """

    hidden: list[int]
    sizes: list[int]
    epochs_per_layer: list[int]
    pretrain_cd_k: int
    weight_cost: float
    dbm: BinaryDBM
    composed: Tensor

    def init_pretraining(self, weight_std: float) -> None:
        """The modified RBMs of the pretraining phases: :math:`R_l` ``(sizes[l-1], sizes[l])`` with standard deviation
        ``weight_std``, visible biases :math:`\\beta_l` and hidden biases :math:`\\gamma_l` at zero."""
        L = len(self.hidden)
        self.pre_W = nn.ParameterList(
            [nn.Parameter(torch.randn(self.sizes[l - 1], self.sizes[l]) * weight_std) for l in range(1, L + 1)]
        )
        self.pre_b = nn.ParameterList([nn.Parameter(torch.zeros(self.sizes[l - 1])) for l in range(1, L + 1)])
        self.pre_c = nn.ParameterList([nn.Parameter(torch.zeros(self.sizes[l])) for l in range(1, L + 1)])

    @property
    def num_layers(self) -> int:
        return len(self.hidden)

    @property
    def joint_start(self) -> int:
        """First epoch of joint training."""
        return sum(self.epochs_per_layer)

    def phase_at(self, epoch: int) -> int:
        """Phase at ``epoch``: ``l`` (0-based) while pretraining RBM ``l + 1``, ``L`` in joint training."""
        return phase_at(epoch, self.epochs_per_layer)

    def _up_factors(self, l: int) -> tuple[float, float]:
        """(bottom-up, top-down) input multipliers of pretraining RBM ``l`` (1-based)."""
        L = self.num_layers
        if L == 1:
            return 1.0, 1.0
        if l == 1:
            return 2.0, 1.0
        if l == L:
            return 1.0, 2.0
        return 1.0, 1.0  # middle: an ordinary RBM with weights R_l = 2 W_l

    @torch.no_grad()
    def pretrain_input(self, x: Tensor, l: int) -> Tensor:
        """Input of pretraining RBM ``l`` (1-based): hidden probabilities of the RBMs below."""
        h = x.reshape(x.shape[0], -1).to(self.pre_W[0].dtype)
        for k in range(1, l):
            up, _ = self._up_factors(k)
            h = torch.sigmoid(up * (h @ self.pre_W[k - 1]) + self.pre_c[k - 1])
        return h

    def _pretrain_terms(self, x: Tensor, l: int, stage: str) -> dict[str, Tensor]:
        W, b, c = self.pre_W[l - 1], self.pre_b[l - 1], self.pre_c[l - 1]
        up, down = self._up_factors(l)
        v = self.pretrain_input(x, l)
        with torch.no_grad():
            h_pos = torch.sigmoid(up * (v @ W) + c)
            recon = torch.sigmoid(down * (h_pos @ W.T) + b)
            recon_error = (v - recon).pow(2).sum(-1).mean()
            h, v_neg, h_neg = h_pos, v, h_pos
            for _ in range(self.pretrain_cd_k):
                h = torch.bernoulli(h_neg)
                v_neg = torch.sigmoid(down * (h @ W.T) + b)  # probabilities, as Salakhutdinov's code
                h_neg = torch.sigmoid(up * (v_neg @ W) + c)
        terms: dict[str, Tensor] = {"recon_error": recon_error}
        if stage == "train":
            # surrogate whose gradient is the CD-k update: <v h'>_data - <v h'>_model on W, and the biases.
            def energy(vv: Tensor, hh: Tensor) -> Tensor:
                return -((vv @ W) * hh).sum(-1) - vv @ b - hh @ c

            loss = energy(v, h_pos).mean() - energy(v_neg, h_neg).mean()
            if self.weight_cost > 0:
                loss = loss + 0.5 * self.weight_cost * W.pow(2).sum()
            terms["loss"] = loss
        else:
            terms["loss"] = recon_error
        return terms

    @torch.no_grad()
    def compose(self) -> None:
        r"""Compose the pretrained RBMs into the DBM: :math:`W_1 = R_1`, :math:`W_L = R_L`, middle :math:`R_l/2`;
        :math:`b_0 = \beta_1`, :math:`b_L = \gamma_L`, shared layers :math:`(\gamma_l + \beta_{l+1})/2`."""
        L = self.num_layers
        for l in range(1, L + 1):
            scale = 1.0 if (l == 1 or l == L) else 0.5
            self.dbm.W(l).copy_(scale * self.pre_W[l - 1])
        self.dbm.biases[0].copy_(self.pre_b[0])
        self.dbm.biases[L].copy_(self.pre_c[L - 1])
        for l in range(1, L):
            self.dbm.biases[l].copy_(0.5 * (self.pre_c[l - 1] + self.pre_b[l]))
        self.composed.fill_(True)
