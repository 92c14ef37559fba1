r"""MADE: Masked Autoencoder for Distribution Estimation (plain torch).

Every unit carries a *degree*. Inputs get degrees :math:`m(d) \in \{1..D\}` from the
chosen ordering (a permutation), hidden units :math:`m^l(k) \in \{1..D-1\}`, context
inputs degree :math:`0` (connected to everything; with a context, hidden units may also
have degree :math:`0` so that the first dimension in the ordering depends on it). Masks:

.. math::

    M^{l}_{k,j} = \mathbb{1}\left[m^{l}(k) \ge m^{l-1}(j)\right] \ \text{(hidden)}, \qquad
    M^{\text{out}}_{d,k} = \mathbb{1}\left[m(d) > m^{L}(k)\right] \ \text{(output)},

so output :math:`d` (each of its ``num_params`` heads) depends only on inputs
:math:`j` with :math:`m(j) < m(d)`: the Jacobian of every head is strictly lower
triangular once rows/columns are sorted by degree, i.e.
:math:`p(x) = \prod_d p(x_d \mid x_{m(j) < m(d)}, h)`.

References:
    Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedLinear", "MADE"]

OrderingSpec = Union[str, Tensor, Sequence[int]]


class MaskedLinear(nn.Linear):
    r"""Linear layer with a fixed binary connectivity mask: :math:`y = (W \odot M) x + b`.

    Args:
        in_features: input size.
        out_features: output size.
        mask: ``(out_features, in_features)`` binary mask (a buffer; ones if ``None``).
        bias: whether to use a bias.

    References:
        Germain et al., "MADE", ICML 2015.
    """

    mask: Tensor

    def __init__(self, in_features: int, out_features: int, mask: Optional[Tensor] = None, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))
        if mask is not None:
            self.set_mask(mask)

    def set_mask(self, mask: Tensor) -> None:
        """Replace the ``(out_features, in_features)`` mask."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(self.weight.shape)}")
        self.mask.copy_(mask.to(self.mask))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder: ``(B, D)`` [+ context ``(B, C_ctx)``] -> ``(B, D, num_params)``.

    .. math::

        \text{out}_{d,p} = f_{d,p}\big(x_{\{j : m(j) < m(d)\}},\ h\big), \qquad d = 1..D,\ p = 1..P .

    Args:
        features: input dimension :math:`D`.
        hidden_features: hidden layer widths (may be empty: a single masked linear layer).
        num_params: outputs per input dimension :math:`P` (e.g. 2 for shift & log-scale,
            or K mixture parameters per dimension).
        context_features: size of an optional conditioning input (degree 0, fully connected).
        ordering: ``"natural"`` (degrees ``1..D``), ``"reversed"`` (``D..1``), ``"random"``
            (seeded random permutation), or an explicit tensor/sequence of input *degrees*,
            a permutation of ``1..D``: output ``i`` may depend on input ``j`` iff
            ``degree[j] < degree[i]``.
        hidden_degrees: ``"sequential"`` (``k mod (D-1) + 1``, every degree represented;
            ``k mod D`` with a context) or ``"random"`` (uniform on ``[min previous degree, D-1]``,
            as in the paper).
        seed: seed of the private generator used for random orderings / degrees
            (``None``: global RNG).
        activation: hidden activation class.
        zero_init_output: zero the output layer (outputs start at 0).

    References:
        Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
    """

    input_degrees: Tensor

    def __init__(
        self,
        features: int,
        hidden_features: Sequence[int] = (64, 64),
        num_params: int = 1,
        context_features: int = 0,
        ordering: OrderingSpec = "natural",
        hidden_degrees: str = "sequential",
        seed: Optional[int] = None,
        activation: Type[nn.Module] = nn.ReLU,
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        if hidden_degrees not in ("sequential", "random"):
            raise ValueError("hidden_degrees must be 'sequential' or 'random'")
        self.features = features
        self.num_params = num_params
        self.context_features = context_features
        self.hidden_sizes = list(hidden_features)
        self.ordering_mode = ordering if isinstance(ordering, str) else "explicit"
        self.hidden_degrees_mode = hidden_degrees
        self._generator: Optional[torch.Generator] = None if seed is None else torch.Generator().manual_seed(seed)

        self.register_buffer("input_degrees", self._make_ordering(ordering))
        for l, h in enumerate(self.hidden_sizes):
            self.register_buffer(f"hidden_degrees_{l}", torch.zeros(h, dtype=torch.long))

        hidden: List[nn.Module] = []
        width = features + context_features
        for h in self.hidden_sizes:
            hidden.append(MaskedLinear(width, h))
            width = h
        self.hidden_layers = nn.ModuleList(hidden)
        self.output_layer = MaskedLinear(width, features * num_params)
        self.activation = activation()
        self._sample_hidden_degrees()
        self._update_masks()
        if zero_init_output:
            with torch.no_grad():
                self.output_layer.weight.zero_()
                self.output_layer.bias.zero_()

    # ------------------------------------------------------------------ degrees
    def _make_ordering(self, ordering: OrderingSpec) -> Tensor:
        d = self.features
        if isinstance(ordering, str):
            if ordering == "natural":
                return torch.arange(1, d + 1)
            if ordering == "reversed":
                return torch.arange(d, 0, -1)
            if ordering == "random":
                return torch.randperm(d, generator=self._generator) + 1
            raise ValueError(f"unknown ordering {ordering!r}")
        degrees = torch.as_tensor(ordering, dtype=torch.long).flatten()
        if not torch.equal(torch.sort(degrees).values, torch.arange(1, d + 1)):
            raise ValueError("an explicit ordering must be a permutation of 1..D (input degrees)")
        return degrees.clone()

    def _sample_hidden_degrees(self) -> None:
        d = self.features
        # With a context, degree-0 hidden units (seeing only the context) let the first
        # dimension in the ordering depend on the context too.
        low = 0 if self.context_features > 0 else 1
        for l, h in enumerate(self.hidden_sizes):
            buf = getattr(self, f"hidden_degrees_{l}")
            if d == 1:
                deg = torch.zeros(h, dtype=torch.long)
            elif self.hidden_degrees_mode == "sequential":
                deg = torch.arange(h) % (d - low) + low
            else:
                deg = torch.randint(low, d, (h,), generator=self._generator)
                low = int(deg.min()) if h > 0 else low
            buf.copy_(deg)

    def _update_masks(self) -> None:
        ctx = torch.zeros(self.context_features, dtype=torch.long, device=self.input_degrees.device)
        prev = torch.cat([self.input_degrees, ctx])
        for l, layer in enumerate(self.hidden_layers):
            deg = getattr(self, f"hidden_degrees_{l}")
            layer.set_mask((deg[:, None] >= prev[None, :]).float())
            prev = deg
        out_deg = self.input_degrees.repeat_interleave(self.num_params)
        self.output_layer.set_mask((out_deg[:, None] > prev[None, :]).float())

    @property
    def order(self) -> Tensor:
        """Input indices sorted by degree (the autoregressive generation order), shape ``(D,)``."""
        return torch.argsort(self.input_degrees)

    def resample_connectivity(self, seed: Optional[int] = None, resample_ordering: bool = True) -> None:
        """Redraw the random parts of the connectivity (connectivity-agnostic training).

        Redraws the ordering if it was ``"random"`` (and ``resample_ordering``) and the hidden
        degrees if ``hidden_degrees="random"``; then rebuilds all masks. Deterministic
        orderings/degrees are kept. Note: a flow built on this MADE changes function.

        Args:
            seed: reseed the private generator first (``None``: continue its stream).
            resample_ordering: whether to redraw a random ordering.
        """
        if seed is not None:
            self._generator = torch.Generator().manual_seed(seed)
        if resample_ordering and self.ordering_mode == "random":
            self.input_degrees.copy_(self._make_ordering("random"))
        self._sample_hidden_degrees()
        self._update_masks()

    def set_ordering(self, ordering: OrderingSpec) -> None:
        """Set a new input ordering (``"natural"``, ``"reversed"``, ``"random"`` or explicit degrees) and rebuild masks."""
        self.input_degrees.copy_(self._make_ordering(ordering))
        self._update_masks()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Compute the autoregressive parameters.

        Args:
            x: ``(B, D)``.
            context: ``(B, C_ctx)``, required iff ``context_features > 0``.

        Returns:
            ``(B, D, num_params)``; entry ``[:, d, p]`` depends only on ``x[:, j]`` with
            ``input_degrees[j] < input_degrees[d]`` (and on the context).
        """
        h = x
        if self.context_features > 0:
            if context is None:
                raise ValueError("this MADE is conditional: pass a context")
            h = torch.cat([x, context.to(x.dtype)], dim=-1)
        for layer in self.hidden_layers:
            h = self.activation(layer(h))
        out = self.output_layer(h)
        return out.view(x.shape[0], self.features, self.num_params)
