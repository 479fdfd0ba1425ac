"""Offline data: scikit-learn's digits (embedded), and MNIST-format IDX files.

Inputs are rates in [0, 1] (pixel intensities, not passed through ρ); targets
are one-hot rows. Nothing is downloaded: ``load_digits`` ships inside
scikit-learn, Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), and MNIST works wherever a user has its
four IDX files.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .checks import check_positive_int

__all__ = ["Dataset", "load_digits", "read_idx", "load_idx_dataset", "FASHION_MNIST_DIR", "one_hot", "k_fold"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Dataset:
    """Train / test split: inputs ``(n, n_0)`` in [0, 1], integer labels, one-hot targets."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    def targets(self, labels: Tensor) -> Tensor:
        return one_hot(labels, self.n_classes, self.x_train.dtype)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Dataset:
        mv = lambda t: t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        mi = lambda t: t.to(device=device)  # noqa: E731
        return Dataset(self.name, mv(self.x_train), mi(self.y_train), mv(self.x_test), mi(self.y_test), self.n_classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"classes={self.n_classes})")


def one_hot(labels: Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot rows for integer ``labels``."""
    if labels.dim() != 1:
        raise ValueError(f"labels: expected a 1-D tensor, got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels: values must lie in [0, {n_classes})")
    return torch.nn.functional.one_hot(labels.long(), n_classes).to(dtype)


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, dtype: torch.dtype) -> Dataset:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = idx[:n_test], idx[n_test:]
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return Dataset(name, t(x[tr]), torch.as_tensor(y[tr]), t(x[te]), torch.as_tensor(y[te]), int(y.max()) + 1)


def load_digits(test_fraction: float = 0.25, seed: int = 0, dtype: torch.dtype = torch.float32) -> Dataset:
    """scikit-learn's 1,797 8×8 handwritten digits, pixels scaled to [0, 1], shuffled split by ``seed``."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (d.data / 16.0).astype(np.float64)
    return _split("digits", x, d.target.astype(np.int64), test_fraction, seed, dtype)


def k_fold(dataset: Dataset, k: int, *, pool_test: bool = True, seed: Optional[int] = None) -> list[Dataset]:
    """The ``k`` splits of k-fold cross-validation: split ``i`` tests on part ``i`` and trains on the rest.

    ``pool_test``: the examples split are the test split followed by the training split (all of the
    data; without ``seed``, part 0 is drawn from the dataset's own test split first); otherwise the
    training split only (the inner, validation folds of model selection, which never see the test
    split). ``seed``: shuffle the examples first (numpy's ``default_rng(seed)``); None keeps their order
    (the loaders already shuffle). Parts differ in size by at most one example (``numpy.array_split``).
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset: expected an ebmlib Dataset, got {type(dataset).__name__}")
    check_positive_int("k", k, minimum=2)
    if not isinstance(pool_test, bool):
        raise TypeError(f"pool_test: expected bool, got {type(pool_test).__name__}")
    if seed is not None:
        check_positive_int("seed", seed, minimum=0)
    if pool_test:
        x, y = torch.cat([dataset.x_test, dataset.x_train]), torch.cat([dataset.y_test, dataset.y_train])
    else:
        x, y = dataset.x_train, dataset.y_train
    if len(x) < k:
        raise ValueError(f"k: {k} folds need at least {k} examples, the dataset has {len(x)}")
    order = np.arange(len(x)) if seed is None else np.random.default_rng(seed).permutation(len(x))
    parts = [torch.as_tensor(p, dtype=torch.long) for p in np.array_split(order, k)]
    out = []
    for i, te in enumerate(parts):
        tr = torch.cat([p for j, p in enumerate(parts) if j != i])
        out.append(Dataset(f"{dataset.name}-fold{i}of{k}", x[tr], y[tr], x[te], y[te], dataset.n_classes))
    return out


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (MNIST format), gzipped or not, into a numpy array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no IDX file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"path: {path} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if code not in types:
        raise ValueError(f"path: {path} has unknown IDX type code {code:#x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=types[code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"path: {path} holds {data.size} values, its header says {dims}")
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"folder: {folder} has no {stem}[.gz]")


def load_idx_dataset(
    folder: str | os.PathLike = FASHION_MNIST_DIR,
    *,
    name: Optional[str] = None,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files in ``folder`` (60k train / 10k test).

    ``n_train`` / ``n_test`` keep the first examples only (quick runs).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"folder: {folder} does not exist (Fashion-MNIST: apt-get install dataset-fashion-mnist; "
            "MNIST: point this at the folder holding its four IDX files)"
        )
    xs = read_idx(_find(folder, "train-images-idx3-ubyte"))
    ys = read_idx(_find(folder, "train-labels-idx1-ubyte"))
    xt = read_idx(_find(folder, "t10k-images-idx3-ubyte"))
    yt = read_idx(_find(folder, "t10k-labels-idx1-ubyte"))
    if n_train is not None:
        check_positive_int("n_train", n_train)
        xs, ys = xs[:n_train], ys[:n_train]
    if n_test is not None:
        check_positive_int("n_test", n_test)
        xt, yt = xt[:n_test], yt[:n_test]
    f = lambda a: torch.as_tensor(a.reshape(len(a), -1).astype(np.float64) / 255.0, dtype=dtype)  # noqa: E731
    li = lambda a: torch.as_tensor(a.astype(np.int64))  # noqa: E731
    return Dataset(name or folder.name, f(xs), li(ys), f(xt), li(yt), 10)
