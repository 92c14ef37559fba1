r"""What every latent-variable family of the VAE kind shares: :class:`LatentVariableModel` (the ``k``-sample
objective, the KL weight and its warm-up, free bits, the importance-weighted estimates, the declared test
evaluation, the data-mean output bias) and its parameter group :class:`Objective`.

A subclass (:class:`~lightning_gm.models.vae.VAE`, :class:`~lightning_gm.models.vae.HierarchicalVAE`) supplies
the posterior, the prior terms, the likelihood and the decoder mean. The objective (module docstring of
:mod:`lightning_gm.models.vae`):

.. math::

    \mathcal L_k(x) = \mathbb E\left[\log \frac1k \sum_{j=1}^k w_j\right], \qquad
    \log w = \log p(x \mid z) + \beta\,\big(\log p(z) - \log q(z \mid x)\big), \quad z_j \sim q(z \mid x).

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders; Sønderby et al. (2016),
Ladder VAEs (warm-up); Kingma et al. (2016), IAF (free bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.importance import importance_weighted_log_prob, log_mean_exp
from lightning_gm.estimators.seeded import IWEvaluation, SeededNoise
from lightning_gm.groups import ParameterGroup
from lightning_gm.models.base import GenerativeModel, adam
from lightning_gm.models.checkpointing import UNSAVED_KEY
from lightning_gm.models.manual_loop import ClipAlgorithm, ManualLoop
from lightning_gm.models.migration import FlatKeys, GroupedHyperparameters
from lightning_gm.nn.likelihoods import BernoulliLikelihood, Likelihood
from lightning_gm.nn.posterior import PosteriorFlow
from lightning_gm.nn.priors import Prior
from lightning_gm.schedules import run_progress

__all__ = ["LatentVariableModel", "Latents", "Objective", "kl_warmup_weight", "standard_normal_noise", "FLAT_KEYS"]


#: ``(in_features, out_features) -> network`` on flat vectors
NetFactory = Callable[[int, int], nn.Module]


#: ``(latent_dim, context_features) -> posterior flow``
FlowFactory = Callable[[int, int], PosteriorFlow]


def kl_warmup_weight(beta: float, warmup_epochs: int, step: int, steps_per_epoch: int | float) -> float:
    """Linear KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): ``beta * min(1, step / (warmup_epochs *
    steps_per_epoch))``."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, step / (warmup_epochs * max(1, steps_per_epoch)))


#: what a model draws its noise from: ``None`` (the global stream), a :class:`SeededNoise` (the seeded
#: evaluation), or one generator per example
Noise = Optional["SeededNoise | Sequence[torch.Generator]"]


def standard_normal_noise(n: int, like: Tensor, dim: int, noise: Noise = None) -> Tensor:
    """``(n, B, dim)`` standard normal noise for a batch ``like`` (``(B, ...)``): from ``noise`` when given (a
    :class:`~lightning_gm.estimators.seeded.SeededNoise`, or one generator per example), else the global stream."""
    if noise is None:
        return torch.randn(n, like.shape[0], dim, dtype=like.dtype, device=like.device)
    if isinstance(noise, SeededNoise):
        return noise.normal(n, dim, like)
    if len(noise) != like.shape[0]:
        raise ValueError(f"{len(noise)} generators for a batch of {like.shape[0]} examples")
    return torch.stack(
        [torch.randn(n, dim, generator=g, dtype=like.dtype, device=like.device) for g in noise], dim=1
    )


@dataclass(frozen=True)
class Objective(ParameterGroup):
    r"""The training objective of the VAE family (a parameter group): the ``k``-sample bound with KL weight.

    Args:
        beta: weight :math:`\beta` of the KL term (1 = the bound).
        kl_warmup_epochs: anneal the KL weight linearly from 0 to ``beta`` over this many epochs (0 = off).
        kl_warmup_fraction: or over this share of the run's progress (:func:`lightning_gm.schedules.run_progress`:
            epochs, steps or ``max_time``), so that a budget compresses the warm-up with the rest of the recipe
            (0.05 = the VampPrior's 100 of 2,000 epochs); at most one of the two.
        free_bits: minimum KL (nats) per latent dimension / layer before it is penalised (0 = off; needs
            ``train_k = 1``).
        train_k: importance samples of the training objective (1 = the ELBO, a VAE; > 1 = the IWAE bound).
    """

    key: ClassVar[str] = "model.init_args.objective"
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    kl_warmup_fraction: float = 0.0
    free_bits: float = 0.0
    train_k: int = 1

    def __post_init__(self) -> None:
        self.require("train_k", self.train_k >= 1, ">= 1")
        self.require("free_bits", self.free_bits >= 0, ">= 0")
        self.require("kl_warmup_epochs", self.kl_warmup_epochs >= 0, ">= 0")
        self.require("kl_warmup_fraction", 0.0 <= self.kl_warmup_fraction <= 1.0, "in [0, 1]")
        if self.kl_warmup_fraction > 0 and self.kl_warmup_epochs > 0:
            raise ValueError("model.init_args.objective: give kl_warmup_epochs or kl_warmup_fraction, not both "
                             f"(got {self.kl_warmup_epochs} and {self.kl_warmup_fraction})")
        if self.free_bits > 0 and self.train_k > 1:
            raise ValueError(f"model.init_args.objective.free_bits={self.free_bits} needs the single-sample ELBO "
                             f"(train_k=1), got train_k={self.train_k}")

    @property
    def warmup(self) -> bool:
        """Whether the KL weight is warmed up."""
        return self.kl_warmup_epochs > 0 or self.kl_warmup_fraction > 0


#: flat hyperparameters of checkpoints written before the parameter groups: ``old name -> (group, field)``
#: (``chunk_size`` was the samples drawn at once, a memory knob with no field now)
FLAT_KEYS: FlatKeys = {
    "beta": ("objective", "beta"), "kl_warmup_epochs": ("objective", "kl_warmup_epochs"),
    "free_bits": ("objective", "free_bits"), "train_k": ("objective", "train_k"),
    "val_k": ("evaluation", "val_k"), "test_k": ("evaluation", "test_k"), "eval_seed": ("evaluation", "seed"),
    "chunk_size": None,
}


class Latents(NamedTuple):
    """A draw from the approximate posterior, per stochastic layer, nearest to ``x`` first."""

    z: list[Tensor]  #: samples, each ``(n, B, L_l)``
    log_q: list[Tensor]  #: ``log q(z_l | parent)``, each ``(n, B)``
    analytic_kl: Optional[Tensor] = None  #: closed-form KL per dimension ``(B, L)`` when it exists


class LatentVariableModel(GroupedHyperparameters, ManualLoop, GenerativeModel):
    """Shared machinery of the VAE family: the ``k``-sample objective, KL weight and free bits, the
    importance-weighted estimates, the seeded test evaluation. A subclass implements
    :meth:`posterior`, :meth:`log_prior_terms`, :meth:`log_likelihood`, :meth:`decode_mean` and
    :meth:`posterior_means`.

    Args:
        data_shape: shape of one example (linked from the data).
        likelihood: decoder observation model (default Bernoulli).
        objective: the training objective (:class:`Objective`: KL weight ``beta``, its warm-up in epochs or as a
            share of the run, ``free_bits``, ``train_k``).
        evaluation: the importance-weighted evaluation (``val_k``, ``test_k``, ``seed``, ``subset``, ``block``,
            ``sample_block``).
        optimizer: optimiser factory (default Adam, lr 1e-3).
        lr_scheduler: optional scheduler factory.
        update_batch_size, gradient_clip_val, gradient_clip_algorithm: the manual loop's (see
            :class:`~lightning_gm.models.manual_loop.ManualLoop`): examples per update when smaller than the
            loaded batch (``None``: one update per batch), gradient clipping of every update (``None``: none).
        data_mean_bias: before the first update, set the decoder's output bias to the likelihood's parameters
            at the training data's mean (Burda et al.'s code: the logit of the pixel means), so that training
            starts from the independent-pixel model instead of first learning it (a plateau of hundreds of
            updates); needs a decoder whose last layer is linear (the MLP decoders).
    """

    family = "vae"
    monitor = "val/elbo"
    monitor_mode = "max"
    groups = ("objective", "evaluation")
    flat_keys = FLAT_KEYS  # checkpoints written before the groups still load
    #: arguments added with the papers' recipes: older checkpoints were built with PyTorch's init, unbounded
    #: log-variances and no output-bias initialisation
    introduced = {**ManualLoop.introduced, "init": "torch", "log_var_bounds": None, "data_mean_bias": False}

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        likelihood: Optional[Likelihood] = None,
        objective: Objective = Objective(),
        evaluation: IWEvaluation = IWEvaluation(),
        optimizer: OptimizerCallable = adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        update_batch_size: Optional[int] = None,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: ClipAlgorithm = "norm",
        data_mean_bias: bool = False,
        **recorded: Any,
    ) -> None:
        # a subclass passes its **kwargs here; Lightning hands a checkpoint's bookkeeping keys to such a class
        unknown = sorted(set(recorded) - {UNSAVED_KEY})
        if unknown:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected keyword argument(s) {unknown}")
        super().__init__(data_shape, optimizer, lr_scheduler)
        self.init_manual_loop(update_batch_size, gradient_clip_val, gradient_clip_algorithm)
        self.data_mean_bias = data_mean_bias
        self.objective = Objective.coerce(objective)
        self.evaluation = IWEvaluation.coerce(evaluation)
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()

    @property
    def iw_evaluation(self) -> IWEvaluation:
        """The importance-weighted test evaluation this model declares (attached by the CLI's registry)."""
        return self.evaluation

    @property
    def test_k(self) -> int:
        return self.evaluation.test_k

    # --- what a member of the family implements ------------------------------------------------------
    def posterior(self, flat: Tensor, n: int, noise: Noise = None) -> Latents:
        """``n`` reparameterised draws from ``q(z | x)`` for a batch of flat ``x`` ``(B, D)``, the noise from
        ``noise`` (:func:`standard_normal_noise`)."""
        raise NotImplementedError

    def log_prior_terms(self, z: list[Tensor]) -> list[Tensor]:
        """``log p(z_l | z_{l+1})`` per layer (the top layer: the prior), each ``(n, B)``."""
        raise NotImplementedError

    def log_likelihood(self, flat: Tensor, z: list[Tensor]) -> Tensor:
        """``log p(x | z_1)``, ``(n, B)``."""
        raise NotImplementedError

    def decode_mean(self, z_top: Tensor) -> Tensor:
        """``E[x | z]`` of top-layer latents ``(B, L_top)`` (intermediate layers at their means): ``(B, D)``."""
        raise NotImplementedError

    def posterior_means(self, x: Tensor, noise: Noise = None) -> list[Tensor]:
        """``E_q[z_l]`` per layer for a batch, each ``(B, L_l)`` (Monte Carlo where not closed-form, with ``noise``
        of ``posterior_mean_samples`` samples)."""
        raise NotImplementedError

    def encode_mean(self, x: Tensor) -> Tensor:
        """A point in the top latent space for ``x`` (for interpolations): ``(B, L_top)``."""
        return self.posterior_means(x)[-1]

    @property
    def top_latent_dim(self) -> int:
        raise NotImplementedError

    def output_layer(self) -> nn.Module:
        """The decoder's last layer, whose outputs are the likelihood's parameters (for ``data_mean_bias``)."""
        raise NotImplementedError

    # --- initialisation from the data ------------------------------------------------------------------
    def _check_data_mean_bias(self) -> None:
        """Refuse ``data_mean_bias`` at construction when the decoder or the likelihood cannot take it."""
        if not self.data_mean_bias:
            return
        layer = self.output_layer()
        n = self.likelihood.num_params(self.data_dim)
        if not isinstance(layer, nn.Linear) or layer.bias is None or layer.out_features != n:
            raise ConfigError(f"model.init_args.data_mean_bias needs a decoder ending in a linear layer with {n} "
                              f"outputs and a bias (the MLP decoders), got {type(layer).__name__}; set it to false")
        try:
            self.likelihood.params_at_mean(torch.full((self.data_dim,), 0.5))
        except NotImplementedError as exc:
            raise ConfigError(f"model.init_args.data_mean_bias: {exc}; set it to false") from exc

    def on_train_start(self) -> None:
        if self.data_mean_bias and self.global_step == 0:  # a fresh run, not a resumed one
            self.set_output_bias_to_data_mean(self.trainer.train_dataloader)

    @torch.no_grad()
    def set_output_bias_to_data_mean(self, batches: Any) -> Tensor:
        """Set :meth:`output_layer`'s bias to ``likelihood.params_at_mean(mean of the batches)`` (one pass over
        them; under DDP the sums of every process) and return that mean."""
        total = torch.zeros(self.data_dim, dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            total += x.to(self.device).flatten(1).sum(0, dtype=torch.float64)
            count += x.shape[0]
        if self._trainer is not None:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        mean = (total / count).to(self.dtype)
        layer = self.output_layer()
        layer.bias.copy_(self.likelihood.params_at_mean(mean))
        return mean

    # --- the objective -------------------------------------------------------------------------------
    def kl_weight(self) -> float:
        """KL weight of the current training step (``beta`` outside training)."""
        obj = self.objective
        if not self.training or not obj.warmup or self._trainer is None:
            return obj.beta
        if obj.kl_warmup_fraction > 0:
            progress = run_progress(self.trainer, self.global_step / max(1.0, self.updates_per_epoch))
            return obj.beta * min(1.0, progress / obj.kl_warmup_fraction)
        return kl_warmup_weight(obj.beta, obj.kl_warmup_epochs, self.global_step, self.updates_per_epoch)

    def _penalty(self, kl_columns: Tensor) -> Tensor:
        """Batch-mean KL penalty from per-column KLs ``(B, C)``, with free bits per column."""
        if self.objective.free_bits > 0:
            return kl_columns.mean(0).clamp(min=self.objective.free_bits).sum()
        return kl_columns.sum(-1).mean()

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        flat = x.flatten(1)
        k = self.objective.train_k if stage == "train" else 1
        lat = self.posterior(flat, k)
        rec = self.log_likelihood(flat, lat.z)  # (k, B)
        layer_kl = [lq - lp for lq, lp in zip(lat.log_q, self.log_prior_terms(lat.z))]  # each (k, B)
        kl_mc = torch.stack(layer_kl, -1).sum(-1)  # (k, B)
        weight = self.kl_weight()
        terms: dict[str, Tensor] = {}
        if k == 1:
            rec1 = rec[0]
            columns = lat.analytic_kl if lat.analytic_kl is not None else torch.stack([t[0] for t in layer_kl], -1)
            kl = columns.sum(-1)
            terms["loss"] = -(rec1.mean() - weight * self._penalty(columns))
            terms.update(elbo=(rec1 - kl).mean(), reconstruction=rec1.mean(), kl=kl.mean())
        else:
            terms["loss"] = -log_mean_exp(rec - weight * kl_mc, 0).mean()
            terms.update(
                elbo=(rec - kl_mc).mean(), reconstruction=rec.mean(), kl=kl_mc.mean(),
                iw_bound=log_mean_exp(rec - kl_mc, 0).mean(),
            )
        if len(layer_kl) > 1:
            terms.update({f"kl_{i + 1}": t.mean() for i, t in enumerate(layer_kl)})
        if stage == "train" and self.objective.warmup:
            terms["kl_weight"] = torch.tensor(weight)
        if stage == "val" and self.evaluation.val_k > 0:
            terms["nll"] = -self.iw_log_prob(x, self.evaluation.val_k).mean()
        return terms

    # --- importance weights -------------------------------------------------------------------------
    def log_weights(self, x: Tensor, n: int, noise: Noise = None) -> Tensor:
        """``log p(x, z) - log q(z | x)`` for ``n`` samples per example: ``(n, B)`` (noise as :meth:`posterior`)."""
        flat = x.flatten(1)
        lat = self.posterior(flat, n, noise)
        log_p = torch.stack(self.log_prior_terms(lat.z), -1).sum(-1)
        return self.log_likelihood(flat, lat.z) + log_p - torch.stack(lat.log_q, -1).sum(-1)

    def iw_log_prob(self, x: Tensor, k: int) -> Tensor:
        """The ``k``-sample importance-weighted bound of ``log p(x)``, ``(B,)`` (global RNG; passes of at most the
        evaluation's ``block * sample_block`` rows)."""
        chunk = max(1, self.evaluation.rows // max(1, x.shape[0]))
        return importance_weighted_log_prob(self.log_weights, x, k, chunk).log_prob.to(x.dtype)

    # --- the shared interface -----------------------------------------------------------------------
    @property
    def estimator(self) -> str:
        """``iwae-<test_k>`` (a test of a subset is labelled by its evaluation, e.g. ``iwae-5000 (1,000 of 10,000,
        evenly spaced)``, in ``summary.json``)."""
        return f"iwae-{self.evaluation.test_k}"

    def log_prob(self, x: Tensor) -> Tensor:
        return self.iw_log_prob(x, self.evaluation.test_k)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        # the bound terms per batch; test/nll comes from the declared evaluation at the end of the epoch
        self._common_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        pass

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        z = self.prior_top.sample(n, device=self.device).to(self.dtype)
        return self.decode_mean(z).view(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the (top-layer) posterior mean: ``(B, *data_shape)``."""
        return self.decode_mean(self.encode_mean(x)).view(x.shape)

    @property
    def prior_top(self) -> Prior:
        raise NotImplementedError
