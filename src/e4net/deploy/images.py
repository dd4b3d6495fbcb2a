"""Image files (PNG, JPEG) as a model's input batch: :func:`read_images`.

Each file becomes one ``(C, H, W)`` float32 input the way the data sets of :mod:`e4net.data` make theirs: pixel
values scaled to [0, 1], then the training run's per-channel normalisation ``(x - mean) / std`` when it has one.

* Channels: a grey image feeds a grey model; for an RGB model it is repeated on the three channels. A colour image
  feeds an RGB model; for a grey model only when it is grey in fact (R, G, B within :data:`GREY_TOLERANCE`; their
  mean is used), else an error. An alpha channel
  is dropped when the image is fully opaque, else an error. Palette images are expanded first.
* Size: an image of the model's size is used as it is; one of the same aspect ratio is resized to it (bilinear, with
  antialiasing when shrinking, as PIL does); another aspect ratio is refused (crop it first).

Every problem is one :class:`~e4net.errors.E4NetError` naming the file: missing, unreadable, not PNG / JPEG, wrong
channels, wrong shape. A model whose inputs are not images (the 3-D models' voxel volumes ``(C, D, H, W)``) is one
E4NetError before any file is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import E4NetError

__all__ = ["FORMATS", "read_image", "read_images"]

#: The file formats :func:`read_images` accepts (PIL's names).
FORMATS = ("PNG", "JPEG")
#: An RGB image is grey when no channel is further than this from the pixel's mean (JPEG's chroma rounding).
GREY_TOLERANCE = 3 / 255


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise E4NetError(f"{path}: no such file")
    if not path.is_file():
        raise E4NetError(f"{path}: not a file")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise E4NetError(f"{path}: not an image file (expected {' or '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise E4NetError(f"{path}: cannot read the image ({exc})") from None
    if img.format not in FORMATS:
        raise E4NetError(f"{path}: a {img.format} image; expected {' or '.join(FORMATS)}")
    return img


def _pixels(img, path: Path) -> np.ndarray:
    """``(H, W, C)`` float64 in [0, 1] with C = 1 (grey) or 3 (RGB); alpha dropped when fully opaque."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "1":
        img = img.convert("L")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)[..., None] / (
            65535.0 if img.mode.startswith("I;16") else _int_scale(img)
        )
    elif img.mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(img, dtype=np.float64).reshape(img.height, img.width, -1) / 255.0
    elif img.mode in ("CMYK", "YCbCr"):
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    else:
        raise E4NetError(f"{path}: unsupported pixel mode {img.mode!r} (expected grey or RGB)")
    if img.mode in ("LA", "RGBA"):
        if (arr[..., -1] < 1.0).any():
            raise E4NetError(f"{path}: the image has transparent pixels (an alpha channel); flatten it first")
        arr = arr[..., :-1]
    return arr


def _int_scale(img) -> float:
    """The full scale of a 32-bit integer image: its largest value (at least 1)."""
    return float(max(1, np.asarray(img).max()))


def read_image(
    path: str | Path,
    input_shape: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """The image file ``path`` as one ``(C, H, W)`` float32 input of a model taking ``input_shape`` (module
    docstring); ``mean`` / ``std``: the per-channel normalisation of the training run (None: values in [0, 1])."""
    from PIL import Image

    path = Path(path)
    if len(input_shape) != 3:
        raise E4NetError(
            f"image files (PNG / JPEG) are inputs of models on images (C, H, W); this model takes "
            f"{'x'.join(map(str, input_shape))} inputs (voxel volumes C x D x H x W of a 3-D model), which no image "
            "file gives"
        )
    channels, height, width = (int(v) for v in input_shape)
    if channels not in (1, 3):
        raise E4NetError(f"images can feed models with 1 (grey) or 3 (RGB) channels, not {channels}")
    img = _open(path)
    arr = _pixels(img, path)
    h, w, c = arr.shape
    if c == 3 and channels == 1:
        if float(np.abs(arr - arr.mean(-1, keepdims=True)).max()) > GREY_TOLERANCE:
            raise E4NetError(f"{path}: a colour (RGB) image, but the model takes grey images (1 channel)")
        arr = arr.mean(-1, keepdims=True)
    elif c == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=2)
    if (h, w) != (height, width):
        if h * width != w * height:
            raise E4NetError(
                f"{path}: a {w}x{h} image (width x height), but the model takes {width}x{height} images; only the "
                "same aspect ratio is resized, crop it first"
            )
        planes = [
            np.asarray(
                Image.fromarray(arr[..., i].astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
            )
            for i in range(channels)
        ]
        arr = np.stack(planes, -1).astype(np.float64)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
    if mean is not None and std is not None:
        x = (x - torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)) / torch.tensor(std, dtype=torch.float32).view(
            -1, 1, 1
        )
    return x


def read_images(
    paths: Sequence[str | Path],
    input_shape: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """The files ``paths`` as one ``(N, C, H, W)`` batch (:func:`read_image` each; the first bad file raises)."""
    if not paths:
        raise E4NetError("no image files given")
    return torch.stack([read_image(p, input_shape, mean, std) for p in paths])
