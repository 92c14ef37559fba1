r"""Convolutional RBM with probabilistic max-pooling (Lee, Grosse, Ranganath & Ng 2009), in plain torch.

The visible layer is an image :math:`v` with :math:`C_{in}` channels of size :math:`N_V \times N_V'`; the
hidden layer is :math:`K` groups ("feature maps") of detector units :math:`h^k` of size
:math:`N_H \times N_H'` (``N_H = N_V - n_w + 1``, a *valid* convolution) sharing one filter
:math:`W^k` of size :math:`C_{in} \times n_w \times n_w` and one bias :math:`b_k` per group. The
detectors of group :math:`k` are partitioned into :math:`C \times C` blocks :math:`B_\alpha`, each with a
pooling unit :math:`p^k_\alpha = \max_{(i,j) \in B_\alpha} h^k_{ij}`, under the constraint that *at most one
detector per block is on*. With :math:`I^k_{ij} = b_k + (\tilde W^k * v)_{ij}` (cross-correlation,
``conv2d``) the energy is

.. math::

    E(v, h) = U(v) - \sum_k \sum_{ij} h^k_{ij} I^k_{ij}, \qquad
    \text{s.t. } \sum_{(i,j) \in B_\alpha} h^k_{ij} \le 1 \ \ \forall k, \alpha,

with :math:`U(v) = -\sum_c c_c \sum_{ij} v_{cij}` (binary visibles) or
:math:`U(v) = \tfrac12\sum v^2 - \sum_c c_c \sum_{ij} v_{cij}` (Gaussian visibles, unit variance).
Each block is then a softmax over :math:`|B_\alpha| + 1` states (one detector on, or all off):

.. math::

    P(h^k_{ij} = 1 \mid v) = \frac{e^{I^k_{ij}}}{1 + \sum_{(i',j') \in B_\alpha} e^{I^k_{i'j'}}}, \qquad
    P(p^k_\alpha = 0 \mid v) = \frac{1}{1 + \sum_{(i',j') \in B_\alpha} e^{I^k_{i'j'}}},

and the visibles given the detectors are independent with the *full* convolution of the detectors,
:math:`P(v_{cij} = 1 \mid h) = \sigma\big(c_c + \sum_k (W^k_c * h^k)_{ij}\big)` (``conv_transpose2d``), or
:math:`\mathcal N(c_c + \sum_k (W^k_c * h^k)_{ij}, 1)` for Gaussian visibles. Summing the blocks out gives
the free energy in closed form:

.. math::

    F(v) = -\log\sum_h e^{-E(v,h)} = U(v) - \sum_k \sum_\alpha
           \log\Big(1 + \sum_{(i,j) \in B_\alpha} e^{I^k_{ij}}\Big).

Boundary handling: when :math:`N_H` is not a multiple of :math:`C` the last row/column of blocks is
partial; the missing detectors are padded with :math:`I = -\infty` (weight :math:`e^{-\infty} = 0`), so a
partial block simply has fewer states. Nothing here imports Lightning.

Shapes: ``v`` is ``(N, C_in, H, W)``, ``h`` is ``(N, K, H_h, W_h)``, pooling units ``(N, K, H_p, W_p)`` with
``H_p = ceil(H_h / C)``. Block log-probabilities are ``(N, K, H_p, W_p, C*C + 1)`` with the "off" state last.

References:
    Lee, Grosse, Ranganath & Ng (2009), Convolutional deep belief networks for scalable unsupervised
    learning of hierarchical representations, ICML; Lee, Ekanadham & Ng (2008), Sparse deep belief net
    model for visual area V2, NIPS (the sparsity regulariser); Hinton (2002) (contrastive divergence).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvolutionalRBM", "ConvGibbsState", "block_view", "unblock", "VisibleType"]

VisibleType = Literal["binary", "gaussian"]


class ConvGibbsState(NamedTuple):
    """State after :meth:`ConvolutionalRBM.gibbs` sweeps ``v -> (h, p) -> v``.

    Attributes:
        v: last visible sample ``(N, C_in, H, W)``.
        v_mean: :math:`E[v \\mid h]` for the detectors ``h`` that produced ``v``.
        h: last detector sample ``(N, K, H_h, W_h)``.
        p: its pooling units ``(N, K, H_p, W_p)``.
    """

    v: Tensor
    v_mean: Tensor
    h: Tensor
    p: Tensor


def block_view(x: Tensor, pool: int, fill: float = -math.inf) -> Tensor:
    r"""Group a detector map into :math:`C \times C` blocks.

    Args:
        x: ``(N, K, H_h, W_h)``.
        pool: block side :math:`C`.
        fill: value of the padding that completes partial boundary blocks (``-inf`` for logits: a
            missing detector has weight :math:`e^{-\infty} = 0`; ``0`` for counts).

    Returns:
        ``(N, K, H_p, W_p, C*C)``, entry ``(.., a, b, r*C + s)`` = ``x[.., a*C + r, b*C + s]``.
    """
    n, k, hh, wh = x.shape
    hp, wp = -(-hh // pool), -(-wh // pool)
    if hp * pool != hh or wp * pool != wh:
        x = F.pad(x, (0, wp * pool - wh, 0, hp * pool - hh), value=fill)
    x = x.reshape(n, k, hp, pool, wp, pool).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(n, k, hp, wp, pool * pool)


def unblock(x: Tensor, pool: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`block_view`: ``(N, K, H_p, W_p, C*C) -> (N, K, height, width)`` (padding cropped)."""
    n, k, hp, wp, _ = x.shape
    x = x.reshape(n, k, hp, wp, pool, pool).permute(0, 1, 2, 4, 3, 5).reshape(n, k, hp * pool, wp * pool)
    return x[:, :, :height, :width]


class ConvolutionalRBM(nn.Module):
    r"""Convolutional RBM with probabilistic max-pooling: energy, block conditionals, free energy, Gibbs.

    See the module docstring for the maths.

    Args:
        in_channels: visible channels :math:`C_{in}`.
        image_size: visible ``(H, W)``.
        n_filters: groups :math:`K`.
        filter_size: filter side :math:`n_w` (``<= min(H, W)``).
        pool_size: pooling block side :math:`C` (1 = no pooling constraint: plain convolutional RBM).
        visible: ``"binary"`` (Bernoulli) or ``"gaussian"`` (unit variance) visibles.
        weight_std: standard deviation of the initial filters.
        dtype, device: parameter factory arguments.

    Parameters: ``W`` ``(K, C_in, n_w, n_w)``, ``b`` ``(K,)`` (detector bias per group), ``c`` ``(C_in,)``
    (visible bias per channel, shared over positions).

    References:
        Lee, Grosse, Ranganath & Ng (2009), sections 2-3.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        n_filters: int,
        filter_size: int,
        pool_size: int = 2,
        visible: VisibleType = "binary",
        weight_std: float = 0.01,
        dtype: Optional[torch.dtype] = None,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__()
        h, w = (int(s) for s in image_size)
        if min(in_channels, n_filters, filter_size, pool_size, h, w) < 1:
            raise ValueError(
                f"in_channels, image_size, n_filters, filter_size and pool_size must be >= 1, got "
                f"{in_channels}, {(h, w)}, {n_filters}, {filter_size}, {pool_size}"
            )
        if filter_size > min(h, w):
            raise ValueError(f"filter_size={filter_size} is larger than the visible image {(h, w)}")
        if pool_size > min(h, w) - filter_size + 1:
            raise ValueError(f"pool_size={pool_size} is larger than the detector maps ({h - filter_size + 1}x{w - filter_size + 1})")
        if visible not in ("binary", "gaussian"):
            raise ValueError(f"visible must be 'binary' or 'gaussian', got {visible!r}")
        factory = {"dtype": dtype, "device": device}
        self.in_channels, self.image_size = int(in_channels), (h, w)
        self.n_filters, self.filter_size, self.pool_size = int(n_filters), int(filter_size), int(pool_size)
        self.visible = visible
        self.hidden_size = (h - filter_size + 1, w - filter_size + 1)
        self.pooled_size = (-(-self.hidden_size[0] // pool_size), -(-self.hidden_size[1] // pool_size))
        self.W = nn.Parameter(torch.randn(n_filters, in_channels, filter_size, filter_size, **factory) * weight_std)
        self.b = nn.Parameter(torch.zeros(n_filters, **factory))
        self.c = nn.Parameter(torch.zeros(in_channels, **factory))

    # ------------------------------------------------------------------ sizes
    @property
    def n_visible(self) -> int:
        """Number of visible units :math:`C_{in} H W`."""
        return self.in_channels * self.image_size[0] * self.image_size[1]

    @property
    def n_hidden(self) -> int:
        """Number of detector units :math:`K H_h W_h`."""
        return self.n_filters * self.hidden_size[0] * self.hidden_size[1]

    def block_sizes(self) -> Tensor:
        r""":math:`|B_\alpha|`, the number of real detectors in each block (smaller at the boundary), ``(H_p, W_p)``."""
        ones = torch.ones(1, 1, *self.hidden_size, dtype=self.W.dtype, device=self.W.device)
        return block_view(ones, self.pool_size, fill=0.0).sum(-1)[0, 0]

    def _as_param(self, x: Tensor) -> Tensor:
        x = x.to(dtype=self.W.dtype, device=self.W.device)
        return x.reshape(x.shape[0], self.in_channels, *self.image_size) if x.dim() != 4 else x

    # ------------------------------------------------------------------ hidden side
    def detector_logits(self, v: Tensor) -> Tensor:
        r""":math:`I^k_{ij} = b_k + (\tilde W^k * v)_{ij}`: ``(N, C_in, H, W) -> (N, K, H_h, W_h)``."""
        v = self._as_param(v)
        stat = v  # s(v) = v for both visible types (unit variance)
        return F.conv2d(stat, self.W) + self.b.view(1, -1, 1, 1)

    def block_log_probs(self, logits: Tensor) -> Tensor:
        r"""Log-probabilities of the :math:`C^2 + 1` states of every block (one detector on, or "off" last).

        .. math:: \log P(s \mid v) = I_s - \log\Big(1 + \sum_{s' \in B_\alpha} e^{I_{s'}}\Big), \quad I_{\text{off}} = 0

        Args:
            logits: detector inputs ``(N, K, H_h, W_h)`` (already scaled, e.g. by an AIS :math:`\beta`).

        Returns:
            ``(N, K, H_p, W_p, C*C + 1)``; padded boundary detectors have probability 0.
        """
        blocks = block_view(logits, self.pool_size)
        full = torch.cat([blocks, torch.zeros_like(blocks[..., :1])], -1)
        return torch.log_softmax(full, -1)

    def _upsample(self, x: Tensor) -> Tensor:
        """Block values ``(N, K, H_p, W_p)`` repeated over their detectors, ``(N, K, H_h, W_h)``."""
        c, (n, k, hp, wp) = self.pool_size, x.shape
        up = x[:, :, :, None, :, None].expand(n, k, hp, c, wp, c).reshape(n, k, hp * c, wp * c)
        return up[:, :, : self.hidden_size[0], : self.hidden_size[1]]

    def block_log_partition(self, logits: Tensor) -> Tensor:
        r""":math:`\log(1 + \sum_{s \in B_\alpha} e^{I_s})` per block, ``(N, K, H_p, W_p)``.

        Computed in the detector layout with pooling operations (no copies into blocks): with
        :math:`m = \max(0, \max_{B_\alpha} I)` (``max_pool2d``, ``ceil_mode`` clips the partial boundary blocks),
        :math:`\log(1 + \sum e^{I}) = m + \log\big(e^{-m} + \sum_{B_\alpha} e^{I - m}\big)`, every exponent
        :math:`\le 0` so nothing overflows (the sum is ``avg_pool2d`` with divisor 1).
        """
        c = self.pool_size
        m = F.max_pool2d(logits, c, ceil_mode=True).clamp_min(0.0)
        total = F.avg_pool2d(torch.exp(logits - self._upsample(m)), c, ceil_mode=True, divisor_override=1)
        return m + torch.log(torch.exp(-m) + total)

    def _hiddens_from_logits(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        lse = self.block_log_partition(logits)
        return torch.exp(logits - self._upsample(lse)), -torch.expm1(-lse)

    def mean_hiddens(self, v: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`P(h^k_{ij} = 1 \mid v) = e^{I^k_{ij} - \log(1 + \sum_{B_\alpha} e^{I})}` ``(N, K, H_h, W_h)`` and
        :math:`P(p^k_\alpha = 1 \mid v)` ``(N, K, H_p, W_p)``."""
        return self._hiddens_from_logits(self.detector_logits(v))

    def pool_probs(self, v: Tensor) -> Tensor:
        r""":math:`P(p^k_\alpha = 1 \mid v) = 1 - 1/(1 + \sum_{B_\alpha} e^{I})`, ``(N, K, H_p, W_p)`` (the input of the next layer)."""
        return -torch.expm1(-self.block_log_partition(self.detector_logits(v)))

    def _place(self, logits: Tensor, on: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        """Detectors with one unit on in every block where ``on`` is 1, chosen :math:`\propto e^{I}` (Gumbel-max
        within the block via ``max_pool2d``'s argmax), zero elsewhere."""
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        _, idx = F.max_pool2d(logits + gumbel, self.pool_size, ceil_mode=True, return_indices=True)
        h = torch.zeros(logits.shape[0], logits.shape[1], logits.shape[2] * logits.shape[3],
                        dtype=logits.dtype, device=logits.device)
        h.scatter_(-1, idx.flatten(2), on.to(logits.dtype).flatten(2))
        return h.reshape(logits.shape)

    def sample_hiddens(self, v: Tensor, generator: Optional[torch.Generator] = None,
                       logits: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Draw detectors and pooling units from the block softmax (no gradient): first the pooling unit,
        :math:`p \sim \text{Bernoulli}(P(p = 1 \mid v))`, then in an "on" block one detector :math:`\propto e^{I}`.

        Args:
            v: ``(N, C_in, H, W)``.
            generator: random stream.
            logits: precomputed (possibly scaled) detector inputs; default :meth:`detector_logits`.

        Returns:
            ``h`` ``(N, K, H_h, W_h)`` with at most one 1 per block, and ``p`` ``(N, K, H_p, W_p)``.
        """
        with torch.no_grad():
            x = self.detector_logits(v) if logits is None else logits
            p_on = -torch.expm1(-self.block_log_partition(x))
            p = torch.bernoulli(p_on, generator=generator)
            return self._place(x, p, generator), p

    # ------------------------------------------------------------------ visible side
    def visible_input(self, h: Tensor) -> Tensor:
        r""":math:`c_c + \sum_k (W^k_c * h^k)_{ij}` (full convolution): ``(N, K, H_h, W_h) -> (N, C_in, H, W)``."""
        h = h.to(dtype=self.W.dtype, device=self.W.device)
        return F.conv_transpose2d(h, self.W) + self.c.view(1, -1, 1, 1)

    def mean_visibles(self, h: Tensor) -> Tensor:
        r""":math:`E[v \mid h]`: :math:`\sigma(\text{input})` (binary) or the input itself (Gaussian)."""
        x = self.visible_input(h)
        return torch.sigmoid(x) if self.visible == "binary" else x

    def sample_visibles(self, h: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Draw :math:`v \sim P(v \mid h)` (no gradient)."""
        with torch.no_grad():
            mean = self.mean_visibles(h)
            if self.visible == "binary":
                return torch.bernoulli(mean, generator=generator)
            return mean + torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)

    # ------------------------------------------------------------------ energies
    def visible_energy(self, v: Tensor) -> Tensor:
        r""":math:`U(v)`: :math:`-\sum_c c_c \sum v_c` (+ :math:`\tfrac12\lVert v\rVert^2` for Gaussian visibles), ``(N,)``."""
        v = self._as_param(v)
        u = -(v.sum((2, 3)) * self.c).sum(-1)
        return u + 0.5 * v.pow(2).sum((1, 2, 3)) if self.visible == "gaussian" else u

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        r""":math:`E(v, h) = U(v) - \sum_k\sum_{ij} h^k_{ij} I^k_{ij}`, ``(N,)``.

        The pooling constraint is not checked here (see :meth:`valid`): configurations that break it have
        probability zero.
        """
        h = h.to(dtype=self.W.dtype, device=self.W.device)
        return self.visible_energy(v) - (self.detector_logits(v) * h).sum((1, 2, 3))

    def valid(self, h: Tensor) -> Tensor:
        r"""Whether every block has at most one detector on, ``(N,)`` bool."""
        return (block_view(h.to(self.W.dtype), self.pool_size, fill=0.0).sum(-1) <= 1).flatten(1).all(-1)

    def free_energy(self, v: Tensor) -> Tensor:
        r"""Closed-form free energy with detectors and pooling units summed out, ``(N,)``.

        .. math:: F(v) = U(v) - \sum_k\sum_\alpha \log\Big(1 + \sum_{(i,j) \in B_\alpha} e^{I^k_{ij}}\Big)
        """
        return self.visible_energy(v) - self.block_log_partition(self.detector_logits(v)).sum((1, 2, 3))

    # ------------------------------------------------------------------ sampling and training
    def gibbs(self, v: Tensor, k: int = 1, generator: Optional[torch.Generator] = None,
              pool_clamp: Optional[Tensor] = None) -> ConvGibbsState:
        r"""``k`` block-Gibbs sweeps :math:`v \to (h, p) \sim P(h, p \mid v) \to v \sim P(v \mid h)`.

        Args:
            v: start ``(N, C_in, H, W)``.
            k: sweeps, ``>= 1``.
            generator: random stream.
            pool_clamp: optional pooling states ``(N, K, H_p, W_p)`` in {0, 1} to condition on: then
                :math:`h \sim P(h \mid v, p)` (an "on" block picks one detector :math:`\propto e^{I}`, an
                "off" block is all zero), so the chain samples :math:`P(v \mid p)`: the top-down pass of a
                convolutional DBN.

        Returns:
            :class:`ConvGibbsState`.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with torch.no_grad():
            v = self._as_param(v)
            for _ in range(k):
                x = self.detector_logits(v)
                if pool_clamp is None:
                    h, p = self.sample_hiddens(v, generator, logits=x)
                else:
                    # P(h | v, p): an "on" block picks one detector proportionally to e^I, an "off" block is all zero
                    p = (pool_clamp.to(x.dtype) > 0.5).to(x.dtype)
                    h = self._place(x, p, generator)
                v_mean = self.mean_visibles(h)
                v = self.sample_visibles(h, generator)
        return ConvGibbsState(v=v, v_mean=v_mean, h=h, p=p)

    def cd_loss(self, v_data: Tensor, v_model: Tensor) -> Tensor:
        r"""CD surrogate :math:`\overline{F(v_{data})} - \overline{F(\operatorname{sg}[v_{model}])}`, whose
        autograd gradient is the (negated) CD update of Lee et al. (2009)."""
        return self.free_energy(v_data).mean() - self.free_energy(v_model.detach()).mean()

    def reconstruction_error(self, v: Tensor) -> Tensor:
        r"""Mean squared error of one mean-field up-down pass :math:`v \to P(h \mid v) \to E[v \mid h]`."""
        v = self._as_param(v)
        return (v - self.mean_visibles(self.mean_hiddens(v)[0])).pow(2).mean()

    def forward(self, v: Tensor) -> Tensor:
        """Free energy :math:`F(v)`, ``(N,)``."""
        return self.free_energy(v)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, image_size={self.image_size}, n_filters={self.n_filters}, "
                f"filter_size={self.filter_size}, pool_size={self.pool_size}, visible={self.visible!r}")
