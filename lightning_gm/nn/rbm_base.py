r"""The base of every RBM with Bernoulli hidden units: :class:`RBMBase`, for energies of the form

.. math::

    E(v, h) = U(v) - h^\top\big(c + W^\top s(v)\big),

with the visible "self" energy :math:`U(v)` and the visible statistic :math:`s(v)` seen by the hidden units
supplied by a subclass (:class:`~lightning_gm.nn.rbm.BernoulliRBM`,
:class:`~lightning_gm.nn.rbm.GaussianBernoulliRBM`). Shared here: the hidden conditionals, the free energy
:math:`F(v)`, block Gibbs sampling (:class:`GibbsState`), the contrastive-divergence surrogate loss, the
reconstruction error, and :func:`with_gradients` (a loss that carries closed-form gradients through autograd).

Shapes: ``v`` is ``(..., n_visible)`` and ``h`` is ``(..., n_hidden)``; every per-example quantity is returned with
shape ``(...)``. All methods work for float32 and float64 parameters; inputs are cast to the parameter dtype.

References:
    Hinton (2002), Training products of experts by minimizing contrastive divergence;
    Hinton (2010), A practical guide to training restricted Boltzmann machines (UTML TR 2010-003);
    Tieleman (2008), Training RBMs using approximations to the likelihood gradient (PCD).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.sampling import bernoulli

__all__ = ["CoupledUnits", "RBMBase", "GibbsState", "with_gradients"]


class _WithGradients(torch.autograd.Function):
    """``value`` in the forward pass; ``grad_output * gradient_i`` for ``param_i`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, n: int, *tensors: Tensor) -> Tensor:  # type: ignore[override]
        ctx.n = n
        ctx.save_for_backward(*tensors[n:])
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        grads = ctx.saved_tensors
        if not bool(grad_output == 1):  # the usual case (the loss itself) needs no scaling pass
            grads = tuple(grad_output * g for g in grads)
        return (None, None, *grads, *[None] * len(grads))


def with_gradients(value: Tensor, params: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """A scalar equal to ``value`` whose gradient with respect to ``params[i]`` is ``gradients[i]``.

    For updates whose gradients are known in closed form (contrastive divergence): the backward pass
    costs nothing, and ``loss.backward()`` (or Lightning's ``manual_backward``, which all-reduces the
    gradients under DDP) delivers them to the parameters as for any other loss.
    """
    if len(params) != len(gradients):
        raise ValueError(f"{len(params)} parameters but {len(gradients)} gradients")
    return _WithGradients.apply(value, len(params), *params, *gradients)


class GibbsState(NamedTuple):
    r"""Result of :meth:`RBMBase.gibbs_vhv` after ``k`` block-Gibbs sweeps ``v -> h -> v``.

    Attributes:
        v: final visible sample, ``(batch, n_visible)``.
        v_mean: :math:`E[v \mid h]` for the hidden sample ``h`` that produced ``v``,
            ``(batch, n_visible)`` (probabilities for Bernoulli visibles, Gaussian means otherwise).
        h: last hidden sample (the one ``v`` was drawn from), ``(batch, n_hidden)``.
        h_mean: :math:`p(h = 1 \mid v_{k-1})`, the probabilities ``h`` was drawn with,
            ``(batch, n_hidden)``. Note it conditions on the *previous* visible state; use
            :meth:`RBMBase.mean_hiddens` on ``v`` for :math:`p(h \mid v_k)`.
    """

    v: Tensor
    v_mean: Tensor
    h: Tensor
    h_mean: Tensor


class CoupledUnits(nn.Module):
    r"""What every RBM-family net shares: unit counts, one coupling weight tensor and the input cast.

    The unit counts are checked (each :math:`\ge 1`) and kept as integer attributes of their names; the
    weights start small and random, biases at zero (Hinton 2010, section 8):

    .. math::

        W_{i_1 \dots i_m} \sim \mathcal N(0, \sigma_W^2), \qquad \text{shape of } W = (n_1, \dots, n_m) .

    Args:
        sizes: the unit counts by attribute name, in the order of ``W``'s dimensions (``{"n_visible": D,
            "n_hidden": N}`` gives ``W`` of shape ``(D, N)``).
        weight_std: :math:`\sigma_W`.
        dtype, device: parameter factory arguments.

    Raises:
        ValueError: naming the counts if one is below 1.

    References:
        Hinton (2010), A practical guide to training restricted Boltzmann machines (UTML TR 2010-003), section 8.
    """

    def __init__(
        self,
        sizes: dict[str, int],
        *,
        weight_std: float = 0.01,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if min(sizes.values()) < 1:
            raise ValueError(f"{', '.join(sizes)} must be >= 1, got {', '.join(str(n) for n in sizes.values())}")
        for name, n in sizes.items():
            setattr(self, name, int(n))
        self.W = nn.Parameter(torch.randn(*sizes.values(), dtype=dtype, device=device) * weight_std)

    def _cast(self, x: Tensor) -> Tensor:
        """``x`` in the parameters' dtype and on their device."""
        return x.to(dtype=self.W.dtype, device=self.W.device)

    def _filled(self, *shape: int, value: float = 0.0) -> Tensor:
        """A ``shape`` tensor of ``value`` in the parameters' dtype and on their device."""
        return self.W.detach().new_full(shape, float(value))

    def _register(self, name: str, value: Tensor, learn: bool) -> None:
        """``value`` as the parameter ``name`` when ``learn``, else as a buffer (in ``state_dict`` either way)."""
        if learn:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)


class RBMBase(CoupledUnits):
    r"""Shared machinery of RBMs with Bernoulli hidden units.

    Subclasses define the visible self-energy :math:`U(v)` (:meth:`_visible_energy`), the statistic
    :math:`s(v)` (:meth:`_visible_statistic`), :meth:`mean_visibles`, :meth:`sample_visibles` and
    :meth:`free_energy_hidden`. With those,

    .. math::

        E(v, h) &= U(v) - c^\top h - s(v)^\top W h, \\
        p(h_j = 1 \mid v) &= \sigma\big(c_j + s(v)^\top W_{:j}\big), \\
        F(v) &= -\log \sum_h e^{-E(v, h)} = U(v) - \sum_j \operatorname{softplus}\big(c_j + s(v)^\top W_{:j}\big).

    Parameters: ``W`` ``(n_visible, n_hidden)``, ``b`` ``(n_visible,)``, ``c`` ``(n_hidden,)``.

    Args:
        n_visible, n_hidden: layer sizes.
        **kwargs: ``weight_std``, ``dtype``, ``device`` of :class:`CoupledUnits`.
    """

    n_visible: int
    n_hidden: int

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        **kwargs: Any,
    ) -> None:
        super().__init__({"n_visible": n_visible, "n_hidden": n_hidden}, **kwargs)
        self.b = nn.Parameter(self._filled(self.n_visible))
        self.c = nn.Parameter(self._filled(self.n_hidden))

    # ------------------------------------------------------------------ subclass hooks
    def _visible_energy(self, v: Tensor) -> Tensor:
        r""":math:`U(v)`: ``(..., n_visible) -> (...)``."""
        raise NotImplementedError

    def _visible_statistic(self, v: Tensor) -> Tensor:
        r""":math:`s(v)`, the visible quantity multiplying ``W``: ``(..., n_visible) -> (..., n_visible)``."""
        raise NotImplementedError

    def mean_visibles(self, h: Tensor) -> Tensor:
        r""":math:`E[v \mid h]`: ``(..., n_hidden) -> (..., n_visible)``."""
        raise NotImplementedError

    def sample_visibles(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw :math:`v \sim p(v \mid h)`: ``(..., n_hidden) -> (..., n_visible)``."""
        raise NotImplementedError

    def free_energy_hidden(self, h: Tensor) -> Tensor:
        r""":math:`F(h) = -\log \int e^{-E(v, h)}\,dv` (sum for binary v): ``(..., n_hidden) -> (...)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def visible_affine(self, h: Tensor) -> Tensor:
        r""":math:`b + W h`: ``(..., n_hidden) -> (..., n_visible)`` (one fused ``addmm`` for a batch)."""
        h = self._cast(h)
        if h.dim() == 2:
            return torch.addmm(self.b, h, self.W.T)
        return h @ self.W.T + self.b

    # ------------------------------------------------------------------ shared maths
    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        r"""Joint energy.

        .. math:: E(v, h) = U(v) - h^\top\big(c + W^\top s(v)\big)

        Args:
            v: ``(..., n_visible)``.
            h: ``(..., n_hidden)`` (broadcastable against ``v``'s batch shape).

        Returns:
            ``(...)``.
        """
        v = self._cast(v)
        h = self._cast(h)
        return self._visible_energy(v) - (self.hidden_logits(v) * h).sum(-1)

    def hidden_logits(self, v: Tensor) -> Tensor:
        r"""Pre-sigmoid hidden activations :math:`c + W^\top s(v)`.

        Args:
            v: ``(..., n_visible)``.

        Returns:
            ``(..., n_hidden)``.
        """
        v = self._cast(v)
        s = self._visible_statistic(v)
        if s.dim() == 2:  # one fused kernel for the product and the bias
            return torch.addmm(self.c, s, self.W)
        return s @ self.W + self.c

    def mean_hiddens(self, v: Tensor) -> Tensor:
        r""":math:`p(h_j = 1 \mid v) = \sigma(c_j + s(v)^\top W_{:j})`: ``(..., n_visible) -> (..., n_hidden)``."""
        return torch.sigmoid(self.hidden_logits(v))

    def sample_hiddens(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw :math:`h \sim p(h \mid v)` (independent Bernoullis).

        Args:
            v: ``(..., n_visible)``.
            generator: optional random generator (same device as the parameters).

        Returns:
            Binary ``(..., n_hidden)`` in the parameter dtype (no gradient flows through sampling).
        """
        with torch.no_grad():
            return bernoulli(self.mean_hiddens(v), generator)

    def free_energy(self, v: Tensor, hidden_logits: Tensor | None = None) -> Tensor:
        r"""Free energy with the hidden units summed out.

        .. math::

            F(v) = -\log \sum_{h \in \{0,1\}^H} e^{-E(v, h)}
                 = U(v) - \sum_j \operatorname{softplus}\big(c_j + s(v)^\top W_{:j}\big)

        Args:
            v: ``(..., n_visible)``.
            hidden_logits: :meth:`hidden_logits` of ``v`` when the caller has them (saves a matrix product).

        Returns:
            ``(...)``.
        """
        v = self._cast(v)
        logits = self.hidden_logits(v) if hidden_logits is None else hidden_logits
        # softplus(x) = log(1 + e^x) computed without overflow for large x (torch uses
        # x + log1p(e^-x) above a threshold), so large activations do not produce inf.
        return self._visible_energy(v) - F.softplus(logits).sum(-1)

    def gibbs_vhv(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None,
                  hidden_logits: Tensor | None = None) -> GibbsState:
        r"""``k`` sweeps of block Gibbs sampling :math:`v \to h \sim p(h \mid v) \to v \sim p(v \mid h)`.

        Runs under ``torch.no_grad()``: chains are never differentiated through (CD/PCD treat the
        negative samples as constants), so no graph is built.

        Args:
            v: starting visibles ``(batch, n_visible)``.
            k: number of sweeps, ``>= 1``.
            generator: optional random generator.
            hidden_logits: :meth:`hidden_logits` of ``v`` when the caller has them already (CD computes
                them for the data term of its loss): the first sweep then skips that matrix product.

        Returns:
            :class:`GibbsState` ``(v, v_mean, h, h_mean)`` after the last sweep.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with torch.no_grad():
            v = self._cast(v)
            for i in range(k):
                logits = hidden_logits.detach() if (i == 0 and hidden_logits is not None) else self.hidden_logits(v)
                h_mean = torch.sigmoid(logits)
                h = bernoulli(h_mean, generator)
                v_mean = self.mean_visibles(h)
                v = self._sample_visibles_given_mean(h, v_mean, generator)
        return GibbsState(v=v, v_mean=v_mean, h=h, h_mean=h_mean)

    def _sample_visibles_given_mean(self, h: Tensor, v_mean: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw :math:`v \sim p(v \mid h)` when :math:`E[v \mid h]` is already known; subclasses override it
        so that a Gibbs sweep does not compute the mean twice."""
        return self.sample_visibles(h, generator=generator)

    def cd_loss(self, v_data: Tensor, v_model: Tensor, data_logits: Tensor | None = None) -> Tensor:
        r"""Contrastive-divergence surrogate whose autograd gradient is the CD/PCD update (negated).

        .. math::

            \mathcal{L} = \frac{1}{N}\sum_n F(v^{(n)}_{\text{data}})
                        - \frac{1}{M}\sum_m F\big(\operatorname{sg}[v^{(m)}_{\text{model}}]\big),
            \qquad
            -\frac{\partial \mathcal{L}}{\partial W}
              = \big\langle s(v)\, p(h \mid v)^\top \big\rangle_{\text{data}}
              - \big\langle s(v)\, p(h \mid v)^\top \big\rangle_{\text{model}}

        (``sg`` = stop-gradient). Minimising it with SGD performs CD-k when ``v_model`` comes from
        ``k`` Gibbs sweeps started at the data, PCD when it comes from persistent chains. Its value is
        *not* a likelihood; it only has the right gradient.

        Args:
            v_data: ``(N, n_visible)``.
            v_model: ``(M, n_visible)`` negative samples (detached here).
            data_logits: :meth:`hidden_logits` of ``v_data`` *with* their graph, when the caller has them
                (then :math:`F(v_{\text{data}})` costs no further matrix product): the fused CD step
                computes them once, starts the chain from them and reuses them here.

        Returns:
            Scalar tensor.
        """
        return self.free_energy(v_data, data_logits).mean() - self.free_energy(v_model.detach()).mean()

    def reconstruction_error(self, v: Tensor, hidden_probs: Tensor | None = None) -> Tensor:
        r"""Mean squared error of one mean-field up-down pass (a training monitor, not a likelihood).

        .. math:: \frac{1}{N D}\sum_{n,i} \big(v_{ni} - E[v_i \mid h = p(h \mid v_n)]\big)^2

        Args:
            v: ``(N, n_visible)``.
            hidden_probs: :math:`p(h \mid v)` when the caller has them (saves a matrix product).

        Returns:
            Scalar tensor.
        """
        v = self._cast(v)
        probs = self.mean_hiddens(v) if hidden_probs is None else hidden_probs
        recon = self.mean_visibles(probs)
        return (v - recon).pow(2).mean()

    def forward(self, v: Tensor) -> Tensor:
        """Free energy :math:`F(v)`, ``(..., n_visible) -> (...)`` (so the module is callable)."""
        return self.free_energy(v)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}"
