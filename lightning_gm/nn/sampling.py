"""Random streams and samplers of the Gibbs chains (plain torch and NumPy, no Lightning).

:func:`chain_generator` gives each process its own seeded stream (:func:`chain_seed`: one formula for every
family); :func:`uniform` and :func:`bernoulli` draw from it, filling large uniform requests on a CPU with NumPy's
PCG64DXSM (seeded from the torch generator, so runs stay reproducible) and drawing Bernoulli states as ``u < p``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["bernoulli", "uniform", "chain_seed", "chain_generator"]


def chain_seed(seed: int, rank: int = 0) -> int:
    """The seed of process ``rank``'s Markov chains under ``seed`` (distinct for distinct pairs, < 2**63)."""
    return (int(seed) * 1_000_003 + 7919 * (int(rank) + 1)) % (2**63)


def chain_generator(seed: int, rank: int = 0, device: torch.device | str | None = None) -> torch.Generator:
    """A fresh generator for process ``rank``'s chains (persistent CD chains, AIS runs) seeded by :func:`chain_seed`."""
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(chain_seed(seed, rank))


_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


NUMPY_UNIFORM_MIN = 32768  # below this many draws torch's own generator is as fast (measured: bench/sampler_speed.py)


def uniform(shape: Sequence[int], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
            device: torch.device | str | None = None) -> Tensor:
    r"""``torch.rand(shape, generator=generator, dtype=dtype, device=device)`` in law: independent
    :math:`U[0, 1)` draws (24 random bits for ``float32``, 53 for ``float64``).

    On a CPU, large float32/float64 requests (32,768 draws or more) are filled by NumPy's PCG64DXSM
    generator, seeded with a 62-bit integer drawn from ``generator``: about 1.5x faster than torch's CPU
    Mersenne twister at an RBM's batch shapes, where sampling costs a third of a matrix product. The stream stays a function of ``generator``'s state
    alone, so seeding, checkpointing and resuming ``generator`` still reproduce the draws exactly. Other
    devices and dtypes use ``torch.rand``.
    """
    shape = tuple(shape)
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64) or math.prod(shape) < NUMPY_UNIFORM_MIN:
        return torch.rand(shape, generator=generator, dtype=dtype, device=device)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    out = torch.empty(shape, dtype=dtype)
    np.random.Generator(np.random.PCG64DXSM(seed)).random(out=out.numpy(), dtype=_NUMPY_DTYPE[dtype])
    return out


def bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Independent Bernoulli draws :math:`x_i = [u_i < p_i]`, :math:`u_i \sim U(0, 1)` (:func:`uniform`), in
    ``p``'s dtype.

    The same distribution as ``torch.bernoulli(p)``, 3-4x faster on a CPU (one fast uniform draw and an
    in-place comparison), which matters in Gibbs chains where sampling costs as much as a matrix product.
    No gradient flows through it.
    """
    with torch.no_grad():
        return uniform(p.shape, generator, p.dtype, p.device).lt_(p)
