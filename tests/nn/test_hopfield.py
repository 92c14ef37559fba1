"""Hopfield network maths: Hebbian weights, the energy never rises under asynchronous updates, stored patterns
below capacity are fixed points, synchronous updates can 2-cycle where asynchronous ones converge."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.nn.hopfield import HopfieldNetwork, corrupt, hebbian_weights, overlap, to_spins


def _spins(p: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(p, n, generator=g) < 0.5, -1.0, 1.0)


def test_hebbian_weights_are_the_outer_product_sum() -> None:
    xi = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, -2.0, 0.0]]) / 3
    assert torch.allclose(hebbian_weights(xi), expected)
    net = HopfieldNetwork(3)
    net.store(xi)
    assert torch.allclose(net.W, expected) and torch.equal(net.W, net.W.T)
    # E(s) = -1/2 s'Ws by hand for s = (1, 1, 1): -1/2 * 2 * (-2/3) = 2/3
    assert net.energy(torch.ones(1, 3)).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("n,p,seed", [(30, 4, 0), (30, 12, 1), (64, 20, 2), (16, 40, 3)])
def test_energy_never_rises_under_async_updates(n: int, p: int, seed: int) -> None:
    """After every single-unit update, for loads below and far above capacity (spin-glass regime)."""
    net = HopfieldNetwork(n, dtype=torch.float64)
    net.store(_spins(p, n, seed).double())
    s = _spins(8, n, seed + 100).double()
    g = torch.Generator().manual_seed(seed)
    trace = [net.energy(s)]
    for _ in range(5):
        s = net.async_sweep(s, g, energy_trace=trace)
    e = torch.stack(trace)
    assert bool((e[1:] <= e[:-1] + 1e-12).all())
    assert bool((e[-1] < e[0]).all())  # from random states the energy does fall


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stored_patterns_below_capacity_are_fixed_points(mode: str, seed: int) -> None:
    """N = 200, P = 5 (alpha = 0.025): each pattern's crosstalk has std sqrt(P/N) = 0.16 against a signal of 1,
    so every pattern is a fixed point, and cues with 10% flipped bits return to it."""
    n, p = 200, 5
    xi = _spins(p, n, seed)
    net = HopfieldNetwork(n)
    net.store(xi)
    assert torch.equal(net.sync_step(xi), xi)
    run = net.run(xi, mode, max_sweeps=3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run.state, xi) and run.sweeps == 1 and bool(run.converged.all())
    cues = corrupt(xi, 0.1, torch.Generator().manual_seed(seed))
    back = net.run(cues, mode, max_sweeps=20, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(back.state, xi)
    assert torch.allclose(overlap(back.state, xi), torch.ones(p))
    assert bool((back.energies[-1] < back.energies[0]).all())


def test_sync_two_cycle_where_async_converges() -> None:
    """Two units storing (1, 1): W = [[0, 1/2], [1/2, 0]]. From (1, -1) synchronous updates swap the two units
    forever, (1, -1) -> (-1, 1) -> (1, -1); asynchronous updates reach the fixed point (1, 1) or (-1, -1)."""
    net = HopfieldNetwork(2)
    net.store(torch.tensor([[1.0, 1.0]]))
    s0 = torch.tensor([[1.0, -1.0]])
    s1 = net.sync_step(s0)
    assert torch.equal(s1, torch.tensor([[-1.0, 1.0]])) and torch.equal(net.sync_step(s1), s0)
    sync = net.run(s0, "sync", max_sweeps=10)
    assert not bool(sync.converged.any()) and sync.sweeps == 10
    for order in ([0, 1], [1, 0]):
        s = net.async_sweep(s0, order=torch.tensor(order))
        assert s[0, 0] == s[0, 1] and torch.equal(net.async_sweep(s), s)
    run = net.run(s0, "async", max_sweeps=10, generator=torch.Generator().manual_seed(0))
    assert bool(run.converged.all()) and run.sweeps <= 2


def test_sync_cycles_on_random_nets_async_never_does() -> None:
    """Over many random starts of an overloaded net (alpha = 1), some synchronous runs end in 2-cycles, and every
    asynchronous run converges to a fixed point."""
    n = 40
    net = HopfieldNetwork(n, dtype=torch.float64)
    net.store(_spins(n, n, 7).double())
    s = _spins(200, n, 8).double()
    sync = net.run(s, "sync", max_sweeps=60)
    state, nxt = sync.state, net.sync_step(sync.state)
    cycling = ~(nxt == state).all(-1)
    assert bool(cycling.any())
    assert torch.equal(net.sync_step(nxt)[cycling], state[cycling])  # period 2
    asy = net.run(s, "async", max_sweeps=60, generator=torch.Generator().manual_seed(0))
    assert bool(asy.converged.all())


def test_helpers_and_errors() -> None:
    assert torch.equal(to_spins(torch.tensor([[0.0, 0.49, 0.5, 1.0]])), torch.tensor([[-1.0, -1.0, 1.0, 1.0]]))
    flipped = corrupt(torch.ones(1, 10000), 0.2, torch.Generator().manual_seed(0))
    assert abs(float((flipped < 0).float().mean()) - 0.2) < 0.02
    with pytest.raises(ValueError, match="flip_prob"):
        corrupt(torch.ones(1, 3), 1.5)
    with pytest.raises(ValueError, match="spins"):
        HopfieldNetwork(3).store(torch.tensor([[0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="mode"):
        HopfieldNetwork(3).run(torch.ones(1, 3), "parallel")  # type: ignore[arg-type]
