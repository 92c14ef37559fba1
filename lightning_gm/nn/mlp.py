"""Multi-layer perceptrons with a configurable activation."""

from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Sequential):
    """``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between layers (none after the last).

    Args:
        sizes: layer widths, input first, output last (at least two).
        activation: one of :data:`ACTIVATIONS`.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "tanh") -> None:
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
