"""DataModules: binarisation modes, dequantisation, splits and shapes (8x8 digits offline; real MNIST)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.data import BinarizedMNISTDataModule, DigitsDataModule, MNISTDataModule, Toy2DDataModule
from lightning_gm.data.toy import sample_toy, toy_log_prob
from lightning_gm.errors import ConfigError
from tests.conftest import needs_mnist


def _epoch(dm, split="train"):
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    return torch.cat([x for x, _ in loader])



def _sorted_train(dm):
    xs, ys = [], []
    loader = torch.utils.data.DataLoader(
        dm.train_dataloader().dataset, batch_size=64, shuffle=False, collate_fn=lambda b: b
    )
    for x, y in loader:
        xs.append(x)
    return torch.cat(xs)


def test_binarize_none_keeps_grey_levels():
    dm = DigitsDataModule(binarize="none")
    dm.setup()
    x = _sorted_train(dm)
    levels = x * 16
    assert torch.allclose(levels, levels.round(), atol=1e-5) and 0 < x.mean() < 1
    assert len(torch.unique(x)) == 17


def test_binarize_threshold_is_a_cut():
    grey = DigitsDataModule(binarize="none")
    cut = DigitsDataModule(binarize="threshold", threshold=0.4)
    grey.setup(), cut.setup()
    assert torch.equal(_sorted_train(cut), (_sorted_train(grey) > 0.4).float())


def test_binarize_static_is_fixed_and_unbiased():
    grey = DigitsDataModule(binarize="none")
    a, b = DigitsDataModule(binarize="static"), DigitsDataModule(binarize="static")
    for dm in (grey, a, b):
        dm.setup()
    xa, xb, g = _sorted_train(a), _sorted_train(a), _sorted_train(grey)
    assert torch.equal(xa, xb) and torch.equal(xa, _sorted_train(b))  # one seeded sample, reproducible
    assert set(torch.unique(xa).tolist()) == {0.0, 1.0}
    # E[bernoulli(p)] = p: compare sums over ~76,000 pixels within 5 standard deviations
    p = g.flatten()
    assert abs(xa.sum() - p.sum()) < 5 * math.sqrt((p * (1 - p)).sum())
    # pixels with p = 0 or 1 are never flipped
    assert torch.equal(xa.flatten()[p == 0], p[p == 0]) and torch.equal(xa.flatten()[p == 1], p[p == 1])


def test_binarize_dynamic_resamples_train_but_fixes_eval():
    grey = DigitsDataModule(binarize="none")
    dyn = DigitsDataModule(binarize="dynamic")
    grey.setup(), dyn.setup()
    first, second = _sorted_train(dyn), _sorted_train(dyn)
    assert set(torch.unique(first).tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)  # fresh Bernoulli sample each pass
    p = _sorted_train(grey).flatten()
    mean_two = (first + second).flatten() / 2
    assert abs(mean_two.sum() - p.sum()) < 5 * math.sqrt((p * (1 - p)).sum() / 2)
    assert torch.equal(_epoch(dyn, "val"), _epoch(dyn, "val"))  # evaluation data fixed
    assert set(torch.unique(_epoch(dyn, "test")).tolist()) == {0.0, 1.0}


def test_dequantize_stays_in_its_bin():
    grey = DigitsDataModule(binarize="none")
    deq = DigitsDataModule(dequantize=True)
    grey.setup(), deq.setup()
    x, levels = _sorted_train(deq), _sorted_train(grey) * 16
    assert torch.equal(torch.floor(x * 17), levels.round())  # (k + u) / 17 with u in [0, 1)
    assert not torch.equal(x, _sorted_train(deq))  # fresh noise every pass
    assert deq.bpd_offset == pytest.approx(64 * math.log(17))
    assert grey.bpd_offset is None and DigitsDataModule(binarize="static").bpd_offset == 0.0


def test_splits_are_seeded_and_disjoint():
    a, b, c = DigitsDataModule(seed=3), DigitsDataModule(seed=3), DigitsDataModule(seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert [len(a.splits[s][0]) for s in ("train", "val", "test")] == [1197, 300, 300]
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])


def test_image_shape_and_bad_options():
    dm = DigitsDataModule(flatten=False)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 1, 8, 8) and y.dtype == torch.long and dm.shape == (1, 8, 8) and dm.dims == 64
    with pytest.raises(ConfigError, match="data.binarize must be one of"):
        DigitsDataModule(binarize="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="exclude each other"):
        DigitsDataModule(binarize="dynamic", dequantize=True)
    with pytest.raises(ConfigError, match="data.density: unknown toy density 'spiral'"):
        Toy2DDataModule(density="spiral")


def test_toy_density_and_module():
    dm = Toy2DDataModule(density="checkerboard", n_train=1000, n_val=100, n_test=100)
    dm.setup()
    assert dm.splits["train"][0].shape == (1000, 2) and dm.bpd_offset is None
    assert torch.isfinite(toy_log_prob("checkerboard", dm.splits["train"][0])).all()
    # the eight-Gaussian density integrates to 1 on a grid
    g = torch.linspace(-6, 6, 601)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = toy_log_prob("eight_gaussians", torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert float(p.sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=1e-3)
    assert not torch.equal(sample_toy("rings", 10, 0), sample_toy("rings", 10, 1))


@needs_mnist
def test_mnist_real_files():
    dm = MNISTDataModule(binarize="dynamic", eval_batch_size=1000)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s][0]) for s in ("train", "val", "test")] == [50000, 10000, 10000]
    # the held-out labels and the test labels come from the files: all ten digits, roughly balanced
    counts = torch.bincount(dm.splits["test"][1], minlength=10)
    assert counts.sum() == 10000 and counts.min() > 850
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 784) and set(torch.unique(x).tolist()) == {0.0, 1.0}
    # mean grey level of MNIST is 0.1307; the binarised test mean must match it closely
    assert float(dm.splits["test"][0].mean()) == pytest.approx(0.1325, abs=0.003)


@needs_mnist
def test_binarized_mnist_real_files():
    dm = BinarizedMNISTDataModule(flatten=False)
    dm.prepare_data()
    dm.setup()
    assert [tuple(dm.splits[s][0].shape) for s in ("train", "val", "test")] == [
        (50000, 1, 28, 28), (10000, 1, 28, 28), (10000, 1, 28, 28)
    ]
    assert set(torch.unique(dm.splits["test"][0]).tolist()) == {0.0, 1.0}
