"""SampleQuality at test end: a model that replays the test images scores fd 0, precision 1, recall 1; a
blank sampler has recall 0 and a positive distance; flat or image-shaped samples; the numbers reach
summary.json and the ``compare`` leaderboard; a missing classifier or non-image samples are clear errors.
No trained classifier is needed: a random LeNet saved in tmp is a valid (if dull) feature network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from lightning_gm.callbacks import SampleQuality
from lightning_gm.dashboard.collect import read_run
from lightning_gm.data.modules import GenerativeDataModule
from lightning_gm.errors import ConfigError
from lightning_gm.models.base import GenerativeModel
from lightning_gm.nn.classifier import LeNet, save_feature_network

N_TEST = 240


def _images(n: int, seed: int) -> Tensor:
    """Binary 28x28 'digits': a random bar pattern per image (distinct, never blank)."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(n, 1, 28, 1, generator=g) < 0.3) | (torch.rand(n, 1, 1, 28, generator=g) < 0.3)
    return base.float().reshape(n, 784)


class TinyImages(GenerativeDataModule):
    """240 binary 28x28 test images (and as many for train/val)."""

    name = "tiny-images"

    def __init__(self, batch_size: int = 50) -> None:
        super().__init__(batch_size=batch_size)

    @property
    def shape(self) -> tuple[int, ...]:
        return (784,)

    @property
    def bpd_offset(self) -> float:
        return 0.0

    def _load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        y = torch.zeros(N_TEST, dtype=torch.long)
        return {"train": (_images(N_TEST, 1), y), "val": (_images(N_TEST, 2), y), "test": (_images(N_TEST, 3), y)}


class Replay(GenerativeModel):
    """'Samples' the test images in order (``mode=replay``; ``tanh``: in [-1, 1]), blank images (``blank``) or
    8x8 images (``wrong``),
    flat or as ``(1, 28, 28)``."""

    def __init__(self, data_shape: Any = (784,), mode: str = "replay", image_shaped: bool = False) -> None:
        super().__init__(data_shape)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.mode, self.image_shaped = mode, image_shaped
        self.images = _images(N_TEST, 3)
        self.drawn = 0

    @property
    def estimator(self) -> str:
        return "exact"

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        return {"loss": (self.w**2).sum() + 0 * x.sum()}

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0])

    def sample(self, n: int) -> Tensor:
        if self.mode == "wrong":
            return torch.zeros(n, 64)
        x = self.images[self.drawn : self.drawn + n] if self.mode in ("replay", "tanh") else torch.zeros(n, 784)
        x = 2 * x - 1 if self.mode == "tanh" else x
        self.drawn += n
        return x.view(n, 1, 28, 28) if self.image_shaped else x


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_feature_network(LeNet((4, 8), 16), tmp_path_factory.mktemp("clf") / "lenet.pt")


def _test(model: GenerativeModel, cb: SampleQuality, tmp_path: Path) -> dict[str, float]:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[cb])
    trainer.test(model, datamodule=TinyImages(), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("image_shaped,binarize", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("num_samples,batch_size", [(240, 64), (100, 33)])
def test_replayed_test_images_score_perfectly(classifier, tmp_path, image_shaped, binarize, num_samples,
                                              batch_size) -> None:
    """Binary samples equal to the test images (a Bernoulli draw of a binary image is itself)."""
    cb = SampleQuality(classifier_path=str(classifier), num_samples=num_samples, batch_size=batch_size, k=3,
                       binarize_samples=binarize)
    m = _test(Replay(image_shaped=image_shaped), cb, tmp_path)
    assert abs(m["test/fd_lenet"]) < 1e-3
    assert m["test/precision"] == 1.0 and m["test/recall"] == 1.0
    assert "test/nll" in m  # logged next to the NLL


def test_blank_samples_have_zero_recall_and_a_positive_distance(classifier, tmp_path) -> None:
    cb = SampleQuality(classifier_path=str(classifier), num_samples=200, batch_size=64)
    m = _test(Replay(mode="blank"), cb, tmp_path)
    assert m["test/recall"] == 0.0  # all samples identical: every radius is 0 and no real image is blank
    assert m["test/fd_lenet"] > 1e-2


def test_samples_outside_unit_interval_warn_and_are_clipped(classifier, tmp_path) -> None:
    """2x-1 of a binary image, clipped to [0, 1], is the image again: a warning, and perfect scores."""
    cb = SampleQuality(classifier_path=str(classifier), num_samples=100, batch_size=50)
    with pytest.warns(UserWarning, match=r"returned values in \[-1, 1\]; they are clipped"):
        m = _test(Replay(mode="tanh"), cb, tmp_path)
    assert abs(m["test/fd_lenet"]) < 1e-3 and m["test/precision"] == m["test/recall"] == 1.0


def test_missing_classifier_names_the_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LIGHTNING_GM_DATA", str(tmp_path / "root"))
    with pytest.raises(ConfigError) as info:
        _test(Replay(), SampleQuality(num_samples=100), tmp_path)
    msg = str(info.value)
    assert f"{tmp_path}/root/classifiers/lenet_mnist.pt" in msg
    assert "lightning_gm fit --config conf/classifier_mnist.yaml" in msg


def test_missing_classifier_with_skip_warns_and_the_summary_says_why(tmp_path, monkeypatch, run_cli) -> None:
    monkeypatch.setenv("LIGHTNING_GM_DATA", str(tmp_path / "root"))
    cfg = tmp_path / "skip.yaml"
    cfg.write_text(
        "trainer:\n  max_epochs: 1\n  logger: false\n  enable_progress_bar: false\n  enable_model_summary: false\n"
        "  callbacks:\n    - class_path: lightning_gm.callbacks.SampleQuality\n      init_args:\n"
        "        num_samples: 100\n        if_missing: skip\n"
        "model:\n  class_path: tests.callbacks.test_sample_quality.Replay\n"
        "data:\n  class_path: tests.callbacks.test_sample_quality.TinyImages\n"
    )
    with pytest.warns(UserWarning, match="will not be computed: no feature network at"):
        assert run_cli("fit", "--config", str(cfg), "--run_name=r") == 0
    summary = json.loads((tmp_path / "runs" / "skip" / "r" / "summary.json").read_text())
    assert "test/nll" in summary["test"] and "test/fd_lenet" not in summary["test"]
    assert summary["skipped"] == {"SampleQuality": f"skipped: no feature network at {tmp_path}/root/classifiers/lenet_mnist.pt"}
    with pytest.raises(ConfigError, match="if_missing must be 'error' or 'skip'"):
        SampleQuality(if_missing="ignore")


def test_non_image_samples_are_a_clear_error(classifier, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"Replay.sample\(50\) returned shape \(50, 64\)"):
        _test(Replay(mode="wrong"), SampleQuality(classifier_path=str(classifier), num_samples=100, batch_size=50), tmp_path)


def test_non_image_test_data_is_a_clear_error(classifier, tmp_path) -> None:
    from lightning_gm.data import DigitsDataModule

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[SampleQuality(classifier_path=str(classifier), num_samples=100)])
    with pytest.raises(ConfigError, match=r"28x28 images; the test data has examples of shape \(64,\)"):
        trainer.test(Replay(data_shape=(64,)), datamodule=DigitsDataModule(), verbose=False)


@pytest.mark.parametrize("kwargs,match", [({"num_samples": 1}, "num_samples must be >= 2"), ({"k": 100, "num_samples": 100}, "k must be in")])
def test_bad_arguments_are_config_errors(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SampleQuality(**kwargs)


def test_cli_run_writes_the_metrics_to_summary_and_leaderboard(classifier, run_cli, tmp_path) -> None:
    cfg = tmp_path / "sq.yaml"
    cfg.write_text(
        "trainer:\n  max_epochs: 1\n  logger: false\n  enable_progress_bar: false\n  enable_model_summary: false\n"
        "  callbacks:\n    - class_path: lightning_gm.callbacks.SampleQuality\n      init_args:\n"
        f"        classifier_path: {classifier}\n        num_samples: 200\n        batch_size: 100\n"
        "model:\n  class_path: tests.callbacks.test_sample_quality.Replay\n"
        "data:\n  class_path: tests.callbacks.test_sample_quality.TinyImages\n"
    )
    assert run_cli("fit", "--config", str(cfg), "--run_name=r") == 0
    run = tmp_path / "runs" / "sq" / "r"
    test = json.loads((run / "summary.json").read_text())["test"]
    assert test["test/precision"] == 1.0 and test["test/recall"] == 1.0 and abs(test["test/fd_lenet"]) < 1e-3
    rec = read_run(run, tmp_path / "runs")
    assert (rec.precision, rec.recall) == (1.0, 1.0) and rec.fd_lenet is not None
