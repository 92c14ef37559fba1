r"""Importance-weighted evaluation that is a function of (seed, example index) only, batched across examples
(plain torch; ``torch.distributed`` if initialised).

The random numbers of example :math:`i` come from its own generators, one per *sample block* of
``sample_block`` consecutive importance samples: block :math:`j` of example :math:`i` draws from a generator
seeded by :func:`sample_seed` ``(seed, i, j)`` (a model draws through a :class:`SeededNoise`:
``noise.normal(n, dim, like)``, ``noise.uniform(n, dim, like)``, each ``(n, B, dim)``, in the order of its requests).

The unit of computation is fixed by the protocol: one pass of ``log_weights`` evaluates one *block* of ``block``
consecutive examples (of the evaluated list) with one sample block, ``block * sample_block`` rows, and the
per-pass results are folded in sample-block order. Blocks are dealt to processes, and any number of blocks may
be fetched at once, so the number of processes and the batch size change no number: 1 and 2 DDP processes give
the same results, bit for bit. (The pass shape itself must be fixed: torch's CPU kernels round differently for
different shapes — a linear layer of fewer than 16 rows, the vectorised tail of an element-wise op — so choosing
the pass by free memory would change the last bits. Memory is bounded by ``block * sample_block`` rows: lower
``sample_block`` for models whose rows are large.)

.. math::

    \hat{\mathcal L}_k(x_i) = \log \frac1k \sum_{j=1}^k w_{ij}, \qquad
    \widehat{\mathrm{ELBO}}(x_i) = \frac1k \sum_{j=1}^k \log w_{ij}, \qquad
    w_{ij} = \frac{p(x_i, z_{ij})}{q(z_{ij} \mid x_i)} ,

accumulated in float64 as a running ``logsumexp`` over the passes.

Active units (Burda et al. 2016, section 5.2): unit :math:`u` is active when
:math:`A_u = \operatorname{Cov}_x\left(\mathbb E_{q(z|x)}[z_u]\right) > 10^{-2}`.

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_gm.estimators.importance import IWEstimate
from lightning_gm.groups import ParameterGroup

__all__ = ["IWEvaluation", "example_seed", "sample_seed", "example_generator", "SeededNoise",
           "seeded_importance_weighted",
           "shard_indices", "shard_blocks", "gather_by_index", "active_units", "evenly_spaced", "SeededLogWeightFn",
           "MEANS_STREAM"]

#: ``log_weights(x, n, noise)``: ``(n, B)`` log weights, the noise of example ``b`` from ``noise``
SeededLogWeightFn = Callable[[Tensor, int, "SeededNoise"], Tensor]
#: the sample-block index of the stream used for posterior means (active units), apart from the k samples
MEANS_STREAM = -1

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class IWEvaluation(ParameterGroup):
    """How a latent-variable model's likelihood is evaluated by importance sampling (a parameter group).

    Args:
        val_k: importance samples per example for ``val/nll`` at every validation (0 = skip; global random stream).
        test_k: importance samples per test example for ``test/nll`` (5000 in Burda et al.).
        seed: evaluation seed: the test numbers are a function of ``(seed, example index)`` only.
        subset: evaluate this many evenly spaced test examples (e.g. 1000 of 10,000: every 10th), named in the
            estimator label; ``null``: every example the test loop covers.
        block: examples per pass (and the unit dealt to processes): part of the protocol.
        sample_block: samples per pass, each example's drawn from one generator: part of the protocol. A pass is
            ``block * sample_block`` rows (memory); the defaults, 10 x 500, are what a plain loop would use.
    """

    key: ClassVar[str] = "model.init_args.evaluation"
    val_k: int = 0
    test_k: int = 5000
    seed: int = 0
    subset: Optional[int] = None
    block: int = 10
    sample_block: int = 500

    @property
    def rows(self) -> int:
        """(example, sample) rows of one pass."""
        return self.block * min(self.sample_block, self.test_k)

    def __post_init__(self) -> None:
        for key, value, low in (("val_k", self.val_k, 0), ("test_k", self.test_k, 1), ("block", self.block, 1),
                                ("sample_block", self.sample_block, 1)):
            if value < low:
                raise ValueError(f"model.init_args.evaluation.{key} must be >= {low}, got {value}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"model.init_args.evaluation.subset must be >= 1 (or null for all), got {self.subset}")

    def label(self, evaluated: int, total: int, first: Optional[int] = None) -> str:
        """The estimator's name, with what was evaluated when it is not the whole test set: ``iwae-5000``,
        ``iwae-5000 (1,000 of 10,000, evenly spaced)``, ``iwae-5000 (first 1,000 of 10,000)``."""
        name = f"iwae-{self.test_k}"
        covered = total if first is None else first
        if evaluated >= total:
            return name
        if evaluated == covered:
            return f"{name} (first {evaluated:,} of {total:,})"
        where = "evenly spaced" if covered == total else f"evenly spaced in the first {covered:,}"
        return f"{name} ({evaluated:,} of {total:,}, {where})"


def evenly_spaced(n: int, m: Optional[int]) -> Tensor:
    """``m`` evenly spaced indices of ``range(n)`` (``floor(i n / m)``, starting at 0), or all of them."""
    if m is None or m >= n:
        return torch.arange(n)
    return torch.div(torch.arange(m) * n, m, rounding_mode="floor")


def _mix(a: int, b: int) -> int:
    """A 63-bit seed from two integers (splitmix64 of a combination): distinct pairs give unrelated seeds."""
    z = (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def example_seed(seed: int, index: int) -> int:
    """The seed of example ``index`` under the evaluation seed ``seed`` (distinct for distinct pairs)."""
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


def sample_seed(seed: int, index: int, block: int) -> int:
    """The seed of sample block ``block`` of example ``index`` (``block = MEANS_STREAM``: its posterior means)."""
    return _mix(example_seed(seed, index), int(block) + 2)


def example_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for example ``index`` (one stream per example, e.g. for per-example AIS)."""
    return torch.Generator(device=device).manual_seed(example_seed(seed, index))


class SeededNoise:
    """Random numbers for a batch of examples and a range of whole sample blocks, example ``b``'s from its own
    generators (one per sample block, :func:`sample_seed`).

    Args:
        seed: evaluation seed.
        indices: example indices of the batch (``B``).
        first: first sample of the range (a multiple of ``sample_block``).
        n: number of samples in the range (whole blocks, but for the last block of ``k``).
        sample_block: samples per generator (part of the protocol: it fixes which numbers are drawn).
        device: device of the generators and the draws.
        block: a fixed block index instead of ``first // sample_block`` (``MEANS_STREAM`` for posterior means).
    """

    def __init__(self, seed: int, indices: Sequence[int], first: int, n: int, sample_block: int,
                 device: torch.device | str = "cpu", block: Optional[int] = None) -> None:
        if sample_block < 1:
            raise ValueError(f"sample_block must be >= 1, got {sample_block}")
        if block is None and first % sample_block:
            raise ValueError(f"a noise range must start at a whole sample block: {first} is not a multiple of "
                             f"{sample_block}")
        self.indices, self.n, self.device = [int(i) for i in indices], int(n), torch.device(device)
        if block is None:
            starts = list(range(first, first + n, sample_block))
            self.sizes = [min(sample_block, first + n - s) for s in starts]
            blocks = [s // sample_block for s in starts]
        else:
            self.sizes, blocks = [int(n)], [int(block)]
        self.generators = [[torch.Generator(device=self.device).manual_seed(sample_seed(seed, i, j)) for j in blocks]
                           for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def _draw(self, kind: str, n: int, dim: int, like: Tensor) -> Tensor:
        if n != self.n:
            raise ValueError(f"this noise covers {self.n} samples per example, {n} were asked")
        out = torch.empty(len(self.indices), n, dim, dtype=like.dtype, device=self.device)
        fill = torch.randn if kind == "normal" else torch.rand
        for b, gens in enumerate(self.generators):
            start = 0
            for g, size in zip(gens, self.sizes):
                fill(size, dim, generator=g, dtype=like.dtype, device=self.device, out=out[b, start : start + size])
                start += size
        return out.transpose(0, 1).to(like.device)  # (n, B, dim)

    def normal(self, n: int, dim: int, like: Tensor) -> Tensor:
        """``(n, B, dim)`` standard normal draws in ``like``'s dtype and device."""
        return self._draw("normal", n, dim, like)

    def uniform(self, n: int, dim: int, like: Tensor) -> Tensor:
        """``(n, B, dim)`` uniform draws on ``[0, 1)``."""
        return self._draw("uniform", n, dim, like)


@torch.no_grad()
def seeded_importance_weighted(
    log_weights: SeededLogWeightFn,
    x: Tensor,
    indices: Sequence[int],
    k: int,
    seed: int = 0,
    block: int = 10,
    sample_block: int = 500,
    progress: Optional[Callable[[int, int], None]] = None,
) -> IWEstimate:
    """The ``k``-sample bound and the ELBO of every example of ``x`` (``(B, ...)``), computed block by block:
    examples ``[0, block)``, ``[block, 2 block)``, ... of ``x`` (so ``x`` must start at a block boundary of the
    evaluated list), each with one pass per sample block; a function of the seed, the indices and the protocol.

    Args:
        log_weights: ``(x, n, noise) -> (n, b)`` log weights, the noise drawn from ``noise`` (a :class:`SeededNoise`).
        x: the examples.
        indices: their indices in the dataset (the unit of seeding).
        k: importance samples per example.
        seed: evaluation seed.
        block: examples per pass (protocol).
        sample_block: samples per pass, one generator per example and block (protocol).
        progress: ``progress(samples done, samples total)`` after every pass (the interruption point).

    Returns:
        :class:`IWEstimate`, each ``(B,)``, float64.
    """
    if k < 1:
        raise ValueError(f"the number of importance samples k must be >= 1, got {k}")
    if len(indices) != x.shape[0]:
        raise ValueError(f"{len(indices)} indices for {x.shape[0]} examples")
    indices = [int(i) for i in indices]
    lse = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    done, work = 0, x.shape[0] * k
    for lo in range(0, x.shape[0], block):
        hi = min(lo + block, x.shape[0])
        for first in range(0, k, sample_block):
            n = min(sample_block, k - first)
            noise = SeededNoise(seed, indices[lo:hi], first, n, sample_block, x.device)
            lw = log_weights(x[lo:hi], n, noise).double()  # (n, b)
            lse[lo:hi] = torch.logaddexp(lse[lo:hi], torch.logsumexp(lw, dim=0))
            total[lo:hi] += lw.sum(0)
            done += n * (hi - lo)
            if progress is not None:
                progress(done, work)
    return IWEstimate(log_prob=lse - math.log(k), elbo=total / k)


def shard_indices(n: int, rank: int, world_size: int) -> Tensor:
    """Indices ``rank, rank + world_size, ...`` of ``n`` examples: every example in exactly one shard."""
    return torch.arange(rank, n, world_size)


def shard_blocks(indices: Union[Sequence[int], Tensor], block: int, rank: int, world_size: int) -> Tensor:
    """The entries of ``indices`` in blocks ``rank, rank + world_size, ...`` of ``block`` consecutive entries:
    contiguous runs per process (batches that share memory well), every entry in exactly one shard."""
    idx = torch.as_tensor(indices, dtype=torch.long)
    blocks = idx.split(max(1, int(block)))
    mine = [b for j, b in enumerate(blocks) if j % world_size == rank]
    return torch.cat(mine) if mine else idx[:0]


def gather_by_index(values: Tensor, indices: Tensor, n: int, positions: Optional[Tensor] = None) -> Tensor:
    """Assemble per-example ``values`` (``(m, ...)``, examples ``indices``) from every process into ``(n, ...)``.

    ``positions`` (default ``indices``) are the rows of the result the local values go to (e.g. the positions of
    the examples in a subset). Without an initialised process group this just scatters the local values.
    """
    where = indices if positions is None else positions
    out = values.new_zeros((n, *values.shape[1:]))
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        out[where.to(values.device)] = values
        return out
    world = dist.get_world_size()
    m = torch.tensor([len(values)], device=values.device)
    sizes = [torch.zeros_like(m) for _ in range(world)]
    dist.all_gather(sizes, m)
    top = int(max(int(s) for s in sizes))
    pad_v = values.new_zeros((top, *values.shape[1:]))
    pad_i = torch.full((top,), -1, dtype=torch.long, device=values.device)
    pad_v[: len(values)] = values
    pad_i[: len(where)] = where.to(values.device)
    all_v = [torch.empty_like(pad_v) for _ in range(world)]
    all_i = [torch.empty_like(pad_i) for _ in range(world)]
    dist.all_gather(all_v, pad_v)
    dist.all_gather(all_i, pad_i)
    for v, i in zip(all_v, all_i):
        keep = i >= 0
        out[i[keep]] = v[keep]
    return out


def active_units(means: Tensor, threshold: float = 1e-2) -> tuple[int, Tensor]:
    r"""Number of active units and the activities :math:`A_u = \operatorname{Cov}_x(\mathbb E_q[z_u])` of
    posterior means ``(N, L)`` (population covariance over the ``N`` examples)."""
    m = means.double()
    activity = m.var(dim=0, unbiased=False)
    return int((activity > threshold).sum()), activity
