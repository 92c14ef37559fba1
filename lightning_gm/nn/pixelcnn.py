r"""PixelCNN decoders for binary images: masked convolutions, the conditional gated PixelCNN, and a
:class:`~lightning_gm.nn.likelihoods.Likelihood` that makes any VAE decoder autoregressive.

A PixelCNN factorises an image of :math:`D = H W` binary pixels in raster order,

.. math::

    p(x \mid c) = \prod_{i=1}^{D} p(x_i \mid x_{<i}, c), \qquad
    p(x_i = 1 \mid x_{<i}, c) = \sigma\big(\eta_i(x_{<i}, c)\big),

with all :math:`D` logits :math:`\eta_i` computed in **one** pass of a convolutional network whose
receptive field at pixel :math:`i` covers only pixels :math:`j < i` (so
:math:`\log p(x \mid c) = \sum_i x_i \eta_i - \operatorname{softplus}(\eta_i)` is exact), and sampling
pixel by pixel (:math:`D` passes). The conditioning :math:`c` is a spatial map (``cond_channels x H x W``)
computed from the latent :math:`z` by the VAE's decoder network; it may look anywhere, since it does not
depend on :math:`x`.

Two architectures:

* ``gated=False`` — a stack of masked convolutions (van den Oord et al. 2016a): a type-A
  ``first_kernel_size`` convolution (centre excluded) then type-B ``kernel_size`` convolutions (centre
  included) with residual connections. Causal, but with the well-known blind spot to the upper right.
* ``gated=True`` — the conditional gated PixelCNN (van den Oord et al. 2016b): a vertical stack (rows
  above, shifted down by one row) feeding a horizontal stack (pixels to the left in the row), gated units

  .. math::

      y = \tanh(W_f * x + V_f c) \odot \sigma(W_g * x + V_g c),

  residual connections in the horizontal stack; no blind spot (every earlier pixel within the receptive
  field is seen).

References: van den Oord, Kalchbrenner & Kavukcuoglu (2016a), Pixel Recurrent Neural Networks;
van den Oord et al. (2016b), Conditional Image Generation with PixelCNN Decoders; Gulrajani et al. (2017),
PixelVAE; Chen et al. (2017), Variational Lossy Autoencoder.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.likelihoods import Likelihood

__all__ = ["MaskedConv2d", "GatedPixelCNNLayer", "PixelCNN", "PixelCNNLikelihood", "causal_mask"]


def causal_mask(kernel_size: int, mask_type: str) -> Tensor:
    r"""The ``(k, k)`` 0/1 mask of a masked convolution: rows above the centre, and in the centre row the
    columns left of the centre (type ``"A"``) or up to and including it (type ``"B"``).

    .. math::

        M_{uv} = [u < c] + [u = c]\,[v < c + \mathbb 1_{B}], \qquad c = \lfloor k / 2 \rfloor
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"PixelCNN kernel sizes must be odd and >= 1, got {kernel_size}")
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:c] = 1.0
    mask[c, : c + (1 if mask_type == "B" else 0)] = 1.0
    return mask


class MaskedConv2d(nn.Conv2d):
    r"""A ``k x k`` convolution (``padding = k // 2``) whose weights are multiplied by :func:`causal_mask`,
    so output pixel :math:`i` (raster order) sees input pixels :math:`j < i` (type A) or :math:`j \le i`
    (type B). All input channels are treated as the same pixel (one-channel images).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size.
        mask_type: ``"A"`` (first layer, excludes the centre) or ``"B"`` (later layers).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str = "B") -> None:
        mask = causal_mask(kernel_size, mask_type)
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _gate(a: Tensor) -> Tensor:
    """``tanh(first half) * sigmoid(second half)`` along channels."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedPixelCNNLayer(nn.Module):
    r"""One conditional gated layer with a vertical and a horizontal stack (van den Oord et al. 2016b).

    With :math:`k` the kernel size and :math:`c = \lfloor k/2 \rfloor`, the vertical convolution has a
    ``(c + 1) x k`` kernel over rows :math:`i - c, \dots, i` (its output at row :math:`i` may see row
    :math:`i` and is only ever used shifted down by one row), the horizontal one a ``1 x (c + 1)`` kernel
    over columns :math:`j - c, \dots, j` of row :math:`i` (centre masked out in the first layer, type A):

    .. math::

        v' = \mathrm{gate}(W_v * v + V_v c),\qquad
        h' = h + W_r\,\mathrm{gate}\big(W_h * h + W_{vh}\,\mathrm{shift}_\downarrow(W_v * v) + V_h c\big)

    (no residual in the first layer, whose input is the one-channel image).

    Args:
        in_channels: channels of ``v`` and ``h`` coming in (1 for the first layer).
        channels: channels of ``v`` and ``h`` going out.
        kernel_size: odd kernel size ``k``.
        first: first layer (type-A horizontal mask, no residual).
        cond_channels: channels of the conditioning map (0 = unconditional).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool = False,
                 cond_channels: int = 0) -> None:
        super().__init__()
        causal_mask(kernel_size, "A")  # validates the kernel size
        c = kernel_size // 2
        self.c, self.first = c, first
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (c + 1, kernel_size))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, c + 1))
        hmask = torch.ones(1, 1, 1, c + 1)
        if first:
            hmask[..., -1] = 0.0  # type A: pixel (i, j) must not see itself
        self.register_buffer("h_mask", hmask, persistent=False)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1, bias=False) if cond_channels > 0 else None

    def forward(self, v: Tensor, h: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        c = self.c
        v_pre = self.v_conv(F.pad(v, (c, c, c, 0)))  # rows i-c..i, columns j-c..j+c
        h_pre = F.conv2d(F.pad(h, (c, 0, 0, 0)), self.h_conv.weight * self.h_mask, self.h_conv.bias)
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])  # shift down: rows < i only
        if self.cond is not None and cond is not None:
            cv, ch = self.cond(cond).chunk(2, dim=1)
            v_pre, h_pre = v_pre + cv, h_pre + ch
        v_new = _gate(v_pre)
        h_new = self.h_out(_gate(h_pre))
        return v_new, (h_new if self.first else h + h_new)


class PixelCNN(nn.Module):
    r"""Logits :math:`\eta_i(x_{<i}, c)` of every pixel of a one-channel binary image in one pass.

    Args:
        channels: feature channels of every layer.
        n_layers: number of layers (the first one is type A).
        kernel_size: odd kernel size of the later layers (and of every gated layer but the first).
        first_kernel_size: odd kernel size of the first layer.
        cond_channels: channels of the conditioning map ``c`` (0 = unconditional).
        gated: gated vertical/horizontal stacks (blind-spot free) or a plain masked-convolution stack.
        head_channels: width of the ``1 x 1`` output head (ELU, 1x1 conv, ELU, 1x1 conv to one logit).
    """

    def __init__(self, channels: int = 16, n_layers: int = 4, kernel_size: int = 3, first_kernel_size: int = 7,
                 cond_channels: int = 0, gated: bool = True, head_channels: int = 32) -> None:
        super().__init__()
        if channels < 1 or n_layers < 1 or head_channels < 1:
            raise ValueError(
                f"PixelCNN needs channels, n_layers, head_channels >= 1, got {channels}, {n_layers}, {head_channels}"
            )
        for key, k in (("kernel_size", kernel_size), ("first_kernel_size", first_kernel_size)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"PixelCNN {key} must be odd and >= 1, got {k}")
        self.gated, self.cond_channels = gated, cond_channels
        if gated:
            self.layers = nn.ModuleList(
                GatedPixelCNNLayer(1 if i == 0 else channels, channels, first_kernel_size if i == 0 else kernel_size,
                                   first=i == 0, cond_channels=cond_channels)
                for i in range(n_layers)
            )
        else:
            self.layers = nn.ModuleList(
                MaskedConv2d(1 if i == 0 else channels, channels, first_kernel_size if i == 0 else kernel_size,
                             "A" if i == 0 else "B")
                for i in range(n_layers)
            )
            self.conds = nn.ModuleList(
                nn.Conv2d(cond_channels, channels, 1, bias=False) for _ in range(n_layers if cond_channels else 0)
            )
        # ELU rather than ReLU: no dead units, so the Jacobian's non-zero pattern is the architecture's
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(channels, head_channels, 1), nn.ELU(),
                                  nn.Conv2d(head_channels, 1, 1))

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """``(N, 1, H, W)`` images (and ``(N, cond_channels, H, W)`` conditioning) -> ``(N, 1, H, W)`` logits.

        Row ``r`` of the output depends only on rows ``<= r`` of ``x`` and ``cond``, so a prefix of rows
        may be passed (the sampler does)."""
        if self.cond_channels and cond is None:
            raise ValueError("this PixelCNN is conditional: pass cond of shape (N, cond_channels, H, W)")
        if self.gated:
            v = h = x
            for layer in self.layers:
                v, h = layer(v, h, cond)
            return self.head(h)
        out = x
        for i, layer in enumerate(self.layers):
            y = layer(out if i == 0 else F.elu(out))
            if self.cond_channels:
                y = y + self.conds[i](cond)
            out = y if i == 0 else out + y
        return self.head(out)


class PixelCNNLikelihood(Likelihood):
    r"""An autoregressive Bernoulli observation model :math:`p(x \mid z)` for a VAE: the decoder network
    outputs a conditioning map (``cond_channels x H x W`` numbers, channel-major), a :class:`PixelCNN`
    turns it and the image into per-pixel logits.

    .. math::

        \log p(x \mid z) = \sum_{i=1}^{D} x_i \eta_i - \operatorname{softplus}(\eta_i), \qquad
        \eta = \mathrm{PixelCNN}(x, c(z))

    exact, in one pass. :meth:`sample` draws pixel by pixel (``D`` passes, batched over examples; the pass
    for row ``r`` runs on rows ``<= r`` only). :math:`\mathbb E[x \mid z]` is intractable, so :meth:`mean`
    returns the conditional probabilities :math:`\sigma(\eta_i)` along one ancestral sample (what
    :meth:`~lightning_gm.models.latent.LatentVariableModel.sample` and ``reconstruct`` show).

    Use it as ``likelihood`` of :class:`~lightning_gm.models.VAE` (``conf/vae_pixelcnn.yaml``).

    Args:
        image_shape: ``(1, H, W)`` of one example (default: a square one-channel image inferred from ``D``).
        cond_channels: channels of the conditioning map the decoder network outputs (per pixel).
        channels: PixelCNN feature channels.
        n_layers: PixelCNN layers (fewer layers = a smaller receptive field = less posterior collapse).
        kernel_size: odd kernel size of the later layers.
        first_kernel_size: odd kernel size of the first (type-A) layer.
        gated: gated vertical/horizontal stacks (True) or a plain masked-convolution stack (False).
        head_channels: width of the ``1 x 1`` output head.

    References: van den Oord et al. (2016), Conditional Image Generation with PixelCNN Decoders;
    Gulrajani et al. (2017), PixelVAE.
    """

    def __init__(self, image_shape: Optional[Sequence[int]] = None, cond_channels: int = 1, channels: int = 16,
                 n_layers: int = 4, kernel_size: int = 3, first_kernel_size: int = 7, gated: bool = True,
                 head_channels: int = 32) -> None:
        super().__init__()
        if cond_channels < 1:
            raise ValueError(f"PixelCNNLikelihood.cond_channels must be >= 1, got {cond_channels}")
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        if self.image_shape is not None and (len(self.image_shape) != 3 or self.image_shape[0] != 1):
            raise ValueError(f"PixelCNNLikelihood.image_shape must be (1, H, W), got {list(image_shape or [])}")
        self.cond_channels = cond_channels
        self.net = PixelCNN(channels, n_layers, kernel_size, first_kernel_size, cond_channels, gated, head_channels)

    def _shape(self, dim: int) -> tuple[int, int]:
        if self.image_shape is not None:
            h, w = self.image_shape[1:]
            if h * w != dim:
                raise ValueError(f"PixelCNNLikelihood.image_shape {list(self.image_shape)} does not hold {dim} pixels")
            return h, w
        s = math.isqrt(dim)
        if s * s != dim:
            raise ValueError(
                f"PixelCNNLikelihood: {dim} pixels is not a square image; "
                "set model.init_args.likelihood.init_args.image_shape: [1, H, W]"
            )
        return s, s

    def num_params(self, dim: int) -> int:
        self._shape(dim)
        return self.cond_channels * dim

    def _cond(self, params: Tensor, h: int, w: int) -> Tensor:
        return params.reshape(-1, self.cond_channels, h, w)

    def logits(self, x: Tensor, params: Tensor) -> Tensor:
        """All ``D`` conditional logits in one pass: ``x (..., D)`` (broadcast to ``params``' leading shape),
        ``params (..., cond_channels * D)`` -> ``(..., D)``."""
        lead = params.shape[:-1]
        dim = params.shape[-1] // self.cond_channels
        h, w = self._shape(dim)
        xs = x.expand(*lead, dim).reshape(-1, 1, h, w).to(params.dtype)
        return self.net(xs, self._cond(params, h, w)).reshape(*lead, dim)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        eta = self.logits(x, params)
        # -BCE-with-logits is the numerically stable x*eta - softplus(eta)
        return -F.binary_cross_entropy_with_logits(eta, x.expand_as(eta).to(eta.dtype), reduction="none").sum(-1)

    def autoregress(self, params: Tensor, choose: Callable[[int, Tensor], Tensor],
                    canvas: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The sampler's loop: for each pixel ``i`` in raster order, run the network on the canvas (rows up to
        ``i``'s), read the logit ``eta_i`` and set ``canvas[:, i] = choose(i, eta_i)``.

        Args:
            params: conditioning ``(N, cond_channels * D)``.
            choose: ``(i, logits (N,)) -> values (N,)`` for pixel ``i``.
            canvas: ``(N, D)`` starting canvas (zeros by default); entries ``>= i`` are overwritten in turn.

        Returns:
            The filled canvas ``(N, D)`` and the logits ``(N, D)`` read at each step.
        """
        n, dim = params.shape[0], params.shape[-1] // self.cond_channels
        h, w = self._shape(dim)
        cond = self._cond(params, h, w)
        canvas = params.new_zeros(n, dim) if canvas is None else canvas.clone().to(params.dtype)
        img = canvas.view(n, 1, h, w)
        logits = params.new_zeros(n, dim)
        for i in range(dim):
            r = i // w
            eta = self.net(img[:, :, : r + 1], cond[:, :, : r + 1])[:, 0, r, i % w]
            logits[:, i] = eta
            canvas[:, i] = choose(i, eta)
        return canvas, logits

    @torch.no_grad()
    def _ancestral(self, params: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        lead = params.shape[:-1]
        flat = params.reshape(-1, params.shape[-1])

        def draw(i: int, eta: Tensor) -> Tensor:
            return torch.bernoulli(torch.sigmoid(eta), generator=generator)

        x, eta = self.autoregress(flat, draw)
        return x.reshape(*lead, -1), eta.reshape(*lead, -1)

    def sample(self, params: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """One binary sample per row of ``params`` (``(..., cond_channels * D) -> (..., D)``), pixel by pixel."""
        return self._ancestral(params, generator)[0]

    def mean(self, params: Tensor) -> Tensor:
        """The conditional probabilities :math:`\\sigma(\\eta_i)` along one ancestral sample, ``(..., D)``."""
        return torch.sigmoid(self._ancestral(params)[1])
