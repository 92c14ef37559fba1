r"""torchmetrics Metrics that reduce correctly across processes, and the bits/dim conversion.

Bits per dimension of a per-example negative log-likelihood :math:`\ell` (nats) on ``D``-dimensional
data: :math:`\mathrm{bpd} = (\ell + c) / (D \ln 2)`, where ``c`` converts a density on the model's
data space into the discrete likelihood the literature reports; for 8-bit images dequantised to
``[0, 1]`` it is :math:`D \ln 256`, for binary data 0 (see ``GenerativeDataModule.bpd_offset``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["MeanStdErr", "bits_per_dim"]


def bits_per_dim(nll_nats: float | Tensor, dims: int, offset_nats: float = 0.0) -> float | Tensor:
    """Convert a per-example NLL in nats to bits per dimension (``offset_nats`` as above)."""
    return (nll_nats + offset_nats) / (dims * math.log(2.0))


class MeanStdErr(Metric):
    """Mean of per-example values and its standard error, summed across processes (float64).

    ``compute()`` returns ``(mean, standard_error, count)``.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        v = values.detach().double().flatten()
        self.total += v.sum()
        self.total_sq += (v**2).sum()
        self.count += v.numel()

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        n = self.count
        mean = self.total / n
        var = (self.total_sq / n - mean**2).clamp(min=0.0) * n / (n - 1).clamp(min=1.0)
        return mean, torch.sqrt(var / n), n

