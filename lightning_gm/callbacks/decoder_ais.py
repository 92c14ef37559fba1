r"""Decoder-based AIS test evaluation (Wu et al. 2017): the same ``log p(x)`` yardstick for any model that
decodes standard-normal latents, VAEs, GANs and moment-matching nets alike.

At the end of the test epoch the callback takes the first ``test_examples`` examples of the test set, runs
:func:`~lightning_gm.estimators.decoder_ais.decoder_ais_log_prob` on them with its ``ais`` group
(:class:`~lightning_gm.estimators.decoder_ais.HMCAnnealing`: ``ais.chains`` chains per example, ``ais.steps``
sigmoidal intermediate distributions, HMC transitions; the same group and names as the GAN's and GMMN's) and logs

* ``test/nll_ais_decoder`` :math:`= -\frac1N \sum_i \log \hat p(x_i)` (nats per example; estimator
  ``ais-decoder``, a stochastic lower bound of :math:`\log p(x)`) and ``test/nll_ais_decoder_stderr``,
* ``test/ais_decoder_examples``, ``test/ais_decoder_accept_rate``, ``test/ais_decoder_seconds`` and, for a
  Gaussian observation model, ``test/ais_decoder_sigma`` (the number means nothing without it),

and writes the per-example estimates and log-weights to ``<run>/ais_decoder/test.pt``.

Which :math:`p(x \mid z)` (``observation``):

* ``model``: the model's own, from ``decoder_log_likelihood(z, x) -> (N,)`` if it has one, else, for a model
  with one latent layer (``latent_dim``), a standard-normal ``prior`` and ``log_likelihood(x, [z])`` (a one-layer
  :class:`~lightning_gm.models.vae.VAE`), that likelihood (Bernoulli, Gaussian, ...);
* ``gaussian``: :math:`\mathcal N(x; g(z), \sigma^2 I)` around the model's decoder mean :math:`g(z)`
  (``decode_mean(z)``, else ``generate(z)``, else a ``generator`` module) with the stated ``obs_sigma``;
* ``bernoulli``: pixels with mean :math:`g(z)` (logits :math:`\operatorname{logit} g(z)`, clipped at
  :math:`10^{-6}`).

The latent size is the model's ``latent_dim``; the prior is always :math:`\mathcal N(0, I)`.

Examples are annealed in blocks of ``batch_size``; block ``j`` draws from a generator seeded by
``(ais.seed, j)`` and blocks are shared round-robin among DDP processes, so the numbers depend on the seed and
``batch_size`` but not on the number of processes.

From the command line, on a trained VAE (the IWAE evaluation of the model runs beside it)::

    lightning_gm test --config conf/vae.yaml --ckpt_path=<run>/checkpoints/best-....ckpt \
        --trainer.callbacks+=lightning_gm.callbacks.DecoderAISEvaluation \
        --trainer.callbacks.test_examples=100 --trainer.callbacks.ais.steps=1000 --trainer.callbacks.ais.leapfrog_steps=5

References: Wu, Burda, Salakhutdinov & Grosse (2017), On the Quantitative Analysis of Decoder-Based
Generative Models, ICLR; Neal (2001), Annealed importance sampling.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_gm.callbacks.iwae import fetch_examples, test_examples
from lightning_gm.errors import ConfigError
from lightning_gm.estimators.decoder_ais import (
    HMCAnnealing,
    LogLikelihoodFn,
    bernoulli_observation,
    decoder_ais_log_prob,
    gaussian_observation,
)
from lightning_gm.estimators.hmc import frozen_parameters
from lightning_gm.estimators.seeded import example_generator, gather_by_index, shard_indices
from lightning_gm.nn.priors import StandardNormal
from lightning_gm.progress import trainer_progress

__all__ = ["DecoderAISEvaluation", "decoder_log_likelihood_fn"]

Observation = Literal["model", "gaussian", "bernoulli"]


def _decoder_mean(model: Any) -> Callable[[Tensor], Tensor]:
    for name in ("decode_mean", "generate"):
        fn = getattr(model, name, None)
        if callable(fn):
            return fn
    gen = getattr(model, "generator", None)
    if isinstance(gen, torch.nn.Module):
        return gen
    raise ConfigError(
        f"DecoderAISEvaluation: {type(model).__name__} has no decoder mean (decode_mean(z), generate(z) or a "
        f"`generator` module) for the Gaussian/Bernoulli observation model"
    )


def decoder_log_likelihood_fn(model: Any, observation: Observation = "model",
                              obs_sigma: Optional[float] = None) -> LogLikelihoodFn:
    r"""The :math:`\log p(x \mid z)` callable ``(z (N, L), x (N, D)) -> (N,)`` of ``model`` for decoder AIS.

    Args:
        model: a model with ``decoder_log_likelihood``, a one-latent-layer model with a standard-normal ``prior``
            and ``log_likelihood(x, [z])`` (a VAE), or anything with a decoder mean.
        observation: ``model``, ``gaussian`` or ``bernoulli`` (see the module docstring).
        obs_sigma: standard deviation of the Gaussian observation model (required for ``gaussian``).
    """
    if observation == "model":
        own = getattr(model, "decoder_log_likelihood", None)
        if callable(own):
            return own
        prior = getattr(model, "prior", None)
        if callable(getattr(model, "log_likelihood", None)) and isinstance(getattr(model, "latent_dim", None), int) \
                and prior is not None:
            if not isinstance(prior, StandardNormal):
                raise ConfigError(
                    f"DecoderAISEvaluation anneals from a standard normal prior; this model's prior is "
                    f"{type(prior).__name__}"
                )
            return lambda z, x: model.log_likelihood(x, [z])
        raise ConfigError(
            f"DecoderAISEvaluation.observation='model' needs a model with decoder_log_likelihood(z, x), or one latent "
            f"layer (latent_dim), a standard-normal prior and log_likelihood(x, [z]) (a one-layer VAE); "
            f"{type(model).__name__} has neither: set observation: gaussian and obs_sigma (the observation standard "
            f"deviation)"
        )
    if observation == "gaussian":
        if obs_sigma is None or not obs_sigma > 0:
            raise ConfigError(f"DecoderAISEvaluation.observation='gaussian' needs obs_sigma > 0, got obs_sigma={obs_sigma}")
        return gaussian_observation(_decoder_mean(model), obs_sigma)
    if observation == "bernoulli":
        mean = _decoder_mean(model)
        return bernoulli_observation(lambda z: torch.logit(mean(z), eps=1e-6))
    raise ConfigError(f"DecoderAISEvaluation.observation must be model, gaussian or bernoulli, got {observation!r}")


def _latent_dim(model: Any) -> int:
    dim = getattr(model, "latent_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"DecoderAISEvaluation needs the model's latent size as `latent_dim`; "
                          f"{type(model).__name__} has latent_dim={dim!r}")
    return dim


class DecoderAISEvaluation(pl.Callback):
    """AIS ``log p(x)`` of a decoder-based model on (a subset of) the test set, estimator ``ais-decoder``.

    Args:
        ais: chains per example (16 in Wu et al.), steps of the sigmoidal schedule (Wu et al. use 1,000 to
            10,000+), leapfrog steps, initial step size, target acceptance and the evaluation seed (block ``j`` of
            examples uses a generator seeded by ``(ais.seed, j)``): :class:`~lightning_gm.estimators.decoder_ais.HMCAnnealing`.
        test_examples: evaluate the first this many test examples (0 = the whole test set; AIS is slow).
        observation: ``model`` (the model's own likelihood), ``gaussian`` (with ``obs_sigma``) or ``bernoulli``.
        obs_sigma: observation standard deviation of the ``gaussian`` model (state it beside the number).
        batch_size: examples annealed at once (memory: ``batch_size * ais.chains`` chains).
        progress: show a progress bar (rank 0).
        save: write ``<run>/ais_decoder/test.pt`` with the per-example estimates and log-weights.
    """

    def __init__(
        self,
        ais: HMCAnnealing = HMCAnnealing(),
        test_examples: int = 100,
        observation: Observation = "model",
        obs_sigma: Optional[float] = None,
        batch_size: int = 50,
        progress: bool = True,
        save: bool = True,
    ) -> None:
        bad = [
            (name, value, need)
            for name, value, ok, need in [
                ("test_examples", test_examples, test_examples >= 0, ">= 0 (0 = all)"),
                ("batch_size", batch_size, batch_size >= 1, ">= 1"),
                ("observation", observation, observation in ("model", "gaussian", "bernoulli"),
                 "model, gaussian or bernoulli"),
                ("obs_sigma", obs_sigma, observation != "gaussian" or (obs_sigma is not None and obs_sigma > 0),
                 "> 0 with observation: gaussian"),
            ]
            if not ok
        ]
        if bad:
            name, value, need = bad[0]
            raise ConfigError(f"DecoderAISEvaluation.{name} must be {need}, got {value!r}")
        self.ais = HMCAnnealing.coerce(ais)
        self.test_examples, self.batch_size = test_examples, batch_size
        self.observation, self.obs_sigma = observation, obs_sigma
        self.progress, self.save = progress, save
        self.results: dict[str, float] = {}
        self.per_example: Optional[Tensor] = None  #: ``log p(x)`` estimates of the evaluated examples
        self.last_path: Optional[Path] = None

    @property
    def estimator(self) -> str:
        return "ais-decoder"

    def on_test_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # fail before the test loop, not after it
        decoder_log_likelihood_fn(pl_module, self.observation, self.obs_sigma)
        _latent_dim(pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        """Run the evaluation on the trainer's test set, log it and return the numbers."""
        start = time.time()
        ll = decoder_log_likelihood_fn(pl_module, self.observation, self.obs_sigma)
        latent_dim = _latent_dim(pl_module)
        dataset = test_examples(trainer)
        n = len(dataset) if self.test_examples == 0 else min(self.test_examples, len(dataset))
        blocks = torch.arange(n).split(self.batch_size)
        mine = shard_indices(len(blocks), trainer.global_rank, trainer.world_size).tolist()
        steps = self.ais.steps
        bar = trainer_progress(trainer, f"decoder AIS ({n} ex x {self.ais.chains} chains x {steps} steps)",
                               enabled=self.progress)
        total = len(mine) * steps
        was_training = pl_module.training
        pl_module.eval()
        lps, lws, idxs, acc = [], [], [], []
        try:
            # the test loop runs under inference mode; HMC needs autograd
            with torch.inference_mode(False), torch.enable_grad(), frozen_parameters(pl_module):
                for k, j in enumerate(mine):
                    idx = blocks[j]
                    x = fetch_examples(dataset, idx).clone().to(pl_module.device).flatten(1)
                    res = decoder_ais_log_prob(
                        ll, x, latent_dim, self.ais,
                        generator=example_generator(self.ais.seed, j, pl_module.device),
                        progress=lambda s, t, k=k: bar(k * steps + s, total),
                    )
                    lps.append(res.log_prob)
                    lws.append(res.log_weights.T)  # (b, chains)
                    idxs.append(idx)
                    acc.append(res.accept_rate * len(idx))
        finally:
            pl_module.train(was_training)
            bar.close()
        device = pl_module.device
        local = torch.cat(idxs) if idxs else torch.zeros(0, dtype=torch.long)
        lp_local = torch.cat(lps).double() if lps else torch.zeros(0, dtype=torch.float64)
        lw_local = torch.cat(lws).double() if lws else torch.zeros(0, self.ais.chains, dtype=torch.float64)
        acc_local = torch.tensor([sum(acc), float(len(local))], dtype=torch.float64, device=device)
        lp_all = gather_by_index(lp_local.to(device), local, n).cpu()
        lw_all = gather_by_index(lw_local.to(device), local, n).cpu()
        if trainer.world_size > 1:
            acc_local = trainer.strategy.reduce(acc_local, reduce_op="sum")
        res_log = {
            "test/nll_ais_decoder": float(-lp_all.mean()),
            "test/nll_ais_decoder_stderr": float(lp_all.std() / math.sqrt(n)) if n > 1 else 0.0,
            "test/ais_decoder_examples": float(n),
            "test/ais_decoder_accept_rate": float(acc_local[0] / acc_local[1].clamp(min=1)),
            "test/ais_decoder_seconds": time.time() - start,
        }
        if self.observation == "gaussian":
            res_log["test/ais_decoder_sigma"] = float(self.obs_sigma)  # type: ignore[arg-type]
        for key, value in res_log.items():
            pl_module.log(key, value, sync_dist=False)
        self.results, self.per_example = res_log, lp_all
        if self.save and trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / "ais_decoder" / "test.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({
                "estimator": self.estimator, "log_prob": lp_all, "log_weights": lw_all, "indices": torch.arange(n),
                "ais": self.ais.as_dict(), "observation": self.observation, "obs_sigma": self.obs_sigma,
                "batch_size": self.batch_size,
            }, path)
            self.last_path = path
        return res_log
