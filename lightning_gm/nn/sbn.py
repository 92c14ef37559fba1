r"""Sigmoid belief networks as Helmholtz machines: a top-down generative network :math:`p` and a bottom-up
recognition network :math:`q`, both layers of binary stochastic units with sigmoid conditionals
(plain torch, no Lightning).

With hidden layers :math:`h_1, \dots, h_L` (``h_1`` nearest to the data, :math:`h_0 = x`)

.. math::

    p(x, h) = p(h_L) \prod_{l=0}^{L-1} p(h_l \mid h_{l+1}), \qquad
    p(h_l \mid h_{l+1}) = \prod_i \operatorname{Bern}\big(h_{l,i};\ \sigma(W_l h_{l+1} + b_l)_i\big), \qquad
    p(h_L) = \prod_i \operatorname{Bern}\big(h_{L,i};\ \sigma(b_L)_i\big),

    q(h \mid x) = \prod_{l=1}^{L} q(h_l \mid h_{l-1}), \qquad
    q(h_l \mid h_{l-1}) = \prod_i \operatorname{Bern}\big(h_{l,i};\ \sigma(U_l h_{l-1} + c_l)_i\big).

Every log-probability uses :math:`\log \operatorname{Bern}(y; \sigma(a)) = y a - \operatorname{softplus}(a)`
(no :math:`\log \sigma` of a saturated sigmoid is ever formed).

Training signals (one surrogate loss each; its gradient is the update, samples carry no gradient):

* **wake phase, p** (wake-sleep: one :math:`h \sim q(h|x)`; reweighted wake-sleep: ``k`` samples with
  normalised importance weights :math:`\tilde w_j = w_j / \sum_{j'} w_{j'}`,
  :math:`w_j = p(x, h_j) / q(h_j \mid x)`):
  :math:`\nabla_\theta \log p(x) \approx \sum_j \tilde w_j \nabla_\theta \log p(x, h_j)`;
* **wake phase, q** (RWS only): :math:`\nabla_\phi \approx \sum_j \tilde w_j \nabla_\phi \log q(h_j \mid x)`,
  a stochastic step on :math:`-\mathrm{KL}(p(h|x) \,\|\, q(h|x))`;
* **sleep phase, q**: dreams :math:`(x, h) \sim p` and :math:`\nabla_\phi \log q(h \mid x)`, a step on
  :math:`-\mathbb E_{p(x)}\mathrm{KL}(p(h|x) \,\|\, q(h|x))`.

As :math:`k \to \infty` the self-normalised weights tend to the posterior :math:`p(h \mid x)`, so the RWS
p-gradient tends to the exact :math:`\nabla_\theta \log p(x) = \mathbb E_{p(h|x)}[\nabla_\theta \log p(x, h)]`.
The same weights give the importance-weighted estimate of the test log-likelihood,
:math:`\log \frac1k \sum_j w_j` (:mod:`lightning_gm.estimators.importance`), and for a tiny network
:meth:`HelmholtzMachine.log_prob_enumerate` sums :math:`p(x, h)` over all :math:`2^{\sum_l H_l}` hidden
configurations.

References: Hinton, Dayan, Frey & Neal (1995), The wake-sleep algorithm for unsupervised neural networks;
Dayan, Hinton, Neal & Zemel (1995), The Helmholtz machine; Neal (1992), Connectionist learning of belief
networks; Bornschein & Bengio (2015), Reweighted wake-sleep.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["HelmholtzMachine", "WakeTerms", "bernoulli_log_prob", "bernoulli_sample", "binary_configurations",
           "Q_UPDATES"]

#: the recognition-network updates a reweighted wake-sleep step may use
Q_UPDATES = ("wake", "sleep", "both")


def bernoulli_log_prob(y: Tensor, logits: Tensor) -> Tensor:
    r"""Factorised Bernoulli log-probability summed over the last axis.

    .. math:: \sum_i y_i a_i - \operatorname{softplus}(a_i) = \sum_i \log \operatorname{Bern}(y_i; \sigma(a_i))

    Args:
        y: binary values ``(..., H)``, broadcastable against ``logits``.
        logits: :math:`a`, ``(..., H)``.

    Returns:
        ``(...)``, the broadcast shape without the last axis.
    """
    return (y * logits - F.softplus(logits)).sum(-1)


def bernoulli_sample(logits: Tensor, generators: Optional[Sequence[torch.Generator]] = None,
                     generator: Optional[torch.Generator] = None, noise: Any = None) -> Tensor:
    r"""Binary sample :math:`y_i = [u_i < \sigma(a_i)]`, :math:`u_i \sim U(0, 1)`, no gradient.

    Args:
        logits: ``(..., B, H)`` (or ``(..., H)`` with ``generators=None``).
        generators: one generator per example (axis ``-2``): example ``b`` draws its uniforms from
            ``generators[b]`` only, so its sample does not depend on the rest of the batch.
        generator: one generator for the whole tensor (ignored when ``generators`` is given).
        noise: an object with ``uniform(n, H, like) -> (n, B, H)`` (e.g. the seeded evaluation's
            ``SeededNoise``) for ``logits`` of shape ``(n, B, H)``; wins over the others.

    Returns:
        ``logits``-shaped 0/1 tensor of ``logits``' dtype.
    """
    probs = torch.sigmoid(logits.detach())
    if noise is not None:
        u = noise.uniform(probs.shape[0], probs.shape[-1], probs)
    elif generators is None:
        u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device)
    else:
        if len(generators) != probs.shape[-2]:
            raise ValueError(f"{len(generators)} generators for a batch of {probs.shape[-2]} examples")
        lead = probs.shape[:-2]
        u = torch.stack([torch.rand(*lead, probs.shape[-1], generator=g, dtype=probs.dtype, device=probs.device)
                         for g in generators], dim=-2)
    return (u < probs).to(logits.dtype)


def binary_configurations(n: int, dtype: torch.dtype = torch.float64,
                          device: torch.device | str | None = None) -> Tensor:
    """All :math:`2^n` binary vectors of length ``n``, ``(2**n, n)``, row ``k`` the bits of ``k`` (lowest first)."""
    codes = torch.arange(2**n, dtype=torch.int64, device=device)
    return ((codes.unsqueeze(-1) >> torch.arange(n, dtype=torch.int64, device=device)) & 1).to(dtype)


class WakeTerms(NamedTuple):
    """Wake-phase surrogate losses of a batch and the log-weights they came from."""

    p_loss: Tensor  #: scalar, :math:`-\overline{\sum_j \tilde w_j \log p(x, h_j)}` (gradient only to p)
    q_loss: Tensor  #: scalar, :math:`-\overline{\sum_j \tilde w_j \log q(h_j|x)}` (gradient only to q)
    log_weights: Tensor  #: ``(k, B)`` :math:`\log p(x, h_j) - \log q(h_j \mid x)`, detached


class HelmholtzMachine(nn.Module):
    r"""A sigmoid belief network :math:`p` with its recognition network :math:`q` (see the module docstring).

    Args:
        n_visible: :math:`D`, size of the (flat, binary) data.
        hidden: hidden layer sizes :math:`H_1, \dots, H_L`, nearest to the data first (e.g. ``(200, 200, 10)``
            is Bornschein & Bengio's "10-200-200" network written top-down).

    Attributes:
        top_logits: :math:`b_L`, ``(H_L,)``, the factorised prior of the top layer.
        generative: ``generative[l]`` maps :math:`h_{l+1} \to` the logits of :math:`p(h_l \mid h_{l+1})`
            (``l = 0``: the data).
        recognition: ``recognition[l]`` maps :math:`h_l \to` the logits of :math:`q(h_{l+1} \mid h_l)`.

    References: Dayan, Hinton, Neal & Zemel (1995); Bornschein & Bengio (2015).
    """

    def __init__(self, n_visible: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [int(n_visible), *[int(h) for h in hidden]]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"HelmholtzMachine needs n_visible >= 1 and at least one hidden layer of size >= 1, "
                              f"got n_visible={n_visible}, hidden={list(hidden)}")
        self.sizes = sizes
        self.hidden_sizes = sizes[1:]
        self.top_logits = nn.Parameter(torch.zeros(sizes[-1]))
        self.generative = nn.ModuleList(nn.Linear(sizes[l + 1], sizes[l]) for l in range(len(sizes) - 1))
        self.recognition = nn.ModuleList(nn.Linear(sizes[l], sizes[l + 1]) for l in range(len(sizes) - 1))

    # --- parameters of each network ------------------------------------------------------------------
    def generative_parameters(self) -> list[nn.Parameter]:
        """:math:`\\theta`: the parameters of :math:`p` (the top prior and the top-down layers)."""
        return [self.top_logits, *self.generative.parameters()]

    def recognition_parameters(self) -> list[nn.Parameter]:
        """:math:`\\phi`: the parameters of :math:`q`."""
        return list(self.recognition.parameters())

    @property
    def n_visible(self) -> int:
        return self.sizes[0]

    @property
    def n_hidden_total(self) -> int:
        """:math:`\\sum_l H_l`, the number of hidden units (enumeration costs :math:`2^{\\sum_l H_l}`)."""
        return sum(self.hidden_sizes)

    # --- log-probabilities ---------------------------------------------------------------------------
    def generative_log_probs(self, x: Tensor, hs: Sequence[Tensor]) -> list[Tensor]:
        r"""Per-layer :math:`[\log p(x \mid h_1), \log p(h_1 \mid h_2), \dots, \log p(h_L)]`.

        Args:
            x: data ``(B, D)`` (or anything broadcastable against ``(..., B, D)``).
            hs: hidden states, ``hs[l]`` of shape ``(..., B, H_{l+1})`` (or broadcastable).

        Returns:
            ``L + 1`` tensors of the broadcast batch shape ``(..., B)``.
        """
        below = [x, *hs[:-1]]
        terms = [bernoulli_log_prob(y, layer(h)) for y, layer, h in zip(below, self.generative, hs)]
        terms.append(bernoulli_log_prob(hs[-1], self.top_logits))
        return terms

    def log_joint(self, x: Tensor, hs: Sequence[Tensor]) -> Tensor:
        r""":math:`\log p(x, h)`, shape ``(..., B)``."""
        return torch.stack(torch.broadcast_tensors(*self.generative_log_probs(x, hs)), 0).sum(0)

    def recognition_log_probs(self, x: Tensor, hs: Sequence[Tensor]) -> list[Tensor]:
        r"""Per-layer :math:`[\log q(h_1 \mid x), \dots, \log q(h_L \mid h_{L-1})]`, each ``(..., B)``."""
        below = [x, *hs[:-1]]
        return [bernoulli_log_prob(h, layer(y)) for y, layer, h in zip(below, self.recognition, hs)]

    def log_q(self, x: Tensor, hs: Sequence[Tensor]) -> Tensor:
        r""":math:`\log q(h \mid x)`, shape ``(..., B)``."""
        return torch.stack(torch.broadcast_tensors(*self.recognition_log_probs(x, hs)), 0).sum(0)

    # --- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_posterior(self, x: Tensor, n: int, generators: Optional[Sequence[torch.Generator]] = None,
                         generator: Optional[torch.Generator] = None, noise: Any = None) -> list[Tensor]:
        r"""``n`` bottom-up samples :math:`h \sim q(h \mid x)` per example.

        Args:
            x: data ``(B, D)``.
            n: samples per example.
            generators: one generator per example (deterministic per example), or
            generator: one generator for the batch, or
            noise: a seeded noise source (``uniform(n, H, like)``; see :func:`bernoulli_sample`).

        Returns:
            ``hs[l]`` of shape ``(n, B, H_{l+1})``.
        """
        h = x.unsqueeze(0).expand(n, *x.shape)
        hs = []
        for layer in self.recognition:
            h = bernoulli_sample(layer(h), generators, generator, noise)
            hs.append(h)
        return hs

    @torch.no_grad()
    def sample_joint(self, n: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, list[Tensor], Tensor]:
        r"""Ancestral sampling :math:`h_L \sim p(h_L)`, :math:`h_l \sim p(h_l \mid h_{l+1})`, :math:`x \sim p(x \mid h_1)`.

        Returns:
            ``(x, hs, x_probs)``: binary data ``(n, D)``, hidden states ``hs[l]`` ``(n, H_{l+1})`` (nearest to
            the data first) and :math:`\sigma(W_0 h_1 + b_0)`, the Bernoulli means of :math:`p(x \mid h_1)`.
        """
        p = self.top_logits
        h = bernoulli_sample(p.expand(n, -1), generator=generator)
        hs = [h]
        for layer in list(self.generative)[:0:-1]:  # layers L-1 .. 1
            h = bernoulli_sample(layer(h), generator=generator)
            hs.append(h)
        logits = self.generative[0](h)
        x = bernoulli_sample(logits, generator=generator)
        return x, hs[::-1], torch.sigmoid(logits)

    # --- importance weights and the wake / sleep signals -------------------------------------------
    def log_weights(self, x: Tensor, n: int, generators: Optional[Sequence[torch.Generator]] = None,
                    generator: Optional[torch.Generator] = None, noise: Any = None) -> Tensor:
        r""":math:`\log w = \log p(x, h) - \log q(h \mid x)` of ``n`` fresh :math:`h \sim q(h \mid x)`: ``(n, B)``."""
        hs = self.sample_posterior(x, n, generators, generator, noise)
        return self.log_joint(x, hs) - self.log_q(x, hs)

    def wake_terms(self, x: Tensor, k: int, reweight: bool = True,
                   generator: Optional[torch.Generator] = None) -> WakeTerms:
        r"""Wake-phase surrogates from ``k`` samples :math:`h_j \sim q(h \mid x)` per example.

        .. math::

            \mathcal L_p = -\frac1B \sum_b \sum_j \tilde w_{bj} \log p(x_b, h_{bj}), \qquad
            \mathcal L_q = -\frac1B \sum_b \sum_j \tilde w_{bj} \log q(h_{bj} \mid x_b),

        with :math:`\tilde w = \operatorname{softmax}_j(\log w)` (detached) when ``reweight`` (RWS), and
        :math:`\tilde w = 1/k` otherwise (wake-sleep: with ``k = 1``, the classic wake phase).

        Args:
            x: data ``(B, D)``.
            k: posterior samples per example.
            reweight: self-normalised importance weights (RWS) instead of uniform ones (WS).
            generator: random stream of the samples (default: the global one).
        """
        return self.wake_losses(x, self.sample_posterior(x, k, generator=generator), reweight)

    def wake_losses(self, x: Tensor, hs: Sequence[Tensor], reweight: bool = True) -> WakeTerms:
        """The surrogates of :meth:`wake_terms` for given posterior samples ``hs[l]`` ``(k, B, H_{l+1})``."""
        k = hs[0].shape[0]
        log_p = self.log_joint(x, hs)
        log_q = self.log_q(x, hs)
        log_w = (log_p - log_q).detach()
        if reweight:
            weights = torch.softmax(log_w, dim=0)
        else:
            weights = torch.full_like(log_w, 1.0 / k)
        return WakeTerms(-(weights * log_p).sum(0).mean(), -(weights * log_q).sum(0).mean(), log_w)

    def sleep_loss(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Sleep-phase surrogate :math:`-\frac1n \sum_i \log q(h_i \mid x_i)` over ``n`` dreams
        :math:`(x_i, h_i) \sim p` (gradient only to :math:`q`)."""
        x, hs, _ = self.sample_joint(n, generator)
        return -self.log_q(x, hs).mean()

    # --- exact answers for tiny networks --------------------------------------------------------------
    def split_hidden(self, flat_h: Tensor) -> list[Tensor]:
        """Split concatenated hidden states ``(..., sum H_l)`` into the per-layer list."""
        return list(flat_h.split(self.hidden_sizes, dim=-1))

    def log_prob_enumerate(self, x: Tensor, max_units: int = 20) -> Tensor:
        r"""Exact :math:`\log p(x) = \log \sum_h p(x, h)` by summing over all :math:`2^{\sum_l H_l}` hidden
        configurations (differentiable in :math:`\theta`).

        Args:
            x: data ``(B, D)``.
            max_units: refuse networks with more hidden units than this.

        Returns:
            ``(B,)`` in ``x``'s dtype.
        """
        n = self.n_hidden_total
        if n > max_units:
            raise ValueError(
                f"exact log p(x) of a sigmoid belief net enumerates 2^{n} hidden configurations; the limit is "
                f"2^{max_units} (max_units). Use the importance-weighted estimate instead."
            )
        configs = binary_configurations(n, dtype=x.dtype, device=x.device).unsqueeze(1)  # (2^n, 1, H)
        return torch.logsumexp(self.log_joint(x, self.split_hidden(configs)), dim=0)

    def log_posterior_enumerate(self, x: Tensor, max_units: int = 20) -> tuple[Tensor, Tensor]:
        r"""All hidden configurations ``(2^n, n)`` and the exact posterior :math:`\log p(h \mid x)` ``(2^n, B)``."""
        n = self.n_hidden_total
        if n > max_units:
            raise ValueError(f"2^{n} hidden configurations exceed the limit 2^{max_units}")
        configs = binary_configurations(n, dtype=x.dtype, device=x.device)
        lj = self.log_joint(x, self.split_hidden(configs.unsqueeze(1)))
        return configs, lj - torch.logsumexp(lj, dim=0, keepdim=True)

    def extra_repr(self) -> str:
        return f"sizes={'-'.join(str(s) for s in self.sizes)} (data first)"
