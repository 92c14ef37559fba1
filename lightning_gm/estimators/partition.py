r"""Exact log-partition functions of small Boltzmann machines by enumerating binary configurations.

For an RBM one layer can always be summed (or integrated) out analytically, so

.. math::

    \log Z = \log \sum_{v \in \{0,1\}^D} e^{-F(v)} = \log \sum_{h \in \{0,1\}^H} e^{-F(h)},

which costs :math:`2^{\min(D, H)}` free-energy evaluations. The sum is done in float64, in chunks of
configurations (memory stays ``O(chunk_size * (D + H))``), combining chunks with a running
log-sum-exp. :func:`enumerate_binary`, :func:`iter_binary_chunks` and :func:`logsumexp_over_binary`
are model-agnostic so that, e.g., a DBM can enumerate its odd layers and sum the even ones out.

Configuration ``k`` of ``n`` units has unit ``j`` equal to bit ``j`` of ``k`` (little-endian):
``x[k, j] = (k >> j) & 1``.

References:
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML
    (exact log Z of small RBMs used to validate AIS).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterator, Literal, TypeVar

import torch
from torch import Tensor

from lightning_gm.nn.rbm import BernoulliRBM, RBMBase

__all__ = [
    "MAX_ENUMERATION_UNITS",
    "EnumerationTooLargeError",
    "check_enumerable",
    "frozen_copy",
    "base_parameter",
    "enumerate_binary",
    "iter_binary_chunks",
    "logsumexp_over_binary",
    "log_partition_enumerate",
    "log_partition_bruteforce",
    "sample_rbm_exact",
]

#: default largest number of binary units :func:`log_partition_enumerate` will enumerate (2^25 ~ 3.4e7).
MAX_ENUMERATION_UNITS = 25

_DEFAULT_CHUNK = 2**16

M = TypeVar("M", bound=torch.nn.Module)


class EnumerationTooLargeError(ValueError):
    """Exact enumeration was asked for more binary units than allowed."""


def _bits(start: int, stop: int, n: int, dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    # Integer codes -> binary rows with a shift-and-mask; int64 holds up to 62 units exactly.
    codes = torch.arange(start, stop, dtype=torch.int64, device=device)
    shifts = torch.arange(n, dtype=torch.int64, device=device)
    return ((codes.unsqueeze(-1) >> shifts) & 1).to(dtype)


def enumerate_binary(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    r"""All :math:`2^n` binary vectors of length ``n``.

    Args:
        n: number of units, ``0 <= n <= 30`` (larger: use :func:`iter_binary_chunks`).
        dtype, device: of the result.

    Returns:
        ``(2**n, n)`` with ``out[k, j] = (k >> j) & 1``; ``n = 0`` gives one empty row.
    """
    if not 0 <= n <= 30:
        raise EnumerationTooLargeError(f"enumerate_binary: n must be in [0, 30], got {n}; use iter_binary_chunks")
    return _bits(0, 2**n, n, dtype, device)


def iter_binary_chunks(
    n: int,
    chunk_size: int = _DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Iterator[Tensor]:
    r"""Yield the :math:`2^n` binary vectors of length ``n`` in consecutive chunks.

    Args:
        n: number of units, ``0 <= n <= 62``.
        chunk_size: rows per chunk (the last chunk may be shorter).
        dtype, device: of the chunks.

    Yields:
        ``(rows, n)`` tensors, in the order of :func:`enumerate_binary`.
    """
    if not 0 <= n <= 62:
        raise EnumerationTooLargeError(f"iter_binary_chunks: n must be in [0, 62], got {n}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    total = 2**n
    for start in range(0, total, chunk_size):
        yield _bits(start, min(start + chunk_size, total), n, dtype, device)


def logsumexp_over_binary(
    n: int,
    log_fn: Callable[[Tensor], Tensor],
    chunk_size: int = _DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r""":math:`\log \sum_{x \in \{0,1\}^n} \exp(\text{log\_fn}(x))`, chunk by chunk.

    Each chunk's log-sum-exp is combined with the running total by another log-sum-exp, so no
    intermediate ever overflows and memory is bounded by one chunk.

    Args:
        n: number of binary units.
        log_fn: maps ``(rows, n)`` configurations to ``(rows,)`` unnormalised log-probabilities.
        chunk_size: configurations per call of ``log_fn``.
        dtype, device: of the configurations passed to ``log_fn``.

    Returns:
        0-d tensor (differentiable if ``log_fn`` is).
    """
    total: Tensor | None = None
    for x in iter_binary_chunks(n, chunk_size, dtype, device):
        part = torch.logsumexp(log_fn(x), dim=0)
        total = part if total is None else torch.logaddexp(total, part)
    assert total is not None  # at least one chunk: 2**n >= 1
    return total


def frozen_copy(module: M, dtype: torch.dtype = torch.float64) -> M:
    """A detached copy of ``module`` in ``dtype`` without gradients: what the estimators compute on, so that
    exact sums of up to 2^25 terms get float64 precision and the model being trained stays untouched."""
    model = copy.deepcopy(module).to(dtype)
    model.requires_grad_(False)
    return model


def base_parameter(value: Tensor | float | None, shape: tuple[int, ...], name: str, device: torch.device | str | None,
                   default: Tensor | float = 0.0) -> Tensor:
    r"""A per-unit parameter of an AIS base distribution (the base-rate biases :math:`b_A`, a base mean :math:`a`
    or precision :math:`\tau`) as the paths compute on it: a float64 tensor of ``shape`` on ``device``, detached
    and owned (a copy).

    Args:
        value: a tensor or array with ``prod(shape)`` entries (in any shape, e.g. flat or image-shaped), or one
            number for every unit; ``None`` takes ``default``.
        shape: the units' shape (e.g. ``(D,)``, or ``(C, H, W)`` for a convolutional RBM).
        name: the argument's name, for the error.
        device: where the path's parameters live.
        default: used when ``value`` is ``None`` (a number or a tensor of ``prod(shape)`` entries).

    Raises:
        ValueError: naming ``name`` when ``value`` has neither one nor ``prod(shape)`` entries.
    """
    t = torch.as_tensor(default if value is None else value).detach().to(dtype=torch.float64, device=device)
    n = math.prod(shape)
    if t.numel() == 1:
        return t.reshape(()).expand(shape).clone()
    if t.numel() != n:
        raise ValueError(f"{name} must have {n} entries (shape {tuple(shape)}) or be one number, "
                         f"got shape {tuple(t.shape)}")
    return t.reshape(shape).clone()


def check_enumerable(n: int, max_units: int, what: str) -> None:
    """Raise :class:`EnumerationTooLargeError` when enumerating ``n`` binary units exceeds ``max_units``."""
    if n > max_units:
        raise EnumerationTooLargeError(
            f"{what}: exact enumeration needs 2^{n} terms but the limit is 2^{max_units} "
            f"(max_units={max_units}); use AIS (lightning_gm.estimators.ais) for models this large"
        )


def log_partition_enumerate(
    rbm: RBMBase,
    over: Literal["auto", "visible", "hidden"] = "auto",
    chunk_size: int = _DEFAULT_CHUNK,
    max_units: int = MAX_ENUMERATION_UNITS,
) -> float:
    r"""Exact :math:`\log Z` of an RBM by enumerating one layer and summing the other out.

    .. math::

        \log Z = \log \sum_{v} e^{-F(v)}\ \ (\texttt{over="visible"})
               = \log \sum_{h} e^{-F(h)}\ \ (\texttt{over="hidden"})

    Computed in float64 on a detached copy of the model.

    Args:
        rbm: a :class:`~lightning_gm.nn.rbm.BernoulliRBM`, or a
            :class:`~lightning_gm.nn.rbm.GaussianBernoulliRBM` (then only ``"hidden"``/``"auto"``:
            the continuous visibles are integrated out analytically).
        over: layer to enumerate; ``"auto"`` picks the smaller binary layer.
        chunk_size: configurations per chunk.
        max_units: refuse (``ValueError``) to enumerate more units than this.

    Returns:
        :math:`\log Z` as a Python float.

    Raises:
        EnumerationTooLargeError: (a ``ValueError``) if the enumerated layer has more than ``max_units`` units.
        ValueError: if ``over`` is invalid for the model.
    """
    binary_visibles = isinstance(rbm, BernoulliRBM)
    if over == "auto":
        over = "visible" if binary_visibles and rbm.n_visible < rbm.n_hidden else "hidden"
    if over not in ("visible", "hidden"):
        raise ValueError(f"over must be 'auto', 'visible' or 'hidden', got {over!r}")
    if over == "visible" and not binary_visibles:
        raise ValueError(f"{type(rbm).__name__} has continuous visibles: only over='hidden' can be enumerated")
    n = rbm.n_visible if over == "visible" else rbm.n_hidden
    check_enumerable(n, max_units, f"log_partition_enumerate(over={over!r})")
    model = frozen_copy(rbm)
    device = model.W.device
    with torch.no_grad():
        if over == "visible":
            log_z = logsumexp_over_binary(n, lambda v: -model.free_energy(v), chunk_size, torch.float64, device)
        else:
            log_z = logsumexp_over_binary(n, lambda h: -model.free_energy_hidden(h), chunk_size, torch.float64, device)
    return float(log_z)


def log_partition_bruteforce(
    energy_fn: Callable[[Tensor, Tensor], Tensor],
    n_a: int,
    n_b: int,
    dtype: torch.dtype = torch.float64,
    max_units: int = 22,
) -> float:
    r"""Exact :math:`\log Z = \log \sum_{a, b} e^{-E(a, b)}` over *both* binary layers (tiny models, tests).

    Args:
        energy_fn: ``E(a, b)`` taking ``(2**n_a, 1, n_a)`` and ``(1, 2**n_b, n_b)`` and returning the
            broadcast ``(2**n_a, 2**n_b)`` energies (e.g. ``rbm.energy``).
        n_a, n_b: numbers of units in the two layers.
        dtype: of the configurations.
        max_units: refuse if ``n_a + n_b`` exceeds this (the full table is materialised).

    Returns:
        :math:`\log Z` as a Python float.
    """
    check_enumerable(n_a + n_b, max_units, "log_partition_bruteforce")
    a = enumerate_binary(n_a, dtype).unsqueeze(1)
    b = enumerate_binary(n_b, dtype).unsqueeze(0)
    with torch.no_grad():
        return float(torch.logsumexp((-energy_fn(a, b)).reshape(-1).to(torch.float64), dim=0))


def sample_rbm_exact(
    rbm: RBMBase,
    n_samples: int,
    generator: torch.Generator | None = None,
    max_units: int = 22,
) -> tuple[Tensor, Tensor]:
    r"""Exact independent samples :math:`(v, h) \sim p(v, h)` by enumerating the hidden layer.

    Draw :math:`h` from its marginal :math:`p(h) = e^{-F(h)} / Z` (a categorical over :math:`2^H`
    states, in float64) and then :math:`v \sim p(v \mid h)`. Useful as ground truth, e.g. to start
    reverse AIS or to test samplers.

    Args:
        rbm: any RBM of :mod:`lightning_gm.nn.rbm` (Bernoulli or Gaussian visibles).
        n_samples: number of samples.
        generator: random generator (CPU/same device as the model).
        max_units: refuse if ``n_hidden`` exceeds this (all :math:`2^H` probabilities are kept).

    Returns:
        ``(v, h)`` of shapes ``(n_samples, n_visible)`` and ``(n_samples, n_hidden)`` in the model dtype.
    """
    check_enumerable(rbm.n_hidden, max_units, "sample_rbm_exact")
    model = frozen_copy(rbm)
    device = model.W.device
    with torch.no_grad():
        log_p = torch.cat([-model.free_energy_hidden(h) for h in iter_binary_chunks(rbm.n_hidden, device=device)])
        # Normalise in log space before exponentiating so the largest probability is ~1 (no overflow).
        probs = torch.exp(log_p - torch.logsumexp(log_p, 0))
        codes = torch.multinomial(probs, n_samples, replacement=True, generator=generator)
        shifts = torch.arange(rbm.n_hidden, device=device)
        h = ((codes.unsqueeze(-1) >> shifts) & 1).to(torch.float64)
        v = model.sample_visibles(h, generator=generator)
    dtype = rbm.W.dtype
    return v.to(dtype), h.to(dtype)

