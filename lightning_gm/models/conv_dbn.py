r"""The convolutional DBN (Lee et al. 2009, section 3.4): a greedy layer-wise stack of convolutional RBMs with
probabilistic max-pooling, :class:`ConvDBN`.

Layer :math:`l + 1` is a convolutional RBM whose visibles are layer :math:`l`'s pooling units, trained by CD on
their probabilities :math:`P(p^k_\alpha = 1 \mid \cdot)` from the upward pass, with the sparsity regulariser of
:mod:`lightning_gm.models.conv_rbm`; the phase (which layer trains) follows ``current_epoch`` and
``epochs_per_layer`` as in :class:`~lightning_gm.models.dbn.DBN`. Its likelihood is not tractable (nor bounded
here), so it logs no ``test/nll``: at test it reports each layer's free energy and reconstruction error on the
upward pass.

References:
    Lee, Grosse, Ranganath & Ng (2009), Convolutional deep belief networks for scalable unsupervised learning
    of hierarchical representations, ICML; Hinton, Osindero & Teh (2006) (greedy layer-wise training).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gm.errors import ConfigError
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.conv_rbm import ConvCD, check_positive, image_shape
from lightning_gm.models.energy import FLAT_CD_KEYS, FLAT_PENALTY_KEYS, batch_data, scale_rows, seeded_rng, sgd_conv_rbm
from lightning_gm.models.greedy import GreedySchedule
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.nn.conv_rbm import ConvolutionalRBM, VisibleType
from lightning_gm.nn.rbm import CD, Penalties

__all__ = ["ConvDBN"]


class ConvDBN(GroupedHyperparameters, GreedySchedule, ConvCD, GenerativeModel):
    r"""Convolutional deep belief network: greedy layer-wise stack of :class:`~lightning_gm.nn.conv_rbm.ConvolutionalRBM`.

    Layer 0 sees the data; layer :math:`l > 0` sees the pooling-unit probabilities of layer :math:`l - 1`
    (``K_{l-1}`` channels of size ``H_p x W_p``) as its (binary-typed) visibles. The layer being trained is the
    phase of ``current_epoch`` (``train/layer``); a new layer starts with its visible biases from the log-odds
    of its input and no momentum. Sampling: Gibbs in the top layer, then each layer below samples
    :math:`P(v \mid p)` with its pooling units clamped to the layer above's visibles
    (:meth:`~lightning_gm.nn.conv_rbm.ConvolutionalRBM.gibbs` with ``pool_clamp``).

    No tractable likelihood: test metrics are ``test/free_energy_<l>`` and ``test/recon_error_<l>`` of every layer
    on the upward pass (and ``test/loss``, the top layer's free energy), no ``test/nll``.

    Args:
        data_shape: ``(C, H, W)`` (linked from the data).
        n_filters: groups per layer.
        filter_size: filter side per layer.
        pool_size: pooling block side per layer.
        epochs_per_layer: training epochs of each layer (``trainer.max_epochs`` should be their sum).
        visible: visibles of the first layer, ``binary`` or ``gaussian``.
        cd: as :class:`ConvRBM` (``cd.k`` sweeps of CD-k from the data; every layer trains without persistent chains).
        weight_std, penalties, init_visible_bias: as :class:`ConvRBM`
            (the same for every layer).
        sample_steps: Gibbs sweeps in the top layer behind :meth:`sample`.
        down_steps: clamped Gibbs sweeps per lower layer behind :meth:`sample`.
        optimizer: optimiser factory (default SGD, lr 0.01, momentum 0.9).
        lr_scheduler: optional scheduler factory.

    References:
        Lee, Grosse, Ranganath & Ng (2009), section 3.4; Hinton, Osindero & Teh (2006).
    """

    family = "dbn"
    groups = ("cd", "penalties")
    flat_keys = {"k": FLAT_CD_KEYS["k"], **FLAT_PENALTY_KEYS}  # checkpoints written before the groups still load
    #: as the DBN: the latest epoch is the best (recon errors of different layers are not comparable)
    monitor = "val/stack_progress"
    monitor_mode = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        n_filters: Sequence[int] = (40, 40),
        filter_size: Sequence[int] = (6, 4),
        pool_size: Sequence[int] = (2, 2),
        epochs_per_layer: Sequence[int] = (5, 5),
        visible: VisibleType = "binary",
        cd: CD = CD(persistent=False),
        weight_std: float = 0.01,
        penalties: Penalties = Penalties(weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=1.0),
        init_visible_bias: bool = True,
        sample_steps: int = 200,
        down_steps: int = 20,
        optimizer: OptimizerCallable = sgd_conv_rbm,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(data_shape, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.cd, self.penalties = CD.coerce(cd), Penalties.coerce(penalties)
        if self.cd.persistent:
            raise ConfigError("model.init_args.cd.persistent: ConvDBN trains every layer by CD-k from the data; set it to false")
        lists = {"n_filters": n_filters, "filter_size": filter_size, "pool_size": pool_size}
        lengths = {key: len(v) for key, v in lists.items()}
        if len(set(lengths.values())) != 1 or lengths["n_filters"] < 1:
            raise ConfigError(f"model.init_args n_filters, filter_size and pool_size need one entry per layer (the "
                              f"same length >= 1), got lengths {lengths}")
        check_positive(**lists)
        self.init_schedule(epochs_per_layer, len(n_filters))
        shape = image_shape(data_shape)
        self.image = shape
        layers = []
        for l, (nf, fs, ps) in enumerate(zip(n_filters, filter_size, pool_size)):
            c, h, w = shape
            if fs > min(h, w):
                raise ConfigError(f"model.init_args.filter_size[{l}]={fs} is larger than layer {l}'s input ({h}x{w})")
            layers.append(ConvolutionalRBM(c, (h, w), nf, fs, ps, visible if l == 0 else "binary", weight_std))
            shape = (nf, *layers[-1].pooled_size)
        self.layers = nn.ModuleList(layers)
        self.init_visible_bias, self.sample_steps, self.down_steps = init_visible_bias, sample_steps, down_steps
        self._initialised_layer = -1
        self._picture_example: Optional[Tensor] = None

    def up(self, x: Tensor, layer: int) -> Tensor:
        """Input of ``layer``: the data (``layer = 0``) or the pooling probabilities of the layer below."""
        h = x.reshape(x.shape[0], *self.image).to(self.layers[0].W.dtype)
        for rbm in list(self.layers)[:layer]:
            h = rbm.pool_probs(h).detach()
        return h

    def _init_layer(self, layer: int) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not self.init_visible_bias:
            return
        rbm = self.layers[layer]
        total, count = torch.zeros(rbm.in_channels, dtype=torch.float64, device=self.device), 0
        with seeded_rng(12345 + layer), torch.no_grad():
            for batch in dm.train_dataloader():
                h = self.up(batch_data(batch).to(self.device), layer)
                total += h.double().sum((0, 2, 3))
                count += h.shape[0] * h.shape[2] * h.shape[3]
        p = (total / max(count, 1)).clamp(1e-3, 1 - 1e-3)
        log_odds = self.trainer.strategy.broadcast((p.log() - (-p).log1p()), src=0)
        if rbm.visible == "binary":
            with torch.no_grad():
                rbm.c.copy_(log_odds.to(rbm.c))

    def on_train_epoch_start(self) -> None:
        layer = self.current_layer
        if self.starts_phase() and self._initialised_layer != layer:
            self._init_layer(layer)
            self.forget_momentum()
        self._initialised_layer = layer

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        layer = self.current_layer
        rbm = self.layers[layer]
        v = self.up(x, layer)
        terms = self.layer_terms(rbm, v, stage)
        if stage == "val" and self._picture_example is None:
            self._picture_example = x[:1].detach().clone()
        if stage != "train":
            return terms
        return {**self._cd_terms(rbm, v, None, self.cd.k), **terms}

    # ------------------------------------------------------------------ test: no likelihood
    @property
    def estimator(self) -> str:
        """No tractable likelihood: its test reports per-layer free energies and reconstruction errors (see
        :attr:`GenerativeModel.estimator`)."""
        return "none (free energy, reconstruction error)"

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError("ConvDBN has no tractable log-likelihood: see test/free_energy_<l>, test/recon_error_<l>")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch_data(batch)
        h = x.reshape(x.shape[0], *self.image).to(self.layers[0].W.dtype)
        metrics = {}
        for l, rbm in enumerate(self.layers):
            metrics[f"test/free_energy_{l}"] = rbm.free_energy(h).mean()
            metrics[f"test/recon_error_{l}"] = rbm.reconstruction_error(h)
            h = rbm.pool_probs(h)
        metrics["test/loss"] = metrics[f"test/free_energy_{self.num_layers - 1}"]
        self.log_dict(metrics, on_epoch=True, batch_size=x.shape[0], sync_dist=True)

    def on_test_epoch_end(self) -> None:
        """Nothing to add: there is no ``test/nll`` for this family."""

    # ------------------------------------------------------------------ generation and pictures
    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        top = self.layers[-1]
        v = torch.bernoulli(torch.full((n, top.in_channels, *top.image_size), 0.5, device=self.device),
                            generator=self.generator)
        v = top.gibbs(v, self.sample_steps, self.generator).v
        for rbm in list(self.layers)[-2::-1]:
            start = torch.bernoulli(torch.sigmoid(rbm.c).view(1, -1, 1, 1).expand(n, -1, *rbm.image_size),
                                    generator=self.generator)
            state = rbm.gibbs(start, self.down_steps, self.generator, pool_clamp=v)
            v = state.v if rbm is not self.layers[0] else state.v_mean
        if self.num_layers == 1:
            v = top.mean_visibles(top.sample_hiddens(v, self.generator)[0])
        return v.reshape(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        rbm = self.layers[0]
        v = x.reshape(x.shape[0], *self.image)
        return rbm.mean_visibles(rbm.mean_hiddens(v)[0]).reshape(x.shape)

    def layer_filters(self, layer: int) -> Tensor:
        r"""Filters of ``layer`` in image space, ``(K_l, C_0, s, s)``: a layer-:math:`l` filter is drawn as the
        sum of the layer-:math:`(l-1)` filters weighted by it, each pooling unit spread over its :math:`C \times C`
        block (Lee et al. 2009, figure 3)."""
        img = self.layers[layer].W.detach()
        for below in list(self.layers)[layer - 1 :: -1] if layer > 0 else []:
            img = img.repeat_interleave(below.pool_size, 2).repeat_interleave(below.pool_size, 3)
            img = F.conv_transpose2d(img, below.W.detach())
        return img

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """``filters`` (layer 0), ``filters_layer<l>`` (higher layers in image space) and ``pooled`` maps of layer 0."""
        out = {}
        for l in range(self.num_layers):
            w = self.layer_filters(l)[:, 0]
            out["filters" if l == 0 else f"filters_layer{l}"] = scale_rows(w.reshape(w.shape[0], -1))
        if self._picture_example is not None:
            p = self.layers[0].pool_probs(self._picture_example.to(self.device).reshape(1, *self.image))[0]
            out["pooled"] = p.reshape(p.shape[0], -1).clamp(0, 1).float().cpu()
        return out
