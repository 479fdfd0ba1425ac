"""Offline data loaders."""

import gzip
import struct

import numpy as np
import pytest
import torch

from ebmlib.data import FASHION_MNIST_DIR, Dataset, k_fold, load_digits, load_idx_dataset, one_hot, read_idx


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


@pytest.fixture(scope="module")
def small():
    ds = load_digits(0.25, seed=0)
    return Dataset("digits-small", ds.x_train[:150], ds.y_train[:150], ds.x_test[:60], ds.y_test[:60], 10)


def test_k_fold_partitions_all_examples(small):
    splits = k_fold(small, 4)
    n = len(small.x_train) + len(small.x_test)
    pooled = torch.cat([small.x_test, small.x_train])
    tests = torch.cat([s.x_test for s in splits])
    assert torch.equal(tests, pooled)                     # every example is tested once, in order
    assert sorted(len(s.x_test) for s in splits) == [52, 52, 53, 53]
    for s in splits:
        assert len(s.x_train) + len(s.x_test) == n
        both = torch.cat([s.x_train, s.x_test])
        assert torch.equal(both.sum(0), pooled.sum(0))    # train and test together are all of it
    assert torch.equal(splits[0].x_test, small.x_test[:53])   # part 0 comes from the dataset's own test split
    assert splits[1].name == "digits-small-fold1of4" and splits[1].n_classes == 10


def test_k_fold_inner_folds_never_see_the_test_split(small):
    inner = k_fold(small, 3, pool_test=False)
    assert sum(len(s.x_test) for s in inner) == len(small.x_train)
    assert torch.equal(torch.cat([s.x_test for s in inner]), small.x_train)
    assert torch.equal(torch.cat([s.y_test for s in inner]), small.y_train)


def test_k_fold_seed_shuffles_reproducibly(small):
    a, b, c = (k_fold(small, 3, seed=s) for s in (1, 1, 2))
    assert torch.equal(a[0].x_test, b[0].x_test) and not torch.equal(a[0].x_test, c[0].x_test)
    assert not torch.equal(a[0].x_test, k_fold(small, 3)[0].x_test)


def test_k_fold_errors(small):
    with pytest.raises(ValueError, match="^k:"):
        k_fold(small, 1)
    with pytest.raises(ValueError, match="^k:"):
        k_fold(Dataset("t", small.x_train[:2], small.y_train[:2], small.x_test[:0], small.y_test[:0], 10), 3)
    with pytest.raises(TypeError, match="^dataset:"):
        k_fold(small.x_train, 3)
    with pytest.raises(TypeError, match="^pool_test:"):
        k_fold(small, 3, pool_test=1)
