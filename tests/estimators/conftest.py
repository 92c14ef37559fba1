"""The RBMs shared by the estimator tests: a trained, enumerable one, and seeded random ones."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.estimators.ais import base_rate_log_odds
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.nn.rbm import BernoulliRBM


def random_rbm(n_visible: int, n_hidden: int, seed: int, scale: float = 1.0,
               dtype: torch.dtype = torch.float64) -> BernoulliRBM:
    """A ``BernoulliRBM`` with standard normal biases and weights (times ``scale``) from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    rbm = BernoulliRBM(n_visible, n_hidden, dtype=dtype)
    with torch.no_grad():
        rbm.W.copy_(scale * torch.randn(n_visible, n_hidden, generator=g, dtype=dtype))
        rbm.b.copy_(torch.randn(n_visible, generator=g, dtype=dtype))
        rbm.c.copy_(torch.randn(n_hidden, generator=g, dtype=dtype))
    return rbm


def train_digits_rbm() -> tuple[BernoulliRBM, torch.Tensor]:
    """A 64x20 RBM trained with 600 PCD-1 steps on binarised 8x8 digits, and the data: the enumerable model of the
    AIS tests and of ``bench/ais_interval_coverage.py``."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data / 16.0 > 0.5, dtype=torch.float32)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(64, 20)
    rbm.init_visible_bias_from_data(x)
    opt = torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.5)
    chains = torch.bernoulli(torch.full((100, 64), 0.5), generator=g)
    for _ in range(600):
        batch = x[torch.randint(0, len(x), (100,), generator=g)]
        chains = rbm.gibbs_vhv(chains, 1, generator=g).v
        opt.zero_grad()
        rbm.cd_loss(batch, chains).backward()
        opt.step()
    rbm.requires_grad_(False)
    return rbm, x


@pytest.fixture(scope="session")
def digits_rbm() -> dict:
    """:func:`train_digits_rbm`'s ``rbm`` and data ``x``, its exact ``log_z`` (2^20 hidden configurations) and the
    data's base-rate log-odds ``base``."""
    rbm, x = train_digits_rbm()
    return {"rbm": rbm, "x": x, "log_z": log_partition_enumerate(rbm), "base": base_rate_log_odds(x)}
