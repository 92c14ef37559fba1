"""IDX / amat parsing, MD5 verification and the download path, on files made here."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from lightning_gm.data import files
from lightning_gm.data.files import RemoteFile, ensure_file, read_amat, read_idx
from lightning_gm.errors import DataFileError


def _write_idx(path, arr: np.ndarray, type_byte: int, gz: bool = True) -> None:
    header = bytes([0, 0, type_byte, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize(
    "dtype,type_byte", [(np.uint8, 0x08), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)]
)
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, type_byte, gz):
    rng = np.random.default_rng(0)
    arr = (rng.random((7, 5, 3)) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _write_idx(path, arr, type_byte, gz)
    out = read_idx(path)
    assert out.shape == (7, 5, 3) and out.dtype.kind == np.dtype(dtype).kind
    np.testing.assert_array_equal(out, arr)


def test_read_idx_labels_1d(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    _write_idx(tmp_path / "l.gz", labels, 0x08)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.gz"), labels)


def test_read_idx_bad_magic(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataFileError, match="not an IDX file: bad magic number 01020801"):
        read_idx(tmp_path / "x.idx")


def test_read_idx_truncated(tmp_path):
    _write_idx(tmp_path / "t.idx", np.zeros((4, 3), np.uint8), 0x08, gz=False)
    raw = (tmp_path / "t.idx").read_bytes()
    (tmp_path / "t.idx").write_bytes(raw[:-2])
    with pytest.raises(DataFileError, match=r"shape \(4, 3\) \(12 bytes of data\) but the file holds 10 bytes"):
        read_idx(tmp_path / "t.idx")


def test_read_amat(tmp_path):
    rng = np.random.default_rng(1)
    arr = (rng.random((6, 784)) < 0.3).astype(np.uint8)
    text = "".join(" ".join(str(v) for v in row) + "\n" for row in arr)
    (tmp_path / "b.amat").write_text(text)
    np.testing.assert_array_equal(read_amat(tmp_path / "b.amat"), arr)
    (tmp_path / "bad.amat").write_text(text.replace("1", "2", 1))
    with pytest.raises(DataFileError, match="not a binarized MNIST .amat file"):
        read_amat(tmp_path / "bad.amat")


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A one-file dataset whose mirror is a local folder (file:// URL), registered in SOURCES."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = b"lightning_gm test payload\n" * 100
    (mirror / "f.bin").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    remote = RemoteFile("Fake/raw", "f.bin", md5, (f"file://{mirror}",))
    monkeypatch.setitem(files.SOURCES, "Fake", {"f.bin": remote})
    return remote, payload


def test_download_verifies_and_places_file(tmp_path, fake_source):
    remote, payload = fake_source
    root = tmp_path / "root"
    path = ensure_file("Fake", "f.bin", root)
    assert path == root / "Fake/raw/f.bin" and path.read_bytes() == payload
    assert not list(path.parent.glob("*.part"))  # no temporary left behind


def test_md5_mismatch_names_file_and_fix(tmp_path, fake_source):
    remote, _ = fake_source
    root = tmp_path / "root"
    (root / "Fake/raw").mkdir(parents=True)
    (root / "Fake/raw/f.bin").write_bytes(b"corrupt")
    with pytest.raises(DataFileError) as info:
        ensure_file("Fake", "f.bin", root)
    msg = str(info.value)
    assert str(root / "Fake/raw/f.bin") in msg and remote.md5 in msg
    assert hashlib.md5(b"corrupt").hexdigest() in msg and "delete it to download it again" in msg


def test_download_with_wrong_checksum_is_refused(tmp_path, fake_source, monkeypatch):
    remote, _ = fake_source
    bad = RemoteFile(remote.subdir, remote.name, "0" * 32, remote.mirrors)
    monkeypatch.setitem(files.SOURCES, "Fake", {"f.bin": bad})
    with pytest.raises(DataFileError, match=r"MD5 [0-9a-f]{32} != expected 0{32}"):
        ensure_file("Fake", "f.bin", tmp_path / "root")
    assert not (tmp_path / "root/Fake/raw/f.bin").exists()  # nothing half-right left under the real name


def test_missing_file_without_download(tmp_path):
    with pytest.raises(DataFileError) as info:
        ensure_file("MNIST", "t10k-labels-idx1-ubyte.gz", tmp_path, download=False)
    msg = str(info.value)
    assert "not found at" in msg and str(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz") in msg
    assert "ec29112dd5afa0611ce80d1b7f02629c" in msg and "LIGHTNING_GM_DATA" in msg


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTNING_GM_DATA", str(tmp_path / "env"))
    assert files.resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert files.resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("LIGHTNING_GM_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert files.resolve_data_root(None) == tmp_path / "cache" / "lightning_gm"
