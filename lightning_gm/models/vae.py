r"""Variational autoencoders (Kingma & Welling 2014) and importance-weighted autoencoders (Burda et al. 2016),
with one or several stochastic layers, injected priors, flows in the posterior and any decoder likelihood.

Training maximises the reparameterised ``k``-sample bound (``train_k = 1``: the ELBO; ``> 1``: the IWAE bound)

.. math::

    \mathcal L_k(x) = \mathbb E\left[\log \frac1k \sum_{j=1}^k w_j\right], \qquad
    \log w = \log p(x \mid z) + \beta\,\big(\log p(z) - \log q(z \mid x)\big), \quad z_j \sim q(z \mid x),

where :math:`\beta` is the KL weight (warm-up from 0 over ``kl_warmup_epochs``; 1 = the true bound).
For ``k = 1`` the KL term :math:`\mathrm{KL}(q \| p) = \mathbb E_q[\log q - \log p]` is analytic when the
prior allows (standard normal, no flow) and a one-sample estimate otherwise; with free bits
:math:`\lambda` it is replaced by :math:`\sum_j \max(\lambda, \overline{\mathrm{KL}}_j)` (per latent
dimension when analytic, else per stochastic layer; the bar is the batch mean).

A flow in the posterior (:mod:`lightning_gm.nn.posterior`) changes :math:`\log q` by its log-det:
:math:`\log q_K(z_K|x) = \log q_0(z_0|x) - \sum_k \log|\det \partial z_k / \partial z_{k-1}|`.

The objective's knobs form the parameter group :class:`Objective`, the evaluation's the group
:class:`~lightning_gm.estimators.seeded.IWEvaluation` (``test_k = 5000``, deterministic given its ``seed``,
batched, sharded over DDP processes); the model declares that evaluation (:attr:`LatentVariableModel.iw_evaluation`)
and the ``lightning_gm`` command attaches it (:func:`lightning_gm.callbacks.registry.evaluations_for`):
``test/nll``, ``test/iw_elbo``, ``test/active_units``.

References: Kingma & Welling (2014), Auto-Encoding Variational Bayes; Burda, Grosse & Salakhutdinov (2016),
Importance Weighted Autoencoders (784-200-200-50 and 784-[200-200]-100-[100-100]-50 architectures);
Sønderby et al. (2016), Ladder VAEs (warm-up); Kingma et al. (2016), IAF (free bits); Tomczak & Welling
(2018), VampPrior; Rezende & Mohamed (2015), Normalizing Flows.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.seeded import IWEvaluation
from lightning_gm.models.latent import (
    FLAT_KEYS,
    FlowFactory,
    LatentVariableModel,
    Latents,
    NetFactory,
    Noise,
    Objective,
    kl_warmup_weight,
    standard_normal_noise,
)
from lightning_gm.nn.distributions import kl_normal_std_normal, log_normal_diag
from lightning_gm.nn.mlp import MLP, bounded, check_bounds, check_init
from lightning_gm.nn.priors import Prior, StandardNormal

__all__ = [
    "VAE", "HierarchicalVAE", "LatentVariableModel", "Latents", "Objective", "IWEvaluation", "kl_warmup_weight",
    "standard_normal_noise", "FLAT_KEYS",
]


def _mlp_factory(hidden: Sequence[int], activation: str, init: str) -> NetFactory:
    return lambda i, o: MLP([i, *hidden, o], activation, init)


class VAE(LatentVariableModel):
    r"""One stochastic layer: Gaussian encoder (optionally followed by a flow), injected prior and likelihood.

    .. math::

        q(z_0 \mid x) = \mathcal N(\mu(x), \operatorname{diag} e^{v(x)}), \quad z = f_K \circ \dots \circ f_1(z_0; h(x)),
        \qquad p(x, z) = p(z)\, p(x \mid z)

    The encoder network outputs ``(mu, log_var, h)`` (``2 L + context_features`` numbers), the decoder the
    likelihood's parameters.

    Args:
        latent_dim: dimension of ``z``.
        hidden: hidden widths of the default MLP encoder; the default decoder mirrors them.
        activation: hidden activation of the default MLPs (``tanh`` as in Burda et al.; ``gated`` = gated dense
            units as in Tomczak & Welling).
        init: weight initialisation of the default MLPs (:data:`~lightning_gm.nn.mlp.INITS`): ``xavier_uniform``
            with zero biases (Burda et al., for tanh), ``he_normal`` (Tomczak & Welling, for gated/ReLU units),
            ``torch`` (PyTorch's default, which leaves tanh networks on a plateau for hundreds of updates).
        log_var_bounds: ``[low, high]``: the encoder's log-variance is ``hardtanh(v(x), low, high)`` (Tomczak &
            Welling's ``[-6, 2]``; it also bounds the VampPrior's components); ``null``: unbounded.
        prior: ``p(z)`` (default standard normal; e.g. :class:`~lightning_gm.nn.priors.VampPrior`).
        encoder: factory ``(D, 2 L + context_features) -> network`` replacing the MLP (e.g. ConvEncoder).
        decoder: factory ``(L, num_params) -> network`` replacing the MLP (e.g. ConvDecoder).
        posterior_flow: factory ``(L, context_features) -> PosteriorFlow`` (planar, IAF); none by default.
        context_features: size of the encoder's context ``h`` for a conditional flow (IAF).
        posterior_mean_samples: samples of the Monte Carlo ``E_q[z]`` with a flow (active units).
        **kwargs: the family's shared arguments (:class:`LatentVariableModel`): ``data_shape``, ``likelihood``
            (default Bernoulli), ``objective`` (:class:`Objective`), ``evaluation``
            (:class:`~lightning_gm.estimators.seeded.IWEvaluation`), ``optimizer`` (default Adam, lr 1e-3),
            ``lr_scheduler``, ``update_batch_size``, ``data_mean_bias``.
    """

    def __init__(
        self,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        init: str = "xavier_uniform",
        log_var_bounds: Optional[tuple[float, float]] = None,
        prior: Optional[Prior] = None,
        encoder: Optional[NetFactory] = None,
        decoder: Optional[NetFactory] = None,
        posterior_flow: Optional[FlowFactory] = None,
        context_features: int = 0,
        posterior_mean_samples: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["likelihood", "prior", "encoder", "decoder", "posterior_flow",
                                          "optimizer", "lr_scheduler"])
        if latent_dim < 1:
            raise ConfigError(f"model.init_args.latent_dim must be >= 1, got {latent_dim}")
        check_init(init, "model.init_args.init")
        self.log_var_bounds = check_bounds(log_var_bounds, "model.init_args.log_var_bounds")
        self.latent_dim, self.context_features = latent_dim, context_features
        self.posterior_mean_samples = posterior_mean_samples
        enc = encoder or _mlp_factory(hidden, activation, init)
        dec = decoder or _mlp_factory(list(reversed(list(hidden))), activation, init)
        self.encoder = enc(self.data_dim, 2 * latent_dim + context_features)
        self.decoder = dec(latent_dim, self.likelihood.num_params(self.data_dim))
        self.flow = posterior_flow(latent_dim, context_features) if posterior_flow is not None else None
        self.prior = prior if prior is not None else StandardNormal()
        self.prior.build(latent_dim)
        self.prior.bind(self.encode, self.data_shape)
        self._check_data_mean_bias()

    # --- the model ----------------------------------------------------------------------------------
    def _encode_all(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.encoder(flat)
        L = self.latent_dim
        return out[..., :L], bounded(out[..., L : 2 * L], self.log_var_bounds), out[..., 2 * L :]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z_0|x)`` parameters ``(mu, log_var)``, each ``(B, latent_dim)``."""
        mu, log_var, _ = self._encode_all(x.flatten(1))
        return mu, log_var

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters of ``p(x|z)``, shape ``(..., num_params)``."""
        return self.decoder(z)

    def output_layer(self) -> nn.Module:
        modules = list(self.decoder.modules())
        return modules[-1]

    @property
    def prior_top(self) -> Prior:
        return self.prior

    @property
    def top_latent_dim(self) -> int:
        return self.latent_dim

    def posterior(self, flat: Tensor, n: int, noise: Noise = None) -> Latents:
        mu, log_var, h = self._encode_all(flat)
        z0 = mu + torch.exp(0.5 * log_var) * standard_normal_noise(n, flat, self.latent_dim, noise)
        log_q = log_normal_diag(z0, mu, log_var)
        analytic = None
        if self.flow is not None:
            z, ladj = self.flow(z0, h if self.context_features else None)
            log_q = log_q - ladj
        else:
            z = z0
            if self.prior.analytic_kl:
                analytic = 0.5 * (mu**2 + torch.exp(log_var) - 1.0 - log_var)
        return Latents([z], [log_q], analytic)

    def log_prior_terms(self, z: list[Tensor]) -> list[Tensor]:
        return [self.prior.log_prob(z[0])]

    def log_likelihood(self, flat: Tensor, z: list[Tensor]) -> Tensor:
        return self.likelihood.log_prob(flat, self.decode(z[0]))

    def decode_mean(self, z_top: Tensor) -> Tensor:
        return self.likelihood.mean(self.decode(z_top))

    @torch.no_grad()
    def posterior_means(self, x: Tensor, noise: Noise = None) -> list[Tensor]:
        flat = x.flatten(1)
        if self.flow is None:
            return [self.encode(flat)[0]]
        return [self.posterior(flat, self.posterior_mean_samples, noise).z[0].mean(0)]

    def kl_analytic(self, x: Tensor) -> Tensor:
        """Closed-form ``KL(q(z|x) || N(0, I))`` per example (standard-normal prior, no flow)."""
        return kl_normal_std_normal(*self.encode(x))


class HierarchicalVAE(LatentVariableModel):
    r"""Several stochastic layers (Burda et al.'s two-layer 784-[200-200]-100-[100-100]-50 by default).

    .. math::

        q(z_1, \dots, z_S \mid x) = q(z_1 \mid x) \prod_{s>1} q(z_s \mid z_{s-1}), \qquad
        p(x, z) = p(z_S) \prod_{s<S} p(z_s \mid z_{s+1})\; p(x \mid z_1),

    every conditional a diagonal Gaussian from an MLP (``hidden[s]`` between layer ``s-1`` and ``s``,
    mirrored in the generative direction), the top prior injected.

    Args:
        latent_dims: sizes of the stochastic layers, nearest to ``x`` first.
        hidden: deterministic hidden widths before each stochastic layer (one list per layer).
        activation: hidden activation (``gated``: gated dense units).
        init: weight initialisation of every MLP (:data:`~lightning_gm.nn.mlp.INITS`; see :class:`VAE`).
        log_var_bounds: ``[low, high]`` bounds of every Gaussian conditional's log-variance (``hardtanh``), or
            ``null``.
        prior: ``p(z_S)`` of the top layer (default standard normal; priors that need the encoder are refused).
        posterior_mean_samples: samples of the Monte Carlo ``E_q[z_s]`` for ``s > 1`` (active units).
        **kwargs: the family's shared arguments (see :class:`VAE`).
    """

    def __init__(
        self,
        latent_dims: Sequence[int] = (100, 50),
        hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        activation: str = "tanh",
        init: str = "xavier_uniform",
        log_var_bounds: Optional[tuple[float, float]] = None,
        prior: Optional[Prior] = None,
        posterior_mean_samples: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["likelihood", "prior", "optimizer", "lr_scheduler"])
        dims = [int(d) for d in latent_dims]
        if len(dims) < 1 or min(dims) < 1:
            raise ConfigError(f"model.init_args.latent_dims must be positive sizes, got {list(latent_dims)}")
        if len(hidden) != len(dims):
            raise ConfigError(
                f"model.init_args.hidden needs one list of widths per stochastic layer ({len(dims)}), got {len(hidden)}"
            )
        check_init(init, "model.init_args.init")
        self.log_var_bounds = check_bounds(log_var_bounds, "model.init_args.log_var_bounds")
        self.latent_dims, self.posterior_mean_samples = dims, posterior_mean_samples
        ins = [self.data_dim, *dims[:-1]]
        self.encoders = nn.ModuleList(MLP([i, *h, 2 * d], activation, init) for i, h, d in zip(ins, hidden, dims))
        # p(z_s | z_{s+1}) for s < S, then p(x | z_1)
        self.conditionals = nn.ModuleList(
            MLP([dims[s + 1], *reversed(list(hidden[s + 1])), 2 * dims[s]], activation, init)
            for s in range(len(dims) - 1)
        )
        self.decoder = MLP([dims[0], *reversed(list(hidden[0])), self.likelihood.num_params(self.data_dim)],
                           activation, init)
        self.prior = prior if prior is not None else StandardNormal()
        if self.prior.needs_encoder:
            raise ConfigError(f"{type(self.prior).__name__} needs a one-layer VAE's encoder; use it with models.VAE")
        self.prior.build(dims[-1])
        self._check_data_mean_bias()

    @property
    def prior_top(self) -> Prior:
        return self.prior

    @property
    def top_latent_dim(self) -> int:
        return self.latent_dims[-1]

    def output_layer(self) -> nn.Module:
        return self.decoder[-1]

    def _gaussian(self, net: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log_var)`` of a Gaussian conditional (the log-variance within ``log_var_bounds``)."""
        mu, log_var = net(h).chunk(2, dim=-1)
        return mu, bounded(log_var, self.log_var_bounds)

    def posterior(self, flat: Tensor, n: int, noise: Noise = None) -> Latents:
        zs, log_qs = [], []
        h: Tensor = flat
        for enc, d in zip(self.encoders, self.latent_dims):
            mu, log_var = self._gaussian(enc, h)
            z = mu + torch.exp(0.5 * log_var) * standard_normal_noise(n, flat, d, noise)  # one z_s per z_{s-1}
            zs.append(z)
            log_qs.append(log_normal_diag(z, mu, log_var))
            h = z
        return Latents(zs, log_qs)

    def log_prior_terms(self, z: list[Tensor]) -> list[Tensor]:
        terms = []
        for s, cond in enumerate(self.conditionals):
            mu, log_var = self._gaussian(cond, z[s + 1])
            terms.append(log_normal_diag(z[s], mu, log_var))
        terms.append(self.prior.log_prob(z[-1]))
        return terms

    def log_likelihood(self, flat: Tensor, z: list[Tensor]) -> Tensor:
        return self.likelihood.log_prob(flat, self.decoder(z[0]))

    def decode_mean(self, z_top: Tensor) -> Tensor:
        z = z_top
        for cond in reversed(self.conditionals):
            z = cond(z).chunk(2, dim=-1)[0]
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def posterior_means(self, x: Tensor, noise: Noise = None) -> list[Tensor]:
        flat = x.flatten(1)
        first = self.encoders[0](flat).chunk(2, dim=-1)[0]
        lat = self.posterior(flat, self.posterior_mean_samples, noise)
        return [first, *[z.mean(0) for z in lat.z[1:]]]
