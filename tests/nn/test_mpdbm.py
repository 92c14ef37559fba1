"""The masked mean field of :mod:`lightning_gm.nn.mpdbm` against enumeration on tiny DBMs (with and without
label units): single-unit conditionals, the bound on the exact log-marginal of the observed units, monotone
ascent, exact cases, the loss counting missing units only, inpainting keeping observed pixels, masks."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from lightning_gm.nn.dbm import BinaryDBM, bernoulli_entropy
from lightning_gm.nn.mpdbm import (
    inpaint,
    inpainting_mask,
    joint_energy,
    label_logits,
    layer_conditional,
    masked_mean_field,
    multi_prediction_loss,
    sample_missing,
)
from tests.nn.test_dbm import random_dbm

SIZES = [[5, 3], [4, 3, 2], [3, 2, 2, 2]]
CLASSES = [0, 3]


def labelled(sizes: list[int], n_classes: int, seed: int, scale: float = 1.0, centered: bool = False):
    d = random_dbm(sizes, seed, centered=centered, scale=scale)
    if not n_classes:
        return d, None, None
    g = torch.Generator().manual_seed(seed + 100)
    U = torch.randn(sizes[-1], n_classes, generator=g, dtype=torch.float64) * scale
    c = torch.randn(n_classes, generator=g, dtype=torch.float64)
    return d, U, c


def configurations(sizes: list[int], n_classes: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Every joint configuration of the layers (and the label): one broadcast tensor per layer (+ one-hot label)."""
    per_layer = [torch.tensor(list(itertools.product([0.0, 1.0], repeat=s)), dtype=torch.float64) for s in sizes]
    ranges = [range(len(c)) for c in per_layer] + ([range(n_classes)] if n_classes else [])
    idx = torch.tensor(list(itertools.product(*ranges)))
    states = [per_layer[l][idx[:, l]] for l in range(len(sizes))]
    label = F.one_hot(idx[:, -1], n_classes).double() if n_classes else None
    return states, label


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("n_classes", CLASSES)
@pytest.mark.parametrize("sizes", SIZES)
def test_every_units_update_is_its_exact_conditional(sizes, n_classes, centered) -> None:
    """With every other unit clamped to a binary state, the mean-field update of a unit (and of the label group)
    is its exact conditional, computed from the joint energy of the two (or C) configurations."""
    d, U, c = labelled(sizes, n_classes, seed=3, centered=centered)
    g = torch.Generator().manual_seed(0)
    states = [torch.bernoulli(torch.full((6, s), 0.5, dtype=torch.float64), generator=g) for s in sizes]
    label = F.one_hot(torch.randint(n_classes, (6,), generator=g), n_classes).double() if n_classes else None
    for l, s in enumerate(sizes):
        update = layer_conditional(d, states, l, label, U)
        for j in range(s):
            on, off = [x.clone() for x in states], [x.clone() for x in states]
            on[l][:, j], off[l][:, j] = 1.0, 0.0
            e_on, e_off = joint_energy(d, on, label, U, c), joint_energy(d, off, label, U, c)
            exact = torch.sigmoid(e_off - e_on)  # e^{-E_on} / (e^{-E_on} + e^{-E_off})
            torch.testing.assert_close(update[:, j], exact, rtol=1e-10, atol=1e-12)
    if n_classes:
        energies = torch.stack([joint_energy(d, states, F.one_hot(torch.full((6,), k), n_classes).double(), U, c)
                                for k in range(n_classes)], -1)
        top_offset = d.offset(len(sizes) - 1) if centered else None
        torch.testing.assert_close(torch.softmax(label_logits(states[-1], U, c, top_offset), -1), torch.softmax(-energies, -1))


def _bound(d, U, c, v, missing, out, label_missing) -> torch.Tensor:
    """Mean-field bound -E(mu) + H(q): entropies of the missing visibles, all hidden layers and a missing label."""
    ent = (bernoulli_entropy(out.mus[0] * missing) if missing.any() else 0.0)
    ent = ent + sum(bernoulli_entropy(m) for m in out.mus[1:])
    if U is not None:
        q = out.label
        ent = ent + label_missing * -(q * q.clamp_min(1e-300).log()).sum(-1)
    return -joint_energy(d, out.mus, out.label if U is not None else None, U, c) + ent


def _exact_log_marginal(d, U, c, v, missing, y, label_missing) -> torch.Tensor:
    """log sum over the missing visibles, every hidden layer and a missing label of e^{-E}, per example."""
    states, label = configurations(d.sizes, U.shape[1] if U is not None else 0)
    out = []
    for b in range(v.shape[0]):
        keep = ((states[0] - v[b]).abs() * (1 - missing[b])).sum(-1) == 0  # observed visibles agree
        if U is not None and not label_missing[b]:
            keep = keep & (label.argmax(-1) == y[b])
        sel = [s[keep] for s in states]
        lab = label[keep] if label is not None else None
        out.append(torch.logsumexp(-joint_energy(d, sel, lab, U, c), 0))
    return torch.stack(out)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("n_classes", CLASSES)
@pytest.mark.parametrize("sizes", SIZES)
def test_fixed_point_bounds_the_exact_log_marginal_of_the_observed_units(sizes, n_classes, centered) -> None:
    """At convergence the mean-field equations hold, and -E(mu) + H(q) <= log sum_{missing} e^{-E} (enumerated)."""
    d, U, c = labelled(sizes, n_classes, seed=5, centered=centered)
    g = torch.Generator().manual_seed(1)
    B = 8
    v = torch.bernoulli(torch.full((B, sizes[0]), 0.5, dtype=torch.float64), generator=g)
    missing = torch.bernoulli(torch.full((B, sizes[0]), 0.5, dtype=torch.float64), generator=g)
    y = torch.randint(max(n_classes, 1), (B,), generator=g)
    label_missing = torch.bernoulli(torch.full((B,), 0.5, dtype=torch.float64), generator=g)
    with torch.no_grad():
        out = masked_mean_field(d, v, missing, steps=500, label_weights=U, label_bias=c, y=y,
                                label_missing=label_missing, tol=1e-12)
    assert out.steps < 500  # converged
    lab = out.label if U is not None else None
    for l in range(1, len(sizes)):  # hidden layers satisfy their fixed-point equations
        torch.testing.assert_close(out.mus[l], layer_conditional(d, out.mus, l, lab, U), rtol=0, atol=1e-9)
    pred = torch.sigmoid(out.visible_logits)
    torch.testing.assert_close(out.mus[0], missing * pred + (1 - missing) * v, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.mus[0] * (1 - missing), v * (1 - missing), rtol=0, atol=0)
    if U is not None:
        q = torch.softmax(out.label_logits, -1)
        top = out.mus[-1] - d.offset(len(sizes) - 1) if centered else out.mus[-1]
        torch.testing.assert_close(out.label_logits, c + top @ U)
        lm = label_missing[:, None]
        torch.testing.assert_close(out.label, lm * q + (1 - lm) * F.one_hot(y, n_classes).double(), rtol=0, atol=1e-9)
    bound = _bound(d, U, c, v, missing, out, label_missing)
    exact = _exact_log_marginal(d, U, c, v, missing, y, label_missing)
    assert torch.all(bound <= exact + 1e-9)
    assert float((exact - bound).max()) < 3.0  # a useful bound, not a vacuous one


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("n_classes", CLASSES)
@pytest.mark.parametrize("sizes", SIZES)
def test_each_round_raises_the_bound(sizes, n_classes, centered) -> None:
    """Odd-then-even updates are block coordinate ascent: the bound never falls from one round to the next."""
    d, U, c = labelled(sizes, n_classes, seed=7, scale=2.0, centered=centered)
    g = torch.Generator().manual_seed(2)
    B = 16
    v = torch.bernoulli(torch.full((B, sizes[0]), 0.5, dtype=torch.float64), generator=g)
    missing = torch.bernoulli(torch.full((B, sizes[0]), 0.5, dtype=torch.float64), generator=g)
    lm = torch.ones(B, dtype=torch.float64)
    with torch.no_grad():
        bounds = [_bound(d, U, c, v, missing, masked_mean_field(d, v, missing, k, U, c, None, None), lm)
                  for k in range(1, 12)]
    diffs = torch.stack(bounds).diff(dim=0)
    assert float(diffs.min()) >= -1e-10


def test_mean_field_is_exact_where_the_posterior_factorises() -> None:
    """Zero weights: the inpainted pixels are sigma(b_0) and the label is softmax(c), the exact conditionals;
    one hidden layer with every pixel observed: the hidden means are the exact posterior p(h_j = 1 | v)."""
    d, U, c = labelled([6, 4, 3], 3, seed=11)
    with torch.no_grad():
        for w in d.weights:
            w.zero_()
        U = torch.zeros_like(U)
    v = torch.bernoulli(torch.full((5, 6), 0.5, dtype=torch.float64))
    missing = torch.bernoulli(torch.full((5, 6), 0.5, dtype=torch.float64))
    out = masked_mean_field(d, v, missing, 3, U, c)
    torch.testing.assert_close(torch.sigmoid(out.visible_logits), torch.sigmoid(d.biases[0]).expand(5, -1))
    torch.testing.assert_close(out.label, torch.softmax(c, -1).expand(5, -1))
    rbm = random_dbm([5, 4], seed=12)
    v = torch.bernoulli(torch.full((7, 5), 0.5, dtype=torch.float64))
    out = masked_mean_field(rbm, v, torch.zeros_like(v), steps=1)
    states, _ = configurations([4], 0)
    logp = torch.stack([-rbm.energy([row.expand(16, -1), states[0]]) for row in v])  # (7, 16) over h
    post = (torch.softmax(logp, -1).unsqueeze(-1) * states[0]).sum(1)
    torch.testing.assert_close(out.mus[1], post)


@pytest.mark.parametrize("multi_inference", [False, True])
@pytest.mark.parametrize("n_classes", CLASSES)
def test_loss_depends_on_the_missing_units_only(n_classes, multi_inference) -> None:
    """d loss / d prediction is zero on every observed unit (pixels and label) and non-zero on missing ones."""
    d, U, c = labelled([6, 4, 3], n_classes, seed=13)
    d.requires_grad_(True)
    g = torch.Generator().manual_seed(4)
    v = torch.bernoulli(torch.full((9, 6), 0.5, dtype=torch.float64), generator=g)
    missing = torch.bernoulli(torch.full((9, 6), 0.5, dtype=torch.float64), generator=g)
    y = torch.randint(max(n_classes, 1), (9,), generator=g)
    label_missing = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 1], dtype=torch.float64)
    out = masked_mean_field(d, v, missing, 4, U, c, y if U is not None else None,
                            label_missing if U is not None else None, multi_inference=multi_inference)
    loss, vis, lab = multi_prediction_loss(out.visible_logits, v, missing, out.label_logits,
                                           y if U is not None else None, label_missing)
    targets = [out.visible_logits] + ([out.label_logits] if U is not None else [])
    grads = torch.autograd.grad(loss.sum(), targets, retain_graph=True)
    assert torch.all(grads[0][missing == 0] == 0) and torch.all(grads[0][missing == 1] != 0)
    if U is not None:
        assert torch.all(grads[1][label_missing == 0] == 0) and torch.all(grads[1][label_missing == 1].abs().sum(-1) > 0)
        torch.testing.assert_close(loss, vis + lab)
    # and the parameters do get a gradient through the unrolled rounds
    assert all(p.grad is None for p in d.parameters())
    loss.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.weights)


@pytest.mark.parametrize("sizes", SIZES)
def test_inpainting_keeps_the_observed_pixels(sizes) -> None:
    d = random_dbm(sizes, seed=17)
    v = torch.bernoulli(torch.full((10, sizes[0]), 0.5, dtype=torch.float64))
    missing = torch.bernoulli(torch.full((10, sizes[0]), 0.5, dtype=torch.float64))
    out = inpaint(d, v, missing, steps=5)
    assert torch.equal(out[missing == 0], v[missing == 0])
    assert torch.all((out[missing == 1] > 0) & (out[missing == 1] < 1))
    assert torch.equal(inpaint(d, v, torch.zeros_like(v)), v)


def test_masks() -> None:
    bottom = inpainting_mask("bottom", 3, (1, 28, 28)).reshape(3, 28, 28)
    assert torch.all(bottom[:, 14:] == 1) and torch.all(bottom[:, :14] == 0)
    left = inpainting_mask("left", 1, (784,)).reshape(28, 28)
    assert torch.all(left[:, :14] == 1) and torch.all(left[:, 14:] == 0)
    a = inpainting_mask("random50", 200, (784,), torch.Generator().manual_seed(0))
    b = inpainting_mask("random50", 200, (784,), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and abs(float(a.mean()) - 0.5) < 0.01
    assert not torch.equal(a[0], a[1])  # a different mask per example
    assert abs(float(inpainting_mask("random25", 200, (784,)).mean()) - 0.25) < 0.01
    shared = sample_missing((5, 100), 0.3, per_example=False)
    assert torch.equal(shared, shared[:1].expand(5, -1))
    for kind, shape in (("middle", (784,)), ("bottom", (10,)), ("random", (784,))):
        with pytest.raises(ValueError, match="mask kind"):
            inpainting_mask(kind, 1, shape)


def test_float32_agrees_with_float64() -> None:
    d64, U, c = labelled([6, 5, 4], 3, seed=19)
    d32 = BinaryDBM(d64.sizes)
    d32.load_state_dict({k: t.float() for k, t in d64.state_dict().items()})
    v = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))
    missing = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))
    a = masked_mean_field(d64, v, missing, 6, U, c)
    b = masked_mean_field(d32, v.float(), missing.float(), 6, U.float(), c.float())
    torch.testing.assert_close(b.visible_logits.double(), a.visible_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.label.double(), a.label, rtol=1e-4, atol=1e-5)
