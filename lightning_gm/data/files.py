"""Locating, downloading, verifying and parsing the dataset files (no torchvision).

The data root is, in order: the ``data_dir`` argument, the environment variable
``LIGHTNING_GM_DATA``, or ``$XDG_CACHE_HOME/lightning_gm`` (``~/.cache/lightning_gm``). Inside it each
dataset keeps the layout torchvision uses, so an existing copy can be pointed at directly::

    <root>/MNIST/raw/train-images-idx3-ubyte.gz
    <root>/FashionMNIST/raw/t10k-labels-idx1-ubyte.gz
    <root>/BinarizedMNIST/binarized_mnist_test.amat

A missing file is downloaded from the dataset's public mirrors into the root; every file, found or
downloaded, is verified by MD5 before use.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_gm.errors import DataFileError

__all__ = [
    "DATA_ENV",
    "RemoteFile",
    "SOURCES",
    "resolve_data_root",
    "md5sum",
    "ensure_file",
    "read_idx",
    "read_amat",
]

DATA_ENV = "LIGHTNING_GM_DATA"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives below the data root, its mirrors and its MD5."""

    subdir: str
    name: str
    md5: str
    mirrors: tuple[str, ...]

    def urls(self) -> list[str]:
        return [m.rstrip("/") + "/" + self.name for m in self.mirrors]


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "http://yann.lecun.com/exdb/mnist",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",)
_BINARIZED_MIRRORS = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist",)


def _files(subdir: str, mirrors: tuple[str, ...], table: dict[str, str]) -> dict[str, RemoteFile]:
    return {name: RemoteFile(subdir, name, md5, mirrors) for name, md5 in table.items()}


#: Every dataset file the platform knows, keyed by dataset then file name.
SOURCES: dict[str, dict[str, RemoteFile]] = {
    "MNIST": _files(
        "MNIST/raw",
        _MNIST_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "FashionMNIST": _files(
        "FashionMNIST/raw",
        _FASHION_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "BinarizedMNIST": _files(
        "BinarizedMNIST",
        _BINARIZED_MIRRORS,
        {
            "binarized_mnist_train.amat": "db28b1a6ae0fe70cbd3da91acf46e477",
            "binarized_mnist_valid.amat": "bf37822a04e94123630de6a7dfd9c9ef",
            "binarized_mnist_test.amat": "14e41ae11040adba6ab8cb291eda0dd8",
        },
    ),
}


def resolve_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$LIGHTNING_GM_DATA``, else the user cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lightning_gm"


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_place(remote: RemoteFile, target: Path) -> str:
    return (
        f"Place the file by hand at {target} (MD5 {remote.md5}; it is published at "
        f"{' or '.join(remote.urls())}), or point `data_dir` / ${DATA_ENV} at a folder that holds "
        f"{remote.subdir}/{remote.name}."
    )


def _download(remote: RemoteFile, target: Path) -> None:
    errors = []
    target.parent.mkdir(parents=True, exist_ok=True)
    for url in remote.urls():
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
            got = md5sum(tmp)
            if got != remote.md5:
                errors.append(f"{url}: MD5 {got} != expected {remote.md5}")
                continue
            os.replace(tmp, target)  # atomic: a half-downloaded file never takes the real name
            return
        except OSError as exc:  # URLError and timeouts are OSErrors
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataFileError(
        f"could not download {remote.name} into {target.parent}: " + "; ".join(errors) + ". "
        + _how_to_place(remote, target)
    )


def ensure_file(dataset: str, name: str, root: Path, download: bool = True) -> Path:
    """Return the verified path of ``name`` of ``dataset`` below ``root``, downloading it if missing.

    Raises:
        DataFileError: the file is missing and ``download`` is off or fails, or its MD5 is wrong.
    """
    remote = SOURCES[dataset][name]
    target = root / remote.subdir / remote.name
    if not target.is_file():
        if not download:
            raise DataFileError(
                f"{dataset} file {remote.name} not found at {target} and download=False. "
                + _how_to_place(remote, target)
            )
        _download(remote, target)
    got = md5sum(target)
    if got != remote.md5:
        raise DataFileError(
            f"{target} fails its checksum: MD5 {got}, expected {remote.md5}. The file is corrupt or not "
            f"the published {dataset} file; delete it to download it again. " + _how_to_place(remote, target)
        )
    return target


_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array.

    The format (LeCun's MNIST page): two zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double), a byte giving the number of dimensions ``n``, then ``n``
    big-endian uint32 sizes, then the data in C order, big-endian.

    Raises:
        DataFileError: the header is malformed or the data size does not match it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataFileError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataFileError(f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'}")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFileError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(raw) - header} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_amat(path: str | os.PathLike, width: int = 784) -> np.ndarray:
    """Parse one of Larochelle's ``binarized_mnist_*.amat`` files into a ``(N, width)`` uint8 array.

    Each row is ``width`` values ``0``/``1`` separated by single spaces and ended by ``\\n``, so every
    value sits at an even byte offset: the parse is a strided view, not a text scan.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    row = 2 * width
    if raw.size == 0 or raw.size % row:
        raise DataFileError(f"{path}: size {raw.size} bytes is not a whole number of {width}-value rows")
    values = raw[0::2] - ord("0")
    seps = raw[1::2].reshape(-1, width)
    if values.max(initial=0) > 1 or (seps[:, :-1] != ord(" ")).any() or (seps[:, -1] != ord("\n")).any():
        raise DataFileError(f"{path}: not a binarized MNIST .amat file (values must be 0/1 separated by spaces)")
    return values.reshape(-1, width)
