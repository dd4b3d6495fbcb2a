"""Data sets of the paper, held in memory as tensors: ``digits`` (embedded), ``mnist-rot``, ``cifar10``, ``cifar100``;
and ``digits3d`` (embedded, voxel volumes ``(N, 1, 16, 16, 16)`` for the groups O / Oh: :mod:`.digits3d`).

:func:`load_dataset` returns a :class:`DataSet` (train / optional validation / test splits as tensors, the number
of classes, the normalisation); :class:`~e4net.data.loader.BatchLoader` indexes random batches out of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._files import DataError, file_digest
from .loader import BatchLoader
from .transforms import channel_stats

DATASETS: tuple[str, ...] = ("digits", "mnist-rot", "cifar10", "cifar100", "digits3d")
NUM_CLASSES = {"digits": 10, "mnist-rot": 10, "cifar10": 10, "cifar100": 100, "digits3d": 10}
VAL_SEED = 7  # the held-out validation images (--val-size) do not depend on the run's seed


@dataclass
class Split:
    """Images ``x (N, C, H, W)`` or volumes ``x (N, C, D, H, W)`` (uint8 or float32) and labels ``y (N,)`` int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataSet:
    """A loaded data set. ``prepare(x)`` turns a batch of stored images into normalised float32 model inputs:
    ``(x * scale - mean) / std`` per channel (``mean``/``std`` None: no normalisation)."""

    name: str
    train: Split
    test: Split
    val: Split | None
    num_classes: int
    scale: float
    mean: list[float] | None
    std: list[float] | None
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.scale != 1.0:
            x = x * self.scale
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


def subsample_per_class(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Seeded indices of ``per_class`` examples of every class (Fig. 2's data-efficiency study), in sorted order."""
    if per_class < 1:
        raise DataError(f"--train-per-class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise DataError(f"--train-per-class {per_class}: class {c} has only {len(idx)} training images")
        out.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(out))


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    verify: bool = True,
    checksum: str | None = None,
    train_per_class: int | None = None,
    seed: int = 0,
    val_size: int = 0,
) -> DataSet:
    """Load a data set into memory.

    ``val_size`` images are held out of the training split for validation (MNIST-rot: the last ones, i.e. the
    official 2,000-image validation split for ``val_size=2000``; others: a fixed random subset). Then
    ``train_per_class`` (if given) keeps a seeded (``seed``) subset of that many training images per class.
    CIFAR inputs are normalised per channel with the training split's statistics (Sec. 5.2).
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        from . import digits

        arrays = digits.load()
        source = str(digits.csv_path())
    elif name == "digits3d":
        from . import digits3d

        arrays = digits3d.load()
        source = f"{digits3d.__name__} (from {digits3d.digits.csv_path()})"
    else:
        if root is None:
            raise DataError(f"--data-root is needed for {name} (a folder holding its files, or where to download them)")
        root = Path(root)
        if not root.is_dir():
            if download:
                root.mkdir(parents=True, exist_ok=True)
            else:
                raise DataError(f"--data-root {root} is not a folder")
        if name == "mnist-rot":
            from . import mnist_rot

            arrays = mnist_rot.load(root, download, verify, checksum)
        else:
            from . import cifar

            arrays = cifar.load(name, root, download, verify, checksum)
        source = str(root)
    xtr, ytr = arrays["x_train"], arrays["y_train"]
    val = None
    if val_size:
        if not 0 < val_size < len(ytr):
            raise DataError(f"--val-size must be between 0 and {len(ytr) - 1}, got {val_size}")
        if name == "mnist-rot":
            vi = np.arange(len(ytr) - val_size, len(ytr))
        else:
            vi = np.sort(np.random.default_rng(VAL_SEED).choice(len(ytr), val_size, replace=False))
        keep = np.setdiff1d(np.arange(len(ytr)), vi)
        val = Split(torch.from_numpy(xtr[vi]), torch.from_numpy(ytr[vi]))
        xtr, ytr = xtr[keep], ytr[keep]
    if train_per_class:
        idx = subsample_per_class(ytr, train_per_class, seed)
        xtr, ytr = xtr[idx], ytr[idx]
    scale = 1.0 / 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0
    mean = std = None
    if name.startswith("cifar"):
        mean, std = channel_stats(arrays["x_train"], scale)
    return DataSet(
        name=name,
        train=Split(torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(np.ascontiguousarray(ytr))),
        test=Split(torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])),
        val=val,
        num_classes=NUM_CLASSES[name],
        scale=scale,
        mean=mean,
        std=std,
        source=source,
    )


def data_file(name: str) -> str | None:
    """The name of the official file a data set is read from (``mnist_rotation_new.zip``, the CIFAR archives);
    None for the embedded data sets."""
    if name == "mnist-rot":
        from . import mnist_rot

        return mnist_rot.ZIP_NAME
    if name.startswith("cifar"):
        from . import cifar

        return cifar.SPECS[name]["archive"]
    return None


__all__ = [
    "DATASETS",
    "data_file",
    "file_digest",
    "NUM_CLASSES",
    "DataSet",
    "Split",
    "DataError",
    "BatchLoader",
    "load_dataset",
    "subsample_per_class",
]
