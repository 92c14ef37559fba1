r"""The multi-prediction deep Boltzmann machine (family ``dbm``, model ``MPDBM``).

The same binary DBM as :class:`~lightning_gm.models.DBM` (:class:`~lightning_gm.nn.dbm.BinaryDBM`), with an
optional softmax group of ``n_classes`` label units attached to the top hidden layer
(:math:`E = E_{\mathrm{DBM}} - c^\top y - h_L^\top U y`), trained not for likelihood but as a family of
mean-field recurrent nets (Goodfellow et al. 2013): for every example a random subset :math:`S` of the
visible units (and the label) is marked missing (each unit with probability ``mask_prob``, per example or
per batch), ``mf_steps`` rounds of mean field run with the other units clamped
(:func:`~lightning_gm.nn.mpdbm.masked_mean_field`), and the loss is the cross-entropy of the missing units
under the mean-field predictions, back-propagated through the unrolled rounds,

.. math::

    \mathcal L(\theta) = \mathbb E_{x, S}\Big[-\sum_{i \in S} \log \hat q_i(x_i; x_{\bar S}, \theta)\Big]
                         + \tfrac12\lambda \sum_l \|W_l\|^2 ,

in nats per example (logged as ``loss``, split into ``visible_xent`` and ``label_xent``). Validation and
test use masks from a generator reset to ``eval_seed`` at the start of each epoch, so ``val/loss`` is the
same inference problem every epoch (it picks the best checkpoint).

With labels, classification is inference of the label with all pixels observed: ``val/accuracy``,
``test/accuracy``. Inpainting (``inpaint``) is mean field with the observed pixels clamped; the
:class:`~lightning_gm.callbacks.InpaintingEvaluation` callback reports it on fixed masks for this model and
for the standard DBM alike.

Test log-likelihood: an MP-DBM *without* labels is a DBM, so ``test_loglik=True`` reports the DBM's
mean-field lower bound minus an AIS :math:`\log Z` (:mod:`lightning_gm.estimators.dbm`, estimator
``ais+meanfield``, or ``exact+meanfield`` when enumerable). With labels no estimator is provided (none
is faked): ``test/nll`` is not logged.

References:
    Goodfellow, Mirza, Courville & Bengio (2013), Multi-prediction deep Boltzmann machines, NIPS;
    Salakhutdinov & Hinton (2009), Deep Boltzmann machines, AISTATS.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule, base_rate_log_odds
from lightning_gm.models.base import adam
from lightning_gm.models.dbm import DBMLikelihood
from lightning_gm.models.greedy import layer_sizes
from lightning_gm.nn.dbm import BinaryDBM
from lightning_gm.nn.mpdbm import MaskedMeanField, label_logits, layer_conditional, masked_mean_field, multi_prediction_loss, sample_missing

__all__ = ["MPDBM"]


_adam = adam  # the name configs written before the optimiser became the base's resolve


class MPDBM(DBMLikelihood):
    r"""Multi-prediction DBM with binary units and optional label units (module docstring).

    Args:
        data_shape: shape of one example (linked from the data); binary (or [0, 1]) data.
        hidden: hidden-layer sizes ``[H_1, ..., H_L]``.
        n_classes: label units (a softmax group on the top hidden layer); 0 = none.
        mf_steps: mean-field rounds unrolled in training and used for inpainting / classification.
        mask_prob: probability that a unit (pixel or label) is missing in training.
        mask_per_example: draw a mask per example (else one mask per batch).
        classify_prob: fraction of training examples given the classification mask instead (all pixels
            observed, label missing); 0 = the paper's uniform masks only.
        multi_inference: use the multi-inference input in training and evaluation
            (:func:`~lightning_gm.nn.mpdbm.masked_mean_field`).
        centered: centred energy (Montavon & Mueller 2012) with *fixed* offsets: the training data's mean for
            :math:`v` (set once at the start of fit), 1/2 for the hidden layers. Without it the mutually
            excitatory hidden layers tend to saturate and the label is not learned in short runs.
        weight_cost: L2 penalty :math:`\tfrac12\lambda\|W\|^2` on the DBM and label weights.
        weight_std: standard deviation of the initial weights.
        eval_seed: seed of the validation / test masks (reset every epoch).
        test_loglik: at test, log ``test/nll`` = -(mean-field bound - log Z) (no labels only).
        sample_steps: Gibbs sweeps for :meth:`sample`.
        ais: :math:`\log Z` for ``test_loglik`` (:class:`~lightning_gm.estimators.ais.AISSchedule`; exact when the smaller
            odd/even layer set has at most ``ais.exact_max_units`` units).
        **kwargs: ``optimizer`` (default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        hidden: Sequence[int] = (500, 1000),
        n_classes: int = 0,
        mf_steps: int = 10,
        mask_prob: float = 0.5,
        mask_per_example: bool = True,
        classify_prob: float = 0.0,
        multi_inference: bool = False,
        centered: bool = True,
        weight_cost: float = 0.0,
        weight_std: float = 0.05,
        eval_seed: int = 0,
        test_loglik: bool = False,
        sample_steps: int = 1000,
        ais: AISSchedule = AISSchedule(),
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.ais = AISSchedule.coerce(ais)
        hidden = layer_sizes(hidden)
        if n_classes < 0 or n_classes == 1:
            raise ConfigError(f"model.n_classes must be 0 (no labels) or >= 2, got {n_classes}")
        if mf_steps < 1:
            raise ConfigError(f"model.mf_steps must be >= 1, got {mf_steps}")
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"model.mask_prob must lie in (0, 1), got {mask_prob}")
        if not 0.0 <= classify_prob <= 1.0:
            raise ConfigError(f"model.classify_prob must lie in [0, 1], got {classify_prob}")
        if classify_prob > 0 and n_classes == 0:
            raise ConfigError(f"model.classify_prob={classify_prob} needs label units: set model.n_classes > 0")
        if test_loglik and n_classes > 0:
            raise ConfigError(
                f"model.test_loglik=true with model.n_classes={n_classes}: the DBM AIS estimator has no label "
                "units, so no test log-likelihood is available; set test_loglik=false or n_classes=0"
            )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], frame=inspect.currentframe())
        self.hidden, self.n_classes, self.mf_steps = hidden, int(n_classes), int(mf_steps)
        self.mask_prob, self.mask_per_example, self.classify_prob = float(mask_prob), mask_per_example, float(classify_prob)
        self.multi_inference, self.weight_cost = multi_inference, float(weight_cost)
        self.eval_seed, self.test_loglik, self.sample_steps = int(eval_seed), test_loglik, int(sample_steps)
        self.sizes = [self.data_dim, *hidden]
        self.centered = centered
        self.dbm = BinaryDBM(self.sizes, weight_std=weight_std, centered=centered)
        if centered:
            with torch.no_grad():
                for l in range(1, len(self.sizes)):
                    self.dbm.set_offset(l, torch.full((self.sizes[l],), 0.5))
        self.register_buffer("offsets_ready", torch.tensor(not centered))
        if self.n_classes:
            self.label_weights: Optional[nn.Parameter] = nn.Parameter(torch.randn(hidden[-1], self.n_classes) * weight_std)
            self.label_bias: Optional[nn.Parameter] = nn.Parameter(torch.zeros(self.n_classes))
        else:
            self.label_weights = self.label_bias = None
        self._y: Optional[Tensor] = None
        self._eval_generator: Optional[torch.Generator] = None

    # ------------------------------------------------------------------ inference
    def infer(self, x: Tensor, missing: Tensor, y: Optional[Tensor] = None, label_missing: Optional[Tensor] = None,
              steps: Optional[int] = None) -> MaskedMeanField:
        """Masked mean field (:func:`~lightning_gm.nn.mpdbm.masked_mean_field`) with this model's labels and options."""
        return masked_mean_field(self.dbm, self.visibles(x), missing, steps or self.mf_steps,
                                 self.label_weights, self.label_bias, y, label_missing, self.multi_inference)

    @torch.no_grad()
    def inpaint(self, x: Tensor, missing: Tensor, steps: Optional[int] = None) -> Tensor:
        """``(B, D)`` probabilities: ``x`` on observed pixels (``missing = 0``), the mean-field prediction on missing ones
        (the label, if any, is missing too)."""
        v = self.visibles(x)
        out = self.infer(v, missing, steps=steps)
        miss = missing.to(v.dtype).expand_as(v)
        return (1 - miss) * v + miss * torch.sigmoid(out.visible_logits)

    @torch.no_grad()
    def classify(self, x: Tensor, steps: Optional[int] = None) -> Tensor:
        """``(B, C)`` class probabilities: label inference with every pixel observed."""
        if not self.n_classes:
            raise ConfigError("MPDBM.classify needs label units: set model.n_classes > 0")
        v = self.visibles(x)
        out = self.infer(v, torch.zeros_like(v), steps=steps)
        return torch.softmax(out.label_logits, -1)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ training
    def _common_step(self, batch: Any, stage: str) -> Tensor:
        self._y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        try:
            return super()._common_step(batch, stage)
        finally:
            self._y = None

    def _masks(self, v: Tensor, stage: str) -> tuple[Tensor, Tensor]:
        gen = None if stage == "train" else self._eval_gen()
        B = v.shape[0]
        missing = sample_missing(v.shape, self.mask_prob, self.mask_per_example or stage != "train", gen).to(v)
        rows = B if (self.mask_per_example or stage != "train") else 1
        label_missing = (torch.rand(rows, generator=gen) < self.mask_prob).to(v).expand(B).contiguous()
        if self.classify_prob > 0:
            classify = (torch.rand(B, generator=gen) < self.classify_prob).to(v)
            missing = missing * (1 - classify).unsqueeze(-1)
            label_missing = torch.maximum(label_missing, classify)
        return missing, label_missing

    def _eval_gen(self) -> torch.Generator:
        if self._eval_generator is None:
            self._eval_generator = torch.Generator().manual_seed(self.eval_seed)
        return self._eval_generator

    @torch.no_grad()
    def on_fit_start(self) -> None:
        if bool(self.offsets_ready):
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None:
            total = torch.zeros(self.data_dim, dtype=torch.float64, device=self.device)
            count = 0
            for batch in dm.train_dataloader():
                x = (batch[0] if isinstance(batch, (tuple, list)) else batch).reshape(-1, self.data_dim).to(self.device)
                total += x.double().sum(0)
                count += x.shape[0]
            mean = self.trainer.strategy.broadcast(total / max(count, 1), src=0)
            self.dbm.set_offset(0, mean)
            # the visible biases start at the data's log-odds (the offsets do not change the distribution)
            self.dbm.biases[0].copy_(base_rate_log_odds(mean.unsqueeze(0)).to(self.dbm.biases[0]))
        self.offsets_ready.fill_(True)

    def on_validation_epoch_start(self) -> None:
        self._eval_generator = torch.Generator().manual_seed(self.eval_seed)

    def on_test_epoch_start(self) -> None:
        self._eval_generator = torch.Generator().manual_seed(self.eval_seed)

    def _labels(self, B: int) -> Optional[Tensor]:
        if not self.n_classes or self._y is None:
            return None
        y = self._y.reshape(-1).long().to(self.device)
        if y.numel() != B or int(y.min()) < 0 or int(y.max()) >= self.n_classes:
            raise ConfigError(
                f"model.n_classes={self.n_classes} but the batch labels range over [{int(y.min())}, {int(y.max())}]; "
                "use a labelled DataModule (e.g. MNISTDataModule, not BinarizedMNISTDataModule) or n_classes=0"
            )
        return y

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        v = self.visibles(x)
        y = self._labels(v.shape[0])
        missing, label_missing = self._masks(v, stage)
        if y is None:
            label_missing = None  # type: ignore[assignment]
        out = masked_mean_field(self.dbm, v, missing, self.mf_steps, self.label_weights if y is not None else None,
                                self.label_bias if y is not None else None, y, label_missing, self.multi_inference)
        loss, vis, lab = multi_prediction_loss(out.visible_logits, v, missing, out.label_logits, y, label_missing)
        terms: dict[str, Tensor] = {
            "visible_xent": vis.mean().detach(),
            "missing_fraction": missing.mean().detach(),
        }
        total = loss.mean()
        if y is not None:
            terms["label_xent"] = lab.mean().detach()
        if stage == "train" and self.weight_cost > 0:
            ws = [*self.dbm.weights] + ([self.label_weights] if self.label_weights is not None else [])
            total = total + 0.5 * self.weight_cost * sum(w.pow(2).sum() for w in ws)
        terms["loss"] = total
        if stage != "train" and y is not None:
            with torch.no_grad():
                pred = self.classify(v).argmax(-1)
                correct = (pred == y).float()
            terms["accuracy"] = correct.mean()
        return terms

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(self, n: int, steps: Optional[int] = None) -> Tensor:
        """Visible probabilities after ``steps`` (default ``sample_steps``) odd/even Gibbs sweeps of fresh chains
        of the whole model (the label group, if any, is sampled with the layers of its parity)."""
        v = torch.bernoulli(torch.sigmoid(self.dbm.biases[0]).expand(n, -1))
        states = [torch.bernoulli(m) for m in self.dbm.mean_field_init(v)]
        states[0] = v
        L, U, c = self.dbm.num_layers, self.label_weights, self.label_bias
        label = None
        if U is not None:
            label = torch.nn.functional.one_hot(torch.randint(self.n_classes, (n,), device=v.device), self.n_classes).to(v)
        for _ in range(steps or self.sample_steps):
            for parity in (1, 0):
                for l in range(parity, L + 1, 2):
                    states[l] = torch.bernoulli(layer_conditional(self.dbm, states, l, label, U))
                if U is not None and parity == (L + 1) % 2:
                    offset = self.dbm.offset(L) if self.centered else None
                    k = torch.multinomial(torch.softmax(label_logits(states[L], U, c, offset), -1), 1).squeeze(-1)  # type: ignore[arg-type]
                    label = torch.nn.functional.one_hot(k, self.n_classes).to(v)
        return torch.sigmoid(self.dbm.layer_input(states, 0)).reshape(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Inpainting of a random ``mask_prob`` of the pixels (seeded by ``eval_seed``): observed pixels kept."""
        v = self.visibles(x)
        gen = torch.Generator().manual_seed(self.eval_seed)
        missing = sample_missing(v.shape, self.mask_prob, True, gen).to(v)
        return self.inpaint(v, missing).reshape(x.shape[0], *self.data_shape)

    # ------------------------------------------------------------------ test
    def posterior_means(self, v: Tensor) -> list[Tensor]:
        """The label-free DBM's mean-field means for the bound, ``max(mf_steps, 30)`` rounds (no gradient)."""
        with torch.no_grad():
            return self.dbm.mean_field(v, iterations=max(self.mf_steps, 30))[0]

    def visible_base_log_odds(self) -> Tensor:
        """The base-rate model of the visible means: the centring offset, or the visible biases' probabilities."""
        mean = self.dbm.offset(0) if self.centered else torch.sigmoid(self.dbm.biases[0].detach())
        return base_rate_log_odds(mean.double().unsqueeze(0))

    def check_log_partition(self) -> None:
        if self.n_classes:
            raise ConfigError("MPDBM: no log Z with label units (model.init_args.n_classes > 0)")

    @property
    def estimator(self) -> str:
        if not self.test_loglik:  # (see GenerativeModel.estimator)
            return "none (accuracy)" if self.n_classes else "none (multi-prediction loss)"
        return self.meanfield_label

    @property
    def has_test_likelihood(self) -> bool:
        """``test_loglik`` (then ``test/nll`` is the label-free DBM's bound minus log Z)."""
        return self.test_loglik
