r"""Sample quality at the end of the test, logged next to the NLL: a Fréchet distance in the features of the
platform's own MNIST classifier and the k-NN precision/recall of the samples.

At the end of the test epoch the callback draws ``num_samples`` samples with ``pl_module.sample``, takes
the first ``num_samples`` test images (as the DataModule serves them: binary for binarised data, grey
otherwise), maps both through the classifier's feature layer :math:`\phi`
(:class:`~lightning_gm.nn.classifier.LeNet`, trained by ``lightning_gm fit --config
conf/classifier_mnist.yaml``) and logs

* ``test/fd_lenet``: :math:`\lVert \mu_r - \mu_g \rVert^2 + \operatorname{tr}(\Sigma_r + \Sigma_g -
  2(\Sigma_r\Sigma_g)^{1/2})` of Gaussians fitted to :math:`\phi(\text{real})` and :math:`\phi(\text{samples})`
  (torchmetrics' Fréchet metric with the classifier as its feature module). It is *not* the Inception FID
  and is not comparable with published FIDs; it ranks models on this platform.
* ``test/precision``, ``test/recall``: k-NN manifold precision/recall (Kynkäänniemi et al. 2019) in the
  same features (:func:`~lightning_gm.estimators.sample_quality.precision_recall`).
* ``test/sample_quality_seconds``.

Samples may be ``(n, 784)`` or ``(n, 1, 28, 28)`` with values in :math:`[0, 1]` (binary or grey; values
outside are clipped). Sampling is seeded (``seed``, in a forked RNG so training randomness is untouched),
and every DDP process reads the whole test set, so every process computes the same numbers from the same
samples without communication (the work is repeated, not shared).

References: Heusel et al. (2017), GANs trained by a two time-scale update rule converge to a local Nash
equilibrium; Kynkäänniemi, Karras, Laine, Lehtinen & Aila (2019), Improved precision and recall metric for
assessing generative models.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.sample_quality import frechet_metric, precision_recall
from lightning_gm.models.classifier import TRAIN_COMMAND, default_classifier_path
from lightning_gm.nn.classifier import FeatureExtractor, load_feature_network

__all__ = ["SampleQuality", "missing_classifier_message"]


def missing_classifier_message(path: Path) -> str:
    """What to do when the feature network is not at ``path``."""
    return (
        f"SampleQuality needs the MNIST feature network at {path}, which does not exist. Train and save it with "
        f"`{TRAIN_COMMAND}` (it is written to <data root>/classifiers/lenet_mnist.pt, the data root being "
        f"$LIGHTNING_GM_DATA or ~/.cache/lightning_gm; --model.init_args.export_path=FILE writes elsewhere), "
        f"or point the callback at a saved one (classifier_path: FILE in SampleQuality's init_args, or "
        f"--trainer.callbacks.classifier_path=FILE when SampleQuality is the config's last callback), "
        f"or remove SampleQuality from the config's trainer.callbacks."
    )


class SampleQuality(pl.Callback):
    """Log ``test/fd_lenet``, ``test/precision`` and ``test/recall`` of the model's samples at test end.

    Args:
        classifier_path: the saved feature network (default ``<data root>/classifiers/lenet_mnist.pt``,
            written by ``lightning_gm fit --config conf/classifier_mnist.yaml``).
        num_samples: samples drawn and test images compared (10,000 = the whole MNIST test set).
        batch_size: samples drawn (and images featurised) at a time.
        k: neighbour rank of the manifold radii of precision/recall (3 in Kynkäänniemi et al.).
        seed: seed of the samples.
        check_on_setup: fail at the start of fit/test when the classifier is missing (not after training).
        binarize_samples: replace each sample by a Bernoulli draw of its values before the comparison
            (for models whose ``sample`` returns Bernoulli means, e.g. the VAE's decoder mean, compared with
            binarised data: the draw is what the model generates; default: compare ``sample`` as returned).
        if_missing: what a missing feature network means: ``"error"`` (a ConfigError at the start of fit/test
            naming the command that trains it) or ``"skip"`` (the shipped model configs: the run goes on, a
            warning says why ``test/fd_lenet`` is absent, and ``summary.json`` records
            ``sample_quality: "skipped: ..."``).
    """

    def __init__(self, classifier_path: Optional[str] = None, num_samples: int = 10000, batch_size: int = 500,
                 k: int = 3, seed: int = 0, check_on_setup: bool = True, binarize_samples: bool = False,
                 if_missing: str = "error") -> None:
        if if_missing not in ("error", "skip"):
            raise ConfigError(f"SampleQuality.if_missing must be 'error' or 'skip', got {if_missing!r}")
        self.if_missing = if_missing
        self.skipped: Optional[str] = None
        if num_samples < 2 or batch_size < 1:
            raise ConfigError(f"SampleQuality: num_samples must be >= 2 and batch_size >= 1; got "
                              f"num_samples={num_samples}, batch_size={batch_size}")
        if not 1 <= k < num_samples:
            raise ConfigError(f"SampleQuality.k must be in [1, num_samples - 1], got k={k} with num_samples={num_samples}")
        self.classifier_path = classifier_path
        self.num_samples, self.batch_size, self.k, self.seed = num_samples, batch_size, k, seed
        self.check_on_setup = check_on_setup
        self.binarize_samples = binarize_samples
        self._warned = False
        self._warned_missing = False
        self.results: dict[str, float] = {}

    @property
    def path(self) -> Path:
        """Where the feature network is read from."""
        return Path(self.classifier_path).expanduser() if self.classifier_path else default_classifier_path()

    def _check(self, pl_module: Any) -> None:
        if not self.path.is_file():
            if self.if_missing == "skip":
                self.skipped = f"skipped: no feature network at {self.path}"
                if not self._warned_missing:
                    rank_zero_warn("test/fd_lenet, test/precision and test/recall will not be computed: no feature "
                                   f"network at {self.path} (train it once: `{TRAIN_COMMAND}`)")
                    self._warned_missing = True
                return
            raise ConfigError(missing_classifier_message(self.path))
        self.skipped = None
        if not callable(getattr(pl_module, "sample", None)):
            raise ConfigError(f"SampleQuality: the model {type(pl_module).__name__} has no sample(n) method")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.check_on_setup and stage in ("fit", "test"):
            self._check(pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.if_missing == "skip":
            self._check(pl_module)
            if self.skipped:
                return
        self.evaluate(trainer, pl_module)

    # --- the two image streams --------------------------------------------------------------------------
    def _real(self, trainer: pl.Trainer) -> Iterator[Tensor]:
        loaders = trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        # the whole test set in order on every process (the trainer's loader holds only this process's shard)
        whole = DataLoader(loader.dataset, batch_size=self.batch_size, shuffle=False, collate_fn=loader.collate_fn)
        left = self.num_samples
        for batch in whole:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if x[0].numel() != 784:
                raise ConfigError(f"SampleQuality compares 28x28 images; the test data has examples of shape "
                                  f"{tuple(x.shape[1:])}: use it with MNIST-like data only")
            x = x[:left]
            left -= x.shape[0]
            yield x
            if left <= 0:
                return
        if left > 0:
            raise ConfigError(f"SampleQuality.num_samples={self.num_samples} is larger than the test set "
                              f"({self.num_samples - left} examples); lower num_samples")

    def _fake(self, pl_module: Any) -> Iterator[Tensor]:
        done = 0
        while done < self.num_samples:
            b = min(self.batch_size, self.num_samples - done)
            x = pl_module.sample(b)
            if x.shape[0] != b or x[0].numel() != 784:
                raise ConfigError(f"SampleQuality compares 28x28 images: {type(pl_module).__name__}.sample({b}) "
                                  f"returned shape {tuple(x.shape)}; expected ({b}, 784) or ({b}, 1, 28, 28)")
            done += b
            x = x.detach().float()
            if not self._warned and (x.min() < -0.01 or x.max() > 1.01):
                self._warned = True
                rank_zero_warn(f"SampleQuality: {type(pl_module).__name__}.sample returned values in "
                               f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; they are clipped to [0, 1] (images in "
                               f"[0, 1] are expected: a tanh generator needs rescaling)")
            x = x.clamp(0.0, 1.0)
            yield torch.bernoulli(x) if self.binarize_samples else x

    # --- the evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        """Compute, log and return the three numbers for the trainer's test set and the model's samples."""
        start = time.time()
        self._check(pl_module)
        try:
            net, _ = load_feature_network(self.path)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"SampleQuality: {self.path} could not be read as a feature network ({exc}); "
                              f"re-create it with `{TRAIN_COMMAND}`") from exc
        device = pl_module.device
        extractor = FeatureExtractor(net).to(device)
        metric = frechet_metric(extractor).to(device)
        feats: list[Tensor] = []
        hook = extractor.register_forward_hook(lambda _m, _i, out: feats.append(out.detach().double().cpu()))
        was_training = pl_module.training
        pl_module.eval()
        try:
            for x in self._real(trainer):
                metric.update(x.to(device).float(), real=True)
            real = torch.cat(feats)
            feats.clear()
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                for x in self._fake(pl_module):
                    metric.update(x.to(device), real=False)
            fake = torch.cat(feats)
        finally:
            hook.remove()
            pl_module.train(was_training)
        fd = float(metric.compute())
        pr = precision_recall(real, fake, k=self.k)
        res = {"test/fd_lenet": fd, "test/precision": pr.precision, "test/recall": pr.recall,
               "test/sample_quality_seconds": time.time() - start}
        for key, value in res.items():
            pl_module.log(key, value, sync_dist=False)
        self.results = res
        return res
