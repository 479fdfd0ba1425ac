"""Atomic file writes: a reader never sees a half-written file.

Write to a temporary file in the same folder, flush, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_savez", "atomic_torch_save"]


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=1, sort_keys=False, allow_nan=False)
    return atomic_write_bytes(path, text.encode())


def atomic_savez(path: str | Path, **arrays: Any) -> Path:
    return _atomic(path, lambda fh: np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()}))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    return _atomic(path, lambda fh: torch.save(obj, fh))
