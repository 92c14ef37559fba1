"""LightningDataModules shared by every model: MNIST, Fashion-MNIST, binarised MNIST, 8x8 digits, 2-D toys.

Every batch is a pair ``(x, y)``: ``x`` float32 of shape ``(B, *shape)`` (``shape`` is ``(784,)`` when
``flatten`` else ``(1, 28, 28)``), ``y`` the integer labels (zeros for the toys). Each module says
what its numbers mean through :attr:`GenerativeDataModule.info` and
:attr:`GenerativeDataModule.bpd_offset`, which converts a test NLL into bits per dimension.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_gm.data.files import ensure_file, read_amat, read_idx, resolve_data_root
from lightning_gm.data.toy import TOY_DENSITIES, sample_toy
from lightning_gm.data.transforms import BinarizeMode, binarize, dequantize
from lightning_gm.errors import ConfigError, DataFileError

__all__ = [
    "GenerativeDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "BinarizedMNISTDataModule",
    "DigitsDataModule",
    "Toy2DDataModule",
]


class BatchDataset(Dataset):
    """Tensors fetched a whole batch at a time, with an optional per-batch transform (fresh noise)."""

    def __init__(self, x: Tensor, y: Tensor, transform: Optional[Callable[[Tensor], Tensor]] = None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def _fetch(self, idx: Any) -> tuple[Tensor, Tensor]:
        x = self.x[idx]
        return (self.transform(x) if self.transform else x), self.y[idx]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self._fetch(i)

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        return self._fetch(torch.as_tensor(idx))


def batch_collate(batch: Any) -> Any:
    # __getitems__ already returns a stacked batch
    return batch


class GenerativeDataModule(pl.LightningDataModule):
    """Shared loader plumbing: splits into ``train``/``val``/``test`` tensors and serves them in batches.

    Subclasses implement :meth:`_load_splits` returning ``{"train", "val", "test"} -> (x, y)`` with
    ``x`` already in its final (evaluation) form, and may set :attr:`_train_transform` for data that
    changes every batch (dynamic binarisation, dequantisation noise).

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory (for GPU training).
        seed: seed of the validation split and of every fixed random transform of the data.
    """

    name: ClassVar[str] = "data"

    def __init__(
        self,
        batch_size: int = 100,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._train_transform: Optional[Callable[[Tensor], Tensor]] = None

    # --- what the data is -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example ``x``."""
        raise NotImplementedError

    @property
    def dims(self) -> int:
        """Number of dimensions of one example."""
        return int(math.prod(self.shape))

    @property
    def bpd_offset(self) -> Optional[float]:
        """Nats to add to a per-example NLL before dividing by ``dims * ln 2`` for bits/dim; ``None``
        where bits/dim has no meaning (continuous data that is not a dequantised discrete one)."""
        return None

    @property
    def info(self) -> dict[str, Any]:
        """What the numbers are measured on (logged beside every run)."""
        return {"dataset": self.name, "shape": list(self.shape)}

    # --- Lightning hooks -------------------------------------------------------------------
    def _load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.splits:
            self.splits = self._load_splits()

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        x, y = self.splits[split]
        ds = BatchDataset(x, y, self._train_transform if train else None)
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=batch_collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


def _split(x: Tensor, y: Tensor, val_size: int, seed: int, what: str) -> tuple[tuple, tuple]:
    if not 0 <= val_size < len(x):
        raise ConfigError(f"data.val_size must be in [0, {len(x)}) for {what}, got {val_size}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, va = perm[val_size:], perm[:val_size]
    return (x[tr], y[tr]), (x[va], y[va])


class ImageDataModule(GenerativeDataModule):
    """Grey-level images stored as integer levels, with binarisation or dequantisation options.

    Args:
        data_dir: data root (default: ``$LIGHTNING_GM_DATA``, else ``~/.cache/lightning_gm``).
        download: fetch missing files from the public mirrors (always verified by MD5).
        binarize: ``none | dynamic | static | threshold`` (see :mod:`lightning_gm.data.transforms`).
        threshold: cut-off for ``binarize=threshold``.
        dequantize: uniform dequantisation ``(k + u) / L`` for continuous density models (flows).
        flatten: serve vectors ``(D,)`` instead of images ``(C, H, W)``.
        val_size: examples of the training file held out for validation (seeded by ``seed``).
        **kwargs: the loader arguments of :class:`GenerativeDataModule` (``batch_size``, ``eval_batch_size``,
            ``num_workers``, ``pin_memory``, ``seed``).
    """

    num_levels: ClassVar[int] = 256
    image_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def __init__(
        self,
        data_dir: Optional[str] = None,
        download: bool = True,
        binarize: BinarizeMode = "none",
        threshold: float = 0.5,
        dequantize: bool = False,
        flatten: bool = True,
        val_size: int = 10000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if binarize not in ("none", "dynamic", "static", "threshold"):
            raise ConfigError(f"data.binarize must be one of none, dynamic, static, threshold; got {binarize!r}")
        if binarize != "none" and dequantize:
            raise ConfigError("data.binarize and data.dequantize exclude each other: binary data has nothing to dequantize")
        self.data_dir = data_dir
        self.download = download
        self.binarize = binarize
        self.threshold = threshold
        self.dequantize = dequantize
        self.flatten = flatten
        self.val_size = val_size

    @property
    def root(self) -> Path:
        return resolve_data_root(self.data_dir)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(math.prod(self.image_shape)),) if self.flatten else tuple(self.image_shape)

    @property
    def bpd_offset(self) -> Optional[float]:
        if self.binarize != "none":
            return 0.0  # a probability mass function on {0,1}^D: bits/dim = nll / (D ln 2)
        if self.dequantize:
            return self.dims * math.log(self.num_levels)
        return None

    @property
    def info(self) -> dict[str, Any]:
        return {
            **super().info,
            "binarize": self.binarize,
            "dequantize": self.dequantize,
            "levels": self.num_levels,
        }

    def _raw_levels(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train": (images uint8 (N,H,W), labels), "test": ...}`` as stored in the files."""
        raise NotImplementedError

    def _finish(self, levels: Tensor, generator: torch.Generator) -> Tensor:
        """Evaluation form of integer levels: fixed seeded noise where the training form is random."""
        if self.dequantize:
            return dequantize(levels, self.num_levels, generator)
        x = levels.float() / (self.num_levels - 1)
        if self.binarize != "none":
            x = binarize(x, self.binarize, self.threshold, generator)
        return x

    def _train_fn(self, levels: Tensor) -> Tensor:
        if self.dequantize:
            return dequantize(levels, self.num_levels)
        return binarize(levels.float() / (self.num_levels - 1), "dynamic")

    def _load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        raw = self._raw_levels()
        shape = (-1, *self.shape)
        x_all = torch.from_numpy(np.ascontiguousarray(raw["train"][0])).reshape(shape)
        y_all = torch.from_numpy(raw["train"][1].astype(np.int64))
        (xt, yt), (xv, yv) = _split(x_all, y_all, self.val_size, self.seed, self.name)
        xs = torch.from_numpy(np.ascontiguousarray(raw["test"][0])).reshape(shape)
        ys = torch.from_numpy(raw["test"][1].astype(np.int64))
        g = torch.Generator().manual_seed(self.seed + 1)
        splits = {"val": (self._finish(xv, g), yv), "test": (self._finish(xs, g), ys)}
        if self.binarize == "dynamic" or self.dequantize:
            splits["train"] = (xt, yt)  # integer levels; fresh noise per batch
            self._train_transform = self._train_fn
        else:
            splits["train"] = (self._finish(xt, g), yt)
        return splits


class _IDXImages(ImageDataModule):
    dataset_key: ClassVar[str] = "MNIST"

    def prepare_data(self) -> None:
        for name in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ):
            ensure_file(self.dataset_key, name, self.root, self.download)

    def _raw_levels(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        def get(name: str) -> np.ndarray:
            return read_idx(ensure_file(self.dataset_key, name, self.root, download=False))

        out = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images, labels = get(f"{prefix}-images-idx3-ubyte.gz"), get(f"{prefix}-labels-idx1-ubyte.gz")
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(labels) != len(images):
                raise DataFileError(
                    f"{self.root}/{self.dataset_key}: {prefix} images have shape {images.shape} and "
                    f"{len(labels)} labels; expected (N, 28, 28) and N labels"
                )
            out[split] = (images, labels)
        return out


class MNISTDataModule(_IDXImages):
    """MNIST (LeCun et al. 1998): 60,000 training images (50,000 / 10,000 train/validation split) and
    10,000 test images of 28x28 grey levels, from the IDX files. Arguments as :class:`ImageDataModule`."""

    name = "mnist"
    dataset_key = "MNIST"


class FashionMNISTDataModule(_IDXImages):
    """Fashion-MNIST (Xiao et al. 2017), same format and splits as MNIST. Arguments as
    :class:`ImageDataModule`."""

    name = "fashion_mnist"
    dataset_key = "FashionMNIST"


class BinarizedMNISTDataModule(GenerativeDataModule):
    """The statically binarised MNIST of Larochelle & Murray (2011): fixed 50,000 / 10,000 / 10,000
    train / validation / test splits from ``binarized_mnist_{train,valid,test}.amat``.

    Args:
        data_dir: data root (default: ``$LIGHTNING_GM_DATA``, else ``~/.cache/lightning_gm``).
        download: fetch missing files from the public mirror (always verified by MD5).
        flatten: serve vectors ``(784,)`` instead of images ``(1, 28, 28)``.
        **kwargs: the loader arguments of :class:`GenerativeDataModule`.
    """

    name = "binarized_mnist"
    _files = {"train": "binarized_mnist_train.amat", "val": "binarized_mnist_valid.amat", "test": "binarized_mnist_test.amat"}

    def __init__(
        self,
        data_dir: Optional[str] = None,
        download: bool = True,
        flatten: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir, self.download, self.flatten = data_dir, download, flatten

    @property
    def shape(self) -> tuple[int, ...]:
        return (784,) if self.flatten else (1, 28, 28)

    @property
    def bpd_offset(self) -> Optional[float]:
        return 0.0

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "binarize": "static-larochelle"}

    def prepare_data(self) -> None:
        root = resolve_data_root(self.data_dir)
        for name in self._files.values():
            ensure_file("BinarizedMNIST", name, root, self.download)

    def _load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        root = resolve_data_root(self.data_dir)
        out = {}
        for split, name in self._files.items():
            x = torch.from_numpy(read_amat(ensure_file("BinarizedMNIST", name, root, download=False)))
            out[split] = (x.float().reshape(-1, *self.shape), torch.zeros(len(x), dtype=torch.long))
        return out


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 17 grey levels), shipped with
    scikit-learn so it works offline: a quick stand-in for MNIST. Split seeded into
    1,197 / 300 / 300 train / validation / test. Arguments as :class:`ImageDataModule`
    (``data_dir`` and ``download`` are unused)."""

    name = "digits"
    num_levels = 17
    image_shape = (1, 8, 8)

    def __init__(
        self,
        binarize: BinarizeMode = "none",
        threshold: float = 0.5,
        dequantize: bool = False,
        flatten: bool = True,
        val_size: int = 300,
        test_size: int = 300,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=None, download=False, binarize=binarize, threshold=threshold, dequantize=dequantize,
                         flatten=flatten, val_size=val_size, **kwargs)
        self.test_size = test_size

    def _raw_levels(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from sklearn.datasets import load_digits

        d = load_digits()
        images, labels = d.images.astype(np.uint8), d.target
        perm = np.random.default_rng(self.seed).permutation(len(images))
        te, tr = perm[: self.test_size], perm[self.test_size :]
        return {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}


class Toy2DDataModule(GenerativeDataModule):
    """Samples of a 2-D toy density (:mod:`lightning_gm.data.toy`), each split drawn with its own seed.

    Args:
        density: one of ``two_moons, eight_gaussians, checkerboard, rings, circles, pinwheel,
            two_spirals, swiss_roll``.
        n_train: training examples. n_val: validation examples. n_test: test examples.
        batch_size: training batch size; **kwargs: the other loader arguments of :class:`GenerativeDataModule`.
    """

    name = "toy2d"

    def __init__(
        self,
        density: str = "eight_gaussians",
        n_train: int = 50000,
        n_val: int = 5000,
        n_test: int = 20000,
        batch_size: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if density not in TOY_DENSITIES:
            raise ConfigError(f"data.density: unknown toy density {density!r}; choose one of {sorted(TOY_DENSITIES)}")
        self.density, self.n_train, self.n_val, self.n_test = density, n_train, n_val, n_test

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "dataset": f"toy2d/{self.density}"}

    def _load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for i, (split, n) in enumerate((("train", self.n_train), ("val", self.n_val), ("test", self.n_test))):
            x = sample_toy(self.density, n, seed=self.seed * 3 + i)
            out[split] = (x, torch.zeros(n, dtype=torch.long))
        return out
