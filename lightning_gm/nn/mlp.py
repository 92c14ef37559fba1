r"""Multi-layer perceptrons with a configurable activation and weight initialisation (plain torch).

Activations are element-wise modules (:data:`ACTIVATIONS`) or ``"gated"``: gated dense units, where a
hidden layer is two affine maps of its input, one gating the other,

.. math::

    h = (W_1 x + b_1) \odot \sigma(W_2 x + b_2)

(:class:`GatedLinear`; Dauphin et al. 2017's gated linear unit as used by Tomczak & Welling's VampPrior MLPs).

Initialisation (:data:`INITS`, applied by :func:`init_linear_` to every affine map's weight ``W`` of shape
``(fan_out, fan_in)``; the non-default schemes set the biases to 0):

.. math::

    \text{xavier\_uniform: } & W_{ij} \sim U(-a, a), \; a = \sqrt{6 / (\text{fan\_in} + \text{fan\_out})}
        \quad (\operatorname{Var} = 2 / (\text{fan\_in} + \text{fan\_out})) \\
    \text{xavier\_normal: } & W_{ij} \sim \mathcal N(0, 2 / (\text{fan\_in} + \text{fan\_out})) \\
    \text{he\_normal: } & W_{ij} \sim \mathcal N(0, 2 / \text{fan\_in}) \\
    \text{he\_uniform: } & W_{ij} \sim U(-a, a), \; a = \sqrt{6 / \text{fan\_in}}
        \quad (\operatorname{Var} = 2 / \text{fan\_in}) \\
    \text{torch: } & \text{PyTorch's default } W_{ij}, b_i \sim U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})
        \quad (\operatorname{Var}(W) = 1 / (3\, \text{fan\_in}))

Glorot/Xavier suits tanh (Burda et al. 2016 use ``xavier_uniform`` with zero biases), He suits ReLU-like and
gated units (Tomczak & Welling 2018 use ``he_normal``). PyTorch's default is too small for tanh networks of
this size: the decoder's first tanh layer saturates and a VAE sits on a plateau for hundreds of updates.
For convolutions, ``fan_in = in_channels * kernel area`` and ``fan_out = out_channels * kernel area``
(``torch.nn.init``'s convention, also for transposed convolutions).

References: Glorot & Bengio (2010), Understanding the difficulty of training deep feedforward neural networks;
He, Zhang, Ren & Sun (2015), Delving Deep into Rectifiers; Dauphin, Fan, Auli & Grangier (2017), Language
Modeling with Gated Convolutional Networks; Tomczak & Welling (2018), VAE with a VampPrior.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "INITS", "MLP", "GatedLinear", "init_linear_", "init_module_", "bounded",
           "check_activation", "check_init", "activation_module"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}

#: the name of gated dense units as an MLP activation (:class:`GatedLinear` layers)
GATED = "gated"

#: weight initialisation schemes (see the module docstring)
INITS = ("torch", "xavier_uniform", "xavier_normal", "he_normal", "he_uniform")


def check_activation(name: str, owner: str = "activation", gated: bool = True) -> None:
    """Raise a one-line ``ValueError`` naming ``owner`` unless ``name`` is a known activation."""
    known = sorted(ACTIVATIONS) + ([GATED] if gated else [])
    if name not in known:
        raise ValueError(f"{owner} must be one of {known}, got {name!r}")


def check_init(name: str, owner: str = "init") -> None:
    """Raise a one-line ``ValueError`` naming ``owner`` unless ``name`` is in :data:`INITS`."""
    if name not in INITS:
        raise ValueError(f"{owner} must be one of {list(INITS)}, got {name!r}")


def activation_module(name: str, owner: str = "activation") -> nn.Module:
    """A fresh element-wise activation module (``gated`` is a layer type, not an activation here)."""
    check_activation(name, owner, gated=False)
    return ACTIVATIONS[name]()


@torch.no_grad()
def init_linear_(layer: nn.Module, scheme: str) -> nn.Module:
    """Initialise the ``weight`` (and zero the ``bias``) of one affine layer (``nn.Linear``, ``nn.Conv*``,
    ``nn.ConvTranspose*``) by ``scheme`` in place; ``"torch"`` re-applies PyTorch's own default."""
    check_init(scheme)
    weight: Tensor = layer.weight  # type: ignore[assignment]
    if scheme == "torch":
        layer.reset_parameters()  # type: ignore[operator]
        return layer
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # torch stores a transposed convolution's weight as (in, out, ...): its fans are the other way round
        fan_in, fan_out = fan_out, fan_in
    if scheme == "xavier_uniform":
        a = math.sqrt(6.0 / (fan_in + fan_out))
        weight.uniform_(-a, a)
    elif scheme == "xavier_normal":
        weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
    elif scheme == "he_normal":
        weight.normal_(0.0, math.sqrt(2.0 / fan_in))
    else:  # he_uniform
        a = math.sqrt(6.0 / fan_in)
        weight.uniform_(-a, a)
    if getattr(layer, "bias", None) is not None:
        layer.bias.zero_()  # type: ignore[union-attr]
    return layer


class GatedLinear(nn.Module):
    r"""Gated dense units :math:`h = (W_1 x + b_1) \odot \sigma(W_2 x + b_2)`: ``(..., in) -> (..., out)``.

    Both maps are computed by one ``nn.Linear`` of ``2 * out_features`` outputs (one matrix product);
    :attr:`linear` and :attr:`gate` are views of its two halves for inspection.

    Args:
        in_features: input size.
        out_features: number of gated units.

    References: Dauphin et al. (2017); Tomczak & Welling (2018) (their ``GatedDense`` without inner activation).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.proj = nn.Linear(self.in_features, 2 * self.out_features)

    @torch.no_grad()
    def reset_parameters(self, scheme: str = "torch") -> None:
        """Initialise ``W_1`` and ``W_2`` each as an ``in -> out`` layer by ``scheme`` (fans of one half)."""
        halves = [nn.Linear(self.in_features, self.out_features) for _ in range(2)]
        for h in halves:
            init_linear_(h, scheme)
        self.proj.weight.copy_(torch.cat([h.weight for h in halves]))
        self.proj.bias.copy_(torch.cat([h.bias for h in halves]))

    @property
    def linear(self) -> tuple[Tensor, Tensor]:
        """``(W_1, b_1)``."""
        return self.proj.weight[: self.out_features], self.proj.bias[: self.out_features]

    @property
    def gate(self) -> tuple[Tensor, Tensor]:
        """``(W_2, b_2)``."""
        return self.proj.weight[self.out_features :], self.proj.bias[self.out_features :]

    def forward(self, x: Tensor) -> Tensor:
        h, g = self.proj(x).chunk(2, dim=-1)
        return h * torch.sigmoid(g)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def init_module_(module: nn.Module, scheme: str) -> nn.Module:
    """Apply :func:`init_linear_` to every linear and (transposed) convolution layer inside ``module``
    (a :class:`GatedLinear` initialises its two maps as two layers)."""
    check_init(scheme)
    gated = [m for m in module.modules() if isinstance(m, GatedLinear)]
    inner = {id(g.proj) for g in gated}
    for g in gated:
        g.reset_parameters(scheme)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and id(m) not in inner:
            init_linear_(m, scheme)
    return module


def bounded(x: Tensor, bounds: Optional[Sequence[float]]) -> Tensor:
    """``hardtanh(x, low, high)`` when ``bounds = (low, high)``, else ``x`` (e.g. an encoder's log-variance
    kept in ``[-6, 2]`` as in Tomczak & Welling's code; no gradient flows outside the range, as there)."""
    if bounds is None:
        return x
    return nn.functional.hardtanh(x, float(bounds[0]), float(bounds[1]))


def check_bounds(bounds: Optional[Sequence[float]], owner: str) -> Optional[tuple[float, float]]:
    """Validate ``(low, high)`` with ``low < high`` (or ``None``); a one-line ``ValueError`` naming ``owner``."""
    if bounds is None:
        return None
    if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
        raise ValueError(f"{owner} must be [low, high] with low < high (e.g. [-6.0, 2.0]) or null, got {list(bounds)}")
    return float(bounds[0]), float(bounds[1])


class MLP(nn.Sequential):
    """``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between layers (none after the last).

    Args:
        sizes: layer widths, input first, output last (at least two).
        activation: one of :data:`ACTIVATIONS`, or ``"gated"`` (every hidden layer a :class:`GatedLinear`).
        init: weight initialisation of every layer, one of :data:`INITS` (``"torch"``: PyTorch's default).
    """

    def __init__(self, sizes: Sequence[int], activation: str = "tanh", init: str = "torch") -> None:
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
        check_activation(activation)
        check_init(init)
        layers: list[nn.Module] = []
        last = len(sizes) - 2
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i < last and activation == GATED:
                layers.append(GatedLinear(a, b))
            else:
                layers.append(nn.Linear(a, b))
                if i < last:
                    layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.activation, self.init = activation, init
        if init != "torch":
            init_module_(self, init)
