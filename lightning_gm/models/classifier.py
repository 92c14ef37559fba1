r"""The platform's own MNIST feature network: a LeNet-style classifier trained by ``lightning_gm fit`` and
saved where :class:`~lightning_gm.callbacks.sample_quality.SampleQuality` finds it.

Training minimises the cross-entropy of the labels,

.. math::

    \mathcal L = -\frac1B \sum_{i=1}^B \log \operatorname{softmax}(\mathrm{logits}(\tilde x_i))_{y_i},
    \qquad \tilde x_i = \begin{cases} b_i \sim \mathrm{Bernoulli}(x_i) & \text{with probability } p\\
    x_i & \text{otherwise,}\end{cases}

where the random binarisation (probability ``binarize_prob``) teaches the network both grey and binary
digits, since generated samples are either. At the end of the test (``test_after_fit`` tests the best
checkpoint) rank 0 writes the network and its test accuracy to ``export_path`` (default
:func:`default_classifier_path`: ``<data root>/classifiers/lenet_mnist.pt``, the data root being
``$LIGHTNING_GM_DATA`` or ``~/.cache/lightning_gm``)::

    lightning_gm fit --config conf/classifier_mnist.yaml

References: LeCun, Bottou, Bengio & Haffner (1998), Gradient-based learning applied to document recognition.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_gm.data.files import resolve_data_root
from lightning_gm.errors import ConfigError
from lightning_gm.models.base import adam
from lightning_gm.models.checkpointing import RecordedHyperparameters
from lightning_gm.nn.classifier import LeNet, save_feature_network

__all__ = ["MNISTClassifier", "default_classifier_path", "CLASSIFIER_FILE", "TRAIN_COMMAND"]

#: file name of the feature network below ``<data root>/classifiers/``
CLASSIFIER_FILE = "lenet_mnist.pt"
#: the command that trains and saves it (quoted in error messages)
TRAIN_COMMAND = "lightning_gm fit --config conf/classifier_mnist.yaml"


def default_classifier_path() -> Path:
    """``<data root>/classifiers/lenet_mnist.pt`` (data root: ``$LIGHTNING_GM_DATA`` or the user cache)."""
    return resolve_data_root() / "classifiers" / CLASSIFIER_FILE


class MNISTClassifier(RecordedHyperparameters):
    """LeNet-style digit classifier (:class:`~lightning_gm.nn.classifier.LeNet`); a feature network, not a
    generative model (it has no ``log_prob``/``sample``; the CLI trains it like any model).

    Args:
        data_shape: shape of one image, ``(784,)`` or ``(1, 28, 28)`` (linked from the DataModule).
        channels: output channels of the two 5x5 convolutions.
        feature_dim: width of the feature (penultimate) layer.
        dropout: dropout before the output layer.
        binarize_prob: probability that a training image is replaced by a Bernoulli sample of itself.
        export: write the tested network to ``export_path`` at the end of the test.
        export_path: where to write it (default ``<data root>/classifiers/lenet_mnist.pt``).
        optimizer: optimiser factory (default Adam, lr 1e-3).
        lr_scheduler: optional scheduler factory.
    """

    family: ClassVar[str] = "classifier"
    monitor: ClassVar[str] = "val/acc"
    monitor_mode: ClassVar[str] = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        channels: Sequence[int] = (16, 32),
        feature_dim: int = 128,
        dropout: float = 0.25,
        binarize_prob: float = 0.5,
        export: bool = True,
        export_path: Optional[str] = None,
        optimizer: OptimizerCallable = adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])  # load_model(run) rebuilds it
        self.data_shape = tuple(int(s) for s in data_shape)
        if math.prod(self.data_shape) != 784:
            raise ConfigError(f"model.init_args.data_shape must describe 28x28 images (784 values), got "
                              f"{list(self.data_shape)}: MNISTClassifier is for MNIST-like data")
        if not 0.0 <= binarize_prob <= 1.0:
            raise ConfigError(f"model.init_args.binarize_prob must be in [0, 1], got {binarize_prob}")
        self.net = LeNet(channels, feature_dim, 10, dropout)
        self.binarize_prob = binarize_prob
        self.export, self.export_path = export, export_path
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.exported_to: Optional[Path] = None

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, 10)``."""
        return self.net(x)

    def _common_step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch
        if stage == "train" and self.binarize_prob > 0:
            flip = torch.rand(x.shape[0], device=x.device) < self.binarize_prob
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), torch.bernoulli(x.clamp(0, 1)), x)
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=not on_step)
        self.log(f"{stage}/acc", acc, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=not on_step)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "test")

    def on_test_end(self) -> None:
        if not self.export or not self.trainer.is_global_zero:
            return
        acc = self.trainer.callback_metrics.get("test/acc")
        dm = getattr(self.trainer, "datamodule", None)
        path = Path(self.export_path).expanduser() if self.export_path else default_classifier_path()
        self.exported_to = save_feature_network(
            self.net, path, test_acc=None if acc is None else float(acc),
            data=dict(getattr(dm, "info", {}) or {}), trained_by=TRAIN_COMMAND,
        )
        print(f"lightning_gm: feature network (test accuracy {float(acc) if acc is not None else float('nan'):.4f}) "
              f"saved to {self.exported_to}")

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.lr_scheduler_factory(opt), "monitor": self.monitor}}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
