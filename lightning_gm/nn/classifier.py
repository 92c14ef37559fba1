r"""A small LeNet-style MNIST classifier whose penultimate layer is the feature space of sample-quality metrics.

Input: images with values in :math:`[0, 1]` (grey or binary), shape ``(N, 784)`` or ``(N, 1, 28, 28)``.

.. math::

    h = \mathrm{pool}(\mathrm{relu}(\mathrm{conv}_{5\times5}(x))), \quad
    h' = \mathrm{pool}(\mathrm{relu}(\mathrm{conv}_{5\times5}(h))), \quad
    \phi(x) = W_1 \operatorname{vec}(h') + b_1 \in \mathbb R^{F}, \quad
    \mathrm{logits}(x) = W_2\, \mathrm{dropout}(\mathrm{relu}(\phi(x))) + b_2.

The features :math:`\phi(x)` are the *pre-activation* of the penultimate layer (no dead ReLU units, so
the feature covariance of the Fréchet distance is not made singular by units that are always 0).

A trained network is saved as one ``torch.save`` file holding only plain data (architecture arguments,
``state_dict``, test accuracy), loadable with ``weights_only=True``: :func:`save_feature_network`,
:func:`load_feature_network`.

References: LeCun, Bottou, Bengio & Haffner (1998), Gradient-based learning applied to document
recognition; Heusel et al. (2017), GANs trained by a two time-scale update rule (the Fréchet distance
on a classifier's features).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from lightning_gm.atomic import temporary_beside

__all__ = ["LeNet", "FeatureExtractor", "save_feature_network", "load_feature_network", "FORMAT_VERSION"]

#: version of the saved file's layout
FORMAT_VERSION = 1


class LeNet(nn.Module):
    """LeNet-style CNN for 28x28 single-channel images (10 classes).

    Args:
        channels: output channels of the two 5x5 convolutions (first padded to keep 28x28).
        feature_dim: width ``F`` of the penultimate (feature) layer.
        num_classes: number of classes.
        dropout: dropout on the features before the output layer (training only).
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)

    def __init__(self, channels: Sequence[int] = (16, 32), feature_dim: int = 128, num_classes: int = 10,
                 dropout: float = 0.25) -> None:
        super().__init__()
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"LeNet.channels must be two positive ints, got {list(channels)}")
        c1, c2 = (int(c) for c in channels)
        self.arch = {"channels": [c1, c2], "feature_dim": int(feature_dim), "num_classes": int(num_classes),
                     "dropout": float(dropout)}
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 10 -> 5
            nn.Flatten(),
        )
        self.feature = nn.Linear(c2 * 5 * 5, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        #: feature dimensionality (read by torchmetrics' Fréchet metric instead of a dummy forward pass)
        self.num_features = int(feature_dim)

    @classmethod
    def as_images(cls, x: Tensor) -> Tensor:
        """``(N, 784)`` or ``(N, 1, 28, 28)`` (any float/int/bool dtype) -> float ``(N, 1, 28, 28)``."""
        if x.dim() < 2 or x[0].numel() != 784:
            raise ValueError(f"LeNet expects 28x28 images as (N, 784) or (N, 1, 28, 28); got shape {tuple(x.shape)}")
        return x.reshape(-1, *cls.image_shape).float()

    def features(self, x: Tensor) -> Tensor:
        r"""Features :math:`\phi(x)`, shape ``(N, F)``."""
        return self.feature(self.conv(self.as_images(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits, shape ``(N, num_classes)``."""
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """The feature map :math:`\\phi` of a network as a module (``forward = net.features``), frozen and in
    eval mode, with ``num_features`` for torchmetrics.

    Args:
        net: a network with ``features(x) -> (N, F)`` and ``num_features``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        self.num_features = int(getattr(net, "num_features"))
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        super().train(mode)
        self.net.eval()  # always deterministic (no dropout)
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)



def save_feature_network(net: LeNet, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``net`` (architecture + weights) and plain-data ``meta`` (e.g. ``test_acc``) to ``path``
    atomically; returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_VERSION, "arch": dict(net.arch),
               "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, "meta": dict(meta)}
    tmp = temporary_beside(path)
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_feature_network(path: str | os.PathLike) -> tuple[LeNet, dict[str, Any]]:
    """Read a file written by :func:`save_feature_network`: ``(network in eval mode, meta)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a saved feature network.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(str(path))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "arch" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path} is not a feature network saved by lightning_gm (no 'arch'/'state_dict')")
    net = LeNet(**payload["arch"])
    net.load_state_dict(payload["state_dict"])
    return net.eval(), dict(payload.get("meta") or {})
