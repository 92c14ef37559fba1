r"""The sigmoid belief network as a Helmholtz machine, trained by wake-sleep or reweighted wake-sleep.

The maths (conditionals, ancestral sampling, the wake and sleep surrogates, exact enumeration) lives in
:class:`lightning_gm.nn.sbn.HelmholtzMachine`; this module picks the training signals and plugs the
network into the platform. One optimiser step minimises

.. math::

    \mathcal L = \underbrace{-\sum_j \tilde w_j \log p(x, h_j)}_{\text{wake, } p}
      \;+\; [\text{q-wake}]\, \underbrace{\Big(-\sum_j \tilde w_j \log q(h_j \mid x)\Big)}_{\text{wake, } q}
      \;+\; [\text{sleep}]\, \underbrace{\Big(-\tfrac1M \sum_{m} \log q(h_m \mid x_m)\Big)}_{\text{sleep, } q,\ (x_m, h_m) \sim p}

(batch means; samples carry no gradient, so the p-terms move only :math:`\theta` and the q-terms only
:math:`\phi`). ``training="ws"``: uniform weights :math:`\tilde w_j = 1/k` (``k = 1``: the classic wake
phase of Hinton et al. 1995) and the sleep phase for :math:`q`. ``training="rws"``: self-normalised
importance weights :math:`\tilde w = \operatorname{softmax}(\log p(x, h) - \log q(h|x))` over ``k``
samples, and :math:`q` trained by the wake phase, the sleep phase or both (``q_update``; Bornschein &
Bengio found both best).

Evaluation (the parameter group :class:`~lightning_gm.estimators.seeded.IWEvaluation`): ``val/nll`` is the
``val_k``-sample importance-weighted estimate (it picks the best checkpoint); ``test/nll`` the ``test_k``-sample
one, which the model declares (:attr:`SigmoidBeliefNet.iw_evaluation`) and the ``lightning_gm`` command attaches
(estimator ``iwae-<test_k>``; seeded per example, batched, sharded under DDP), or the exact :math:`\log p(x)` by
enumeration when the network has at most ``exact_max_units`` hidden units (estimator ``exact``).

References: Hinton, Dayan, Frey & Neal (1995), The wake-sleep algorithm for unsupervised neural networks;
Bornschein & Bengio (2015), Reweighted wake-sleep; Burda, Grosse & Salakhutdinov (2016), Importance
weighted autoencoders (the k-sample estimate).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.importance import importance_weighted_log_prob, log_mean_exp
from lightning_gm.estimators.seeded import IWEvaluation, SeededNoise
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.migration import FlatKeys, GroupedHyperparameters
from lightning_gm.nn.sbn import Q_UPDATES, HelmholtzMachine

__all__ = ["SigmoidBeliefNet", "TRAININGS"]

#: the training procedures
TRAININGS = ("ws", "rws")
#: flat hyperparameters of checkpoints written before the evaluation group: ``old name -> (group, field)``
FLAT_KEYS: FlatKeys = {"val_k": ("evaluation", "val_k"), "test_k": ("evaluation", "test_k"),
                       "eval_seed": ("evaluation", "seed"), "chunk_size": None}


class SigmoidBeliefNet(GroupedHyperparameters, GenerativeModel):
    r"""Sigmoid belief network with a recognition network (Helmholtz machine) on binary data.

    Args:
        data_shape: shape of one example (linked from the data); the data must be binary.
        hidden: hidden layer sizes nearest to the data first: ``(200, 200, 10)`` is the "10-200-200" SBN
            of Bornschein & Bengio (2015) written top-down.
        training: ``"ws"`` (wake-sleep) or ``"rws"`` (reweighted wake-sleep).
        k: posterior samples per example in the wake phase (``ws``: uniform average, 1 = classic;
            ``rws``: importance-weighted, 5 in Bornschein & Bengio's MNIST experiments).
        q_update: recognition updates, ``"wake"``, ``"sleep"`` or ``"both"``; default ``"sleep"`` for ``ws``
            (the only one it defines) and ``"both"`` for ``rws``.
        sleep_samples: dreams :math:`(x, h) \sim p` per sleep phase (0 = the batch size).
        evaluation: the importance-weighted evaluation: ``val_k`` samples per example for ``val/nll`` (the
            checkpoint monitor; 20 by default), ``test_k`` for ``test/nll`` (estimator ``iwae-<test_k>``), its
            ``seed``, ``subset``, ``block``, ``sample_block`` (:class:`~lightning_gm.estimators.seeded.IWEvaluation`).
        exact_max_units: compute the exact test ``log p(x)`` by enumeration when the network has at most this
            many hidden units (0 = never; the cost is :math:`2^{\sum_l H_l}` per example).
        sample_probabilities: :meth:`sample` returns the Bernoulli means :math:`\sigma(W_0 h_1 + b_0)` of the
            ancestrally sampled :math:`h_1` (smoother pictures) instead of binary :math:`x`.
        **kwargs: ``optimizer`` (default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.

    References: Hinton et al. (1995); Bornschein & Bengio (2015).
    """

    family = "sbn"
    monitor = "val/nll"
    monitor_mode = "min"
    groups = ("evaluation",)
    flat_keys = FLAT_KEYS  # checkpoints written before the evaluation group still load

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        hidden: Sequence[int] = (200, 200, 10),
        training: str = "rws",
        k: int = 5,
        q_update: Optional[str] = None,
        sleep_samples: int = 0,
        evaluation: IWEvaluation = IWEvaluation(val_k=20),
        exact_max_units: int = 16,
        sample_probabilities: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        evaluation = IWEvaluation.coerce(evaluation)
        if evaluation.val_k < 1:
            raise ConfigError(f"model.init_args.evaluation.val_k must be >= 1 (val/nll picks the checkpoint), "
                              f"got {evaluation.val_k}")
        if training not in TRAININGS:
            raise ConfigError(f"model.init_args.training must be one of {list(TRAININGS)}, got {training!r}")
        if q_update is None:
            q_update = "sleep" if training == "ws" else "both"
        if q_update not in Q_UPDATES:
            raise ConfigError(f"model.init_args.q_update must be one of {list(Q_UPDATES)} (or null), got {q_update!r}")
        if training == "ws" and q_update != "sleep":
            raise ConfigError(
                f"model.init_args.q_update={q_update!r} needs training='rws': the wake-phase q update uses the "
                f"importance weights; wake-sleep (training='ws') trains q in the sleep phase only (q_update='sleep')"
            )
        for key, value, low in (("k", k, 1), ("sleep_samples", sleep_samples, 0), ("exact_max_units", exact_max_units, 0)):
            if value < low:
                raise ConfigError(f"model.init_args.{key} must be >= {low}, got {value}")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ConfigError(f"model.init_args.hidden must be a non-empty list of positive layer sizes, got {hidden}")
        self.net = HelmholtzMachine(self.data_dim, hidden)
        self.training_mode, self.k, self.q_update = training, int(k), q_update
        self.sleep_samples, self.evaluation, self.exact_max_units = sleep_samples, evaluation, exact_max_units
        self.sample_probabilities = sample_probabilities

    @property
    def test_k(self) -> int:
        return self.evaluation.test_k

    @property
    def iw_evaluation(self) -> Optional[IWEvaluation]:
        """The importance-weighted test evaluation this model declares (none when the test is exact)."""
        return None if self.exact else self.evaluation

    # --- training ----------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """Whether the test log-likelihood is computed exactly (few enough hidden units)."""
        return self.net.n_hidden_total <= self.exact_max_units

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        flat = x.flatten(1).to(self.net.top_logits.dtype)
        if stage != "train":
            log_w = self.net.log_weights(flat, self.evaluation.val_k)
            nll = -log_mean_exp(log_w, 0).mean()
            return {"loss": nll, "nll": nll, "elbo": log_w.mean()}
        rws = self.training_mode == "rws"
        wake = self.net.wake_terms(flat, self.k, reweight=rws)
        loss = wake.p_loss
        terms: dict[str, Tensor] = {"wake_p": wake.p_loss.detach()}
        if self.q_update in ("wake", "both"):
            loss = loss + wake.q_loss
            terms["wake_q"] = wake.q_loss.detach()
        if self.q_update in ("sleep", "both"):
            sleep = self.net.sleep_loss(self.sleep_samples or flat.shape[0])
            loss = loss + sleep
            terms["sleep_q"] = sleep.detach()
        terms["elbo"] = wake.log_weights.mean()
        if self.k > 1:
            terms["iw_bound"] = log_mean_exp(wake.log_weights, 0).mean()
            w = torch.softmax(wake.log_weights, 0)
            terms["ess"] = (1.0 / (w**2).sum(0)).mean()  # effective sample size of the k weights, in [1, k]
        terms["loss"] = loss
        return terms

    # --- the platform's interface -------------------------------------------------------------------
    @property
    def estimator(self) -> str:
        return "exact" if self.exact else f"iwae-{self.evaluation.test_k}"

    def log_weights(self, x: Tensor, n: int, noise: Any = None) -> Tensor:
        """``log p(x, h) - log q(h | x)`` for ``n`` samples ``h ~ q(h | x)`` per example: ``(n, B)``; the uniforms
        from ``noise`` (a :class:`~lightning_gm.estimators.seeded.SeededNoise`, or one generator per example)."""
        flat = x.flatten(1).to(self.net.top_logits.dtype)
        if isinstance(noise, SeededNoise):
            return self.net.log_weights(flat, n, noise=noise)
        return self.net.log_weights(flat, n, noise)

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` (enumeration) when :attr:`exact`, else the ``test_k``-sample importance-weighted
        estimate (global random stream): ``(B,)``."""
        flat = x.flatten(1).to(self.net.top_logits.dtype)
        if self.exact:
            return self.net.log_prob_enumerate(flat, max_units=self.exact_max_units)
        chunk = max(1, self.evaluation.rows // max(1, flat.shape[0]))
        est = importance_weighted_log_prob(self.log_weights, flat, self.evaluation.test_k, chunk)
        return est.log_prob.to(flat.dtype)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if self.exact:
            super().test_step(batch, batch_idx)
        else:  # test/nll comes from the declared evaluation at the end of the epoch
            self._common_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        if self.exact:
            super().on_test_epoch_end()

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` ancestral samples ``(n, *data_shape)``: binary, or their Bernoulli means when
        ``sample_probabilities``."""
        x, _, probs = self.net.sample_joint(n)
        return (probs if self.sample_probabilities else x).view(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Bernoulli means of :math:`p(x \\mid h_1)` at one :math:`h \\sim q(h \\mid x)`: ``x``-shaped."""
        flat = x.flatten(1).to(self.net.top_logits.dtype)
        h1 = self.net.sample_posterior(flat, 1)[0][0]
        return torch.sigmoid(self.net.generative[0](h1)).view(x.shape)
