"""Offline data loaders."""

import gzip
import struct

import numpy as np
import pytest
import torch

from ebmlib.data import FASHION_MNIST_DIR, load_digits, load_idx_dataset, one_hot, read_idx


def test_load_digits_split_is_seeded_and_scaled():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert a.x_train.shape[1] == 64 and a.n_classes == 10
    assert len(a.x_train) + len(a.x_test) == 1797
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    assert torch.equal(a.y_test, b.y_test) and not torch.equal(a.y_test, c.y_test)
    assert a.targets(a.y_train[:5]).sum(1).tolist() == [1.0] * 5


def _write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_roundtrip_and_dataset(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 4, 4))
    labels = rng.integers(0, 10, size=7)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    ds = load_idx_dataset(tmp_path, name="tiny", n_train=5)
    assert ds.x_train.shape == (5, 16) and ds.x_test.shape == (7, 16)
    assert torch.allclose(ds.x_train[0], torch.tensor(imgs[0].reshape(-1) / 255.0, dtype=torch.float32))


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="folder"):
        load_idx_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="labels"):
        one_hot(torch.tensor([0, 11]), 10)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    ds = load_idx_dataset(FASHION_MNIST_DIR, n_train=100, n_test=50)
    assert ds.x_train.shape == (100, 784) and ds.n_classes == 10
