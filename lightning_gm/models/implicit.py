r"""Shared base of the generator-only ("implicit") models, the GAN and the moment-matching net.

A generator :math:`G` maps a latent :math:`z \sim \mathcal N(0, I_L)` to a point :math:`G(z)` of data space;
the model defines no density of its own. For the platform's test table it is given one, as in Wu et al.
(2017), by a Gaussian observation model with a stated standard deviation :math:`\sigma`:

.. math::

    p_\sigma(x) = \int \mathcal N(z; 0, I)\, \mathcal N\big(x; G(z), \sigma^2 I\big)\, dz ,

estimated by annealed importance sampling from the prior to the posterior over :math:`z` with HMC
transitions (:mod:`lightning_gm.estimators.decoder_ais`). The estimate is a stochastic lower bound in
expectation, and it depends strongly on :math:`\sigma`: the estimator name states both (e.g.
``ais-decoder(sigma=0.05,steps=1000)``). Wu et al. choose :math:`\sigma` on validation data; here
``val_ais_examples > 0`` logs ``val/nll_ais`` for the configured ``obs_sigma`` on the first validation
examples, so a sweep over ``obs_sigma`` with ``lightning_gm validate`` picks it (see :class:`ImplicitGenerativeModel`).
Beside it, bidirectional Monte Carlo (Grosse et al. 2016; Wu et al. 2017) on ``bdmc_examples`` examples
*simulated* from the model brackets :math:`\log p_\sigma(x)` between forward AIS (a stochastic lower bound, the
conservative side: ``test/nll_conservative``) and reverse AIS from the latent that generated each example (a
stochastic upper bound: ``test/nll_subset``); the gap is what forward AIS with these settings can miss.
The AIS settings are one group, ``ais`` (:class:`~lightning_gm.estimators.decoder_ais.HMCAnnealing`: chains,
steps, leapfrog steps, step size, target acceptance, seed), the same group and names as the
:class:`~lightning_gm.callbacks.decoder_ais.DecoderAISEvaluation` callback's.

Both models also log ``val/mmd2``: the biased squared MMD (kernel bandwidths of Li et al. 2015) between a
validation batch and as many samples, a sample-quality number comparable between the GAN and the GMMN,
and the metric that picks their best checkpoint.

References: Wu, Burda, Salakhutdinov & Grosse (2017), On the Quantitative Analysis of Decoder-Based
Generative Models; Goodfellow et al. (2014); Li, Swersky & Zemel (2015).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.decoder_ais import HMCAnnealing, decoder_ais_log_prob, decoder_bdmc, gaussian_observation
from lightning_gm.estimators.hmc import frozen_parameters
from lightning_gm.estimators.mmd import DEFAULT_BANDWIDTHS, mmd2
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.nn.generators import MLPGenerator
from lightning_gm.progress import trainer_progress

__all__ = ["ImplicitGenerativeModel", "NetFactory", "FLAT_HMC_KEYS"]

#: ``(in_features, out_features) -> network`` on flat vectors
NetFactory = Callable[[int, int], nn.Module]

#: flat keys of checkpoints written before the ``ais`` group, and their fields in it
FLAT_HMC_KEYS = {"ais_chains": ("ais", "chains"), "ais_steps": ("ais", "steps"),
                 "ais_leapfrog_steps": ("ais", "leapfrog_steps"), "ais_step_size": ("ais", "step_size"),
                 "ais_target_accept": ("ais", "target_accept"), "eval_seed": ("ais", "seed")}


class ImplicitGenerativeModel(GroupedHyperparameters, GenerativeModel):
    r"""A generator :math:`x = G(z)`, :math:`z \sim \mathcal N(0, I)`, with a decoder-AIS test log-likelihood.

    Choosing ``obs_sigma`` on validation data (Wu et al. 2017), for a trained run::

        for s in 0.02 0.05 0.1; do
          lightning_gm validate --config runs/gan/RUN/config.yaml --ckpt_path runs/gan/RUN/checkpoints/last.ckpt \
            --model.init_args.obs_sigma=$s --model.init_args.val_ais_examples=100 --trainer.limit_val_batches=1
        done   # keep the sigma with the smallest val/nll_ais

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: size of :math:`z`.
        generator: factory ``(latent_dim, D) -> network`` (default :class:`~lightning_gm.nn.generators.MLPGenerator`
            with ``hidden``), e.g. :class:`~lightning_gm.nn.generators.ConvGenerator`.
        hidden: hidden widths of the default MLP generator.
        obs_sigma: standard deviation :math:`\sigma` of the Gaussian observation model of the test likelihood.
        ais: the decoder AIS (:class:`~lightning_gm.estimators.decoder_ais.HMCAnnealing`: chains per example, steps,
            leapfrog steps, step size, target acceptance, and the seed of its noise: each call to :meth:`log_prob`
            starts from it, so it is deterministic).
        val_ais_examples: examples of the first validation batch whose ``val/nll_ais`` is estimated each
            validation (0 = never; > 0 to choose ``obs_sigma`` on validation data).
        bdmc_examples: simulated examples of the bidirectional Monte Carlo bracket at test (0 = none); it costs
            twice the decoder AIS of as many test examples.
        **kwargs: ``optimizer`` (of the generator; default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.
    """

    family = "implicit"
    monitor = "val/mmd2"
    monitor_mode = "min"

    introduced = {"bdmc_examples": 0}  # checkpoints from before the BDMC bracket test as they did then
    groups = ("ais",)
    flat_keys = FLAT_HMC_KEYS  # checkpoints written before the group still load

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_dim: int = 100,
        generator: Optional[NetFactory] = None,
        hidden: Sequence[int] = (256, 512),
        obs_sigma: float = 0.05,
        ais: HMCAnnealing = HMCAnnealing(),
        val_ais_examples: int = 0,
        bdmc_examples: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.ais = HMCAnnealing.coerce(ais)
        checks = {
            "latent_dim": (latent_dim >= 1, latent_dim), "obs_sigma": (obs_sigma > 0, obs_sigma),
            "val_ais_examples": (val_ais_examples >= 0, val_ais_examples),
            "bdmc_examples": (bdmc_examples >= 0, bdmc_examples),
        }
        for key, (ok, value) in checks.items():
            if not ok:
                raise ConfigError(f"model.init_args.{key}: invalid value {value!r} (see the {type(self).__name__} docstring)")
        self.latent_dim = int(latent_dim)
        self.obs_sigma = float(obs_sigma)
        self.val_ais_examples, self.bdmc_examples = int(val_ais_examples), int(bdmc_examples)
        self._bdmc_label: Optional[str] = None
        self._bdmc_gap: Optional[float] = None
        factory = generator or (lambda i, o: MLPGenerator(i, o, hidden=hidden))
        self.generator = factory(self.latent_dim, self.data_dim)
        self.last_accept_rate: Optional[float] = None

    # --- the generator ---------------------------------------------------------------------------
    def prior_noise(self, n: int) -> Tensor:
        """``n`` draws of :math:`z \\sim \\mathcal N(0, I)`, ``(n, latent_dim)``."""
        return torch.randn(n, self.latent_dim, device=self.device, dtype=self.dtype)

    def generate(self, z: Tensor) -> Tensor:
        """Flat generator output :math:`G(z)`, ``(N, D)``, for latents ``(N, latent_dim)``."""
        return self.generator(z)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.generate(self.prior_noise(n)).view(n, *self.data_shape)

    def sample_mmd2(self, x: Tensor) -> Tensor:
        """Biased squared MMD (bandwidths of Li et al.) between ``x`` and as many generator samples."""
        with torch.no_grad():
            return mmd2(x.flatten(1), self.generate(self.prior_noise(x.shape[0])), DEFAULT_BANDWIDTHS, unbiased=False)

    # --- the test likelihood ------------------------------------------------------------------
    def decoder_log_likelihood(self, z: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log \mathcal N(x; G(z), \sigma^2 I)` with :math:`\sigma` = ``obs_sigma``, ``(N,)`` for ``z``
        ``(N, latent_dim)`` and flat ``x`` ``(N, D)`` (also what
        :class:`~lightning_gm.callbacks.decoder_ais.DecoderAISEvaluation` uses with ``observation: model``)."""
        return gaussian_observation(self.generate, self.obs_sigma)(z, x)

    @property
    def estimator(self) -> str:
        return f"ais-decoder(sigma={self.obs_sigma:g},steps={self.ais.steps})"

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Decoder-AIS estimate of :math:`\log p_\sigma(x)`, ``(B,)`` (nats; ``ais.chains`` chains of
        ``ais.steps`` HMC steps per example; deterministic given ``ais.seed``)."""
        gen = torch.Generator(device=x.device).manual_seed(self.ais.seed)
        was_training = self.generator.training
        self.generator.eval()
        bar = None
        if self._trainer is not None:
            bar = trainer_progress(self.trainer, f"decoder AIS, {x.shape[0]} examples x {self.ais.chains} chains")
        try:
            # Lightning evaluates under inference mode; HMC needs gradients with respect to z
            with torch.inference_mode(False), torch.enable_grad(), frozen_parameters(self.generator):
                flat = x.flatten(1).detach().clone()
                result = decoder_ais_log_prob(
                    gaussian_observation(self.generate, self.obs_sigma), flat, self.latent_dim, self.ais,
                    generator=gen, progress=bar,
                )
        finally:
            self.generator.train(was_training)
            if bar is not None:
                bar.close()
        self.last_accept_rate = float(result.accept_rate)
        return result.log_prob.detach().to(x.dtype)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if self.last_accept_rate is not None:
            self.log("test/ais_accept_rate", self.last_accept_rate, on_epoch=True, batch_size=1)

    def bdmc(self, n: int) -> tuple[Tensor, Tensor]:
        """Bidirectional Monte Carlo on ``n`` examples simulated from the model (:math:`z \\sim \\mathcal N(0, I)`,
        :math:`x = G(z) + \\sigma\\epsilon`): ``(lower, upper)`` per-example bounds on :math:`\\log p_\\sigma(x)`
        (deterministic given ``ais.seed``)."""
        gen = torch.Generator(device=self.device).manual_seed(self.ais.seed + 1)
        was_training = self.generator.training
        self.generator.eval()
        bar = trainer_progress(self.trainer, f"BDMC, {n} simulated examples x {self.ais.chains} chains") \
            if self._trainer is not None else None
        try:
            with torch.inference_mode(False), torch.enable_grad(), frozen_parameters(self.generator):
                z = torch.randn(n, self.latent_dim, generator=gen, device=self.device, dtype=self.dtype)
                with torch.no_grad():
                    x = self.generate(z)
                    x = (x + self.obs_sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)).flatten(1)
                res = decoder_bdmc(gaussian_observation(self.generate, self.obs_sigma), x.detach().clone(), z, self.ais,
                                   generator=gen, progress=bar)
        finally:
            self.generator.train(was_training)
            if bar is not None:
                bar.close()
        return res.lower, res.upper

    def on_test_epoch_end(self) -> None:
        """The bracket on simulated examples (``test/nll_conservative``: forward AIS, ``test/nll_subset``: reverse
        AIS, ``test/bracket_examples``), then the test NLL."""
        if self.bdmc_examples > 0:
            lower, upper = self.bdmc(self.bdmc_examples)
            n = lower.numel()
            se = (lambda t: float(t.std() / n**0.5) if n > 1 else 0.0)
            metrics = {"nll_conservative": float(-lower.mean()), "nll_conservative_stderr": se(lower),
                       "nll_subset": float(-upper.mean()), "nll_subset_stderr": se(upper), "bracket_examples": float(n)}
            for key, value in metrics.items():
                self.log(f"test/{key}", value, sync_dist=False)
            self._bdmc_label = f"bdmc {self.ais.chains:,}x{self.ais.steps:,} on {n:,} simulated examples"
            self._bdmc_gap = metrics["nll_conservative"] - metrics["nll_subset"]
        super().on_test_epoch_end()

    def summary_fields(self) -> dict[str, Any]:
        """The BDMC bracket's label, and a warning when it is wider than 1 nat."""
        if self._bdmc_label is None or self._bdmc_gap is None:
            return {}
        out: dict[str, Any] = {"conservative_estimator": self._bdmc_label}
        if abs(self._bdmc_gap) > 1.0:
            out["warnings"] = [f"decoder AIS bracket {self._bdmc_gap:.2f} nats wide ({self._bdmc_label}; over 1 nat)"]
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().validation_step(batch, batch_idx)
        if batch_idx == 0 and self.val_ais_examples > 0:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            nll = -self.log_prob(x[: self.val_ais_examples])
            self.log("val/nll_ais", nll.mean(), batch_size=nll.shape[0])
        return loss
