"""The embedded 3-D benchmark ``digits3d``: the 5,000 embedded MNIST digits as thin slabs in a voxel cube, each turned
by a seeded uniform random rotation of SO(3) (the MNIST-rot protocol in 3-D); and a reader of MedMNIST's 3-D files.

Each upright digit of :mod:`e4net.data.digits` (28 x 28, values in [0, 1]) is averaged 2 x 2 down to 14 x 14 and
placed in the middle of a ``SIZE^3`` cube (``SIZE = 16``) as a slab ``SLAB = 2`` voxels thick (the two middle
planes of the depth axis). The cube is then rotated about its centre by a rotation ``R`` drawn uniformly from SO(3)
(a normalised 4-D Gaussian as a unit quaternion): voxel ``q`` (centred coordinates) reads the unrotated cube at
``R^T q`` with trilinear interpolation (``grid_sample``), zero outside. The digit's ink lies within a radius of
about 7 voxels of the centre, so no rotation pushes it out of the cube. Rotations are continuous, not only the
cube's 24: a network exactly invariant to O is not invariant to them, as E4-Net on ``digits`` is not invariant to
all planar angles. Volumes are stored as uint8 (``x / 255``), ``(N, 1, 16, 16, 16)``.

The train / test split is that of ``digits`` (the same rows of the CSV: 4,000 / 1,000, 400 / 100 per class); the
rotations depend only on ``DATA_SEED``. Built once (about a second), then read from the binary cache.

:func:`load_medmnist3d` reads the MedMNIST 3-D ``.npz`` format (OrganMNIST3D and its siblings: ``train_images``
``(N, 28, 28, 28)`` uint8, ``train_labels`` ``(N, 1)``, and ``val_`` / ``test_`` alike) for users who have such a
file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import digits
from ._files import DataError, cache_dir, cached_arrays

__all__ = ["DATA_SEED", "SIZE", "SLAB", "load", "random_rotations", "embed", "rotate_volumes", "load_medmnist3d"]

DATA_SEED = 20211207  # fixed: the data set is part of the benchmark, not of a run
SIZE = 16  # the side of the voxel cube
SLAB = 2  # the thickness of the digit's slab, in voxels


def random_rotations(n: int, seed: int) -> np.ndarray:
    """``n`` rotation matrices ``(n, 3, 3)`` drawn uniformly (Haar) from SO(3): unit quaternions from a normalised
    4-D standard Gaussian, seeded."""
    q = np.random.default_rng(seed).standard_normal((n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


def embed(images: torch.Tensor, size: int = SIZE, slab: int = SLAB) -> torch.Tensor:
    """Upright digits ``(N, 1, 28, 28)`` -> cubes ``(N, 1, size, size, size)``: the 2x2-averaged 14 x 14 digit in the
    ``slab`` middle planes of the depth axis, centred in height and width."""
    small = F.avg_pool2d(images.float(), 2)  # (N, 1, 14, 14)
    side = small.shape[-1]
    if side > size:
        raise ValueError(f"a {side} x {side} digit does not fit a cube of side {size}")
    out = torch.zeros(images.shape[0], 1, size, size, size)
    lo, z0 = (size - side) // 2, (size - slab) // 2
    out[:, :, z0 : z0 + slab, lo : lo + side, lo : lo + side] = small.unsqueeze(2)
    return out


def rotate_volumes(volumes: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """``(N, C, S, S, S)`` cubes rotated about their centres by ``rotations (N, 3, 3)`` (acting on (D, H, W)
    coordinates): ``out(q) = in(R^T q)``, trilinear interpolation, zero outside."""
    n, _, d, h, w = volumes.shape
    axes = [torch.arange(m, dtype=torch.float64) - (m - 1) / 2 for m in (d, h, w)]
    q = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # (V, 3) centred (d, h, w)
    src = torch.einsum("nji,vj->nvi", rotations.double(), q)  # R^T q for every volume: (N, V, 3)
    half = torch.tensor([(m - 1) / 2 for m in (d, h, w)], dtype=torch.float64)
    grid = (src / half).flip(-1).view(n, d, h, w, 3)  # grid_sample wants (x, y, z) = (w, h, d), in [-1, 1]
    return F.grid_sample(volumes.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=True)


def load() -> dict[str, np.ndarray]:
    """Arrays ``x_train (4000, 1, 16, 16, 16) uint8``, ``y_train``, ``x_test (1000, ...)``, ``y_test`` (plus the
    ``rotations (5000, 3, 3)`` and the rows' ``train_index`` / ``test_index``, those of ``digits``). Cached."""
    src = digits.csv_path()
    key = (str(src), str(cache_dir()))
    if key not in _MEMO:
        extra = {"data_seed": DATA_SEED, "size": SIZE, "slab": SLAB, "format": 1}
        _MEMO.clear()
        _MEMO[key] = cached_arrays([src], "digits3d", lambda: _build(src), extra=extra, beside=False)
    return dict(_MEMO[key])


_MEMO: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def _build(path: Path) -> dict[str, np.ndarray]:
    x, y = digits.parse(path)
    split = digits.load()
    rotations = random_rotations(len(x), DATA_SEED)
    chunks = []
    for i in range(0, len(x), 500):  # bounded memory
        cube = embed(torch.from_numpy(x[i : i + 500]))
        chunks.append(rotate_volumes(cube, torch.from_numpy(rotations[i : i + 500])))
    vol = (torch.cat(chunks).clamp_(0.0, 1.0) * 255.0).round_().to(torch.uint8).numpy()
    tr, te = split["train_index"], split["test_index"]
    return {
        "x_train": vol[tr], "y_train": y[tr], "x_test": vol[te], "y_test": y[te],
        "rotations": rotations.astype(np.float32), "train_index": tr, "test_index": te,
    }  # fmt: skip


MEDMNIST_SPLITS = ("train", "val", "test")


def load_medmnist3d(path: str | Path) -> dict[str, np.ndarray]:
    """A MedMNIST 3-D ``.npz`` (e.g. ``organmnist3d.npz``) as ``x_train (N, 1, D, H, W) uint8``, ``y_train (N,)
    int64``, ``x_val``, ``y_val``, ``x_test``, ``y_test``. One clear :class:`DataError` for a missing file, a missing
    key or inconsistent shapes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MedMNIST 3-D file {path} does not exist")
    try:
        with np.load(path) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    out = {}
    for split in MEDMNIST_SPLITS:
        ik, lk = f"{split}_images", f"{split}_labels"
        missing = [k for k in (ik, lk) if k not in raw]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)} (MedMNIST 3-D keys: train_/val_/test_ images, labels)")
        images, labels = raw[ik], raw[lk]
        if images.ndim != 4 or labels.reshape(len(labels), -1).shape[1] != 1 or len(images) != len(labels):
            raise DataError(
                f"{path}: {ik} must be (N, D, H, W) and {lk} (N, 1) with the same N, got {images.shape} and "
                f"{labels.shape}"
            )
        out[f"x_{split}"] = np.ascontiguousarray(images[:, None].astype(np.uint8))
        out[f"y_{split}"] = labels.reshape(-1).astype(np.int64)
    return out
