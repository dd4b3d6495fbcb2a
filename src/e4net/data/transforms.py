"""Image transforms for the data sets: the MNIST-rot rotation protocol and per-channel normalisation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rotate(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image ``(N, C, H, W)`` by its angle (degrees, counter-clockwise as displayed) about its centre,
    bilinear interpolation, on the same canvas (zeros outside): the MNIST-rot protocol (Larochelle et al. 2007).

    Implemented with ``affine_grid`` / ``grid_sample`` (``align_corners=False``: the centre of the canvas is fixed).
    """
    if images.dim() != 4 or angles_deg.shape != images.shape[:1]:
        raise ValueError(
            f"rotate: expected images (N, C, H, W) and N angles, got {tuple(images.shape)}, {tuple(angles_deg.shape)}"
        )
    theta = angles_deg.to(torch.float64) * (math.pi / 180.0)
    c, s = torch.cos(theta), torch.sin(theta)
    # Output pixel p samples the input at R^-1 p; grid coordinates are (x right, y down), so a counter-clockwise
    # rotation on screen is [[c, s], [-s, c]] applied to output coordinates.
    mat = torch.zeros(len(theta), 2, 3, dtype=torch.float64)
    mat[:, 0, 0], mat[:, 0, 1] = c, -s
    mat[:, 1, 0], mat[:, 1, 1] = s, c
    mat = mat.to(images.dtype)
    grid = F.affine_grid(mat, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def channel_stats(x: np.ndarray, scale: float) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``x (N, C, H, W)`` after multiplying by ``scale`` (Sec. 5.2's normalisation)."""
    means, stds = [], []
    for c in range(x.shape[1]):
        xc = x[:, c]
        m = float(xc.mean(dtype=np.float64))
        sq = (
            float(np.square(xc, dtype=np.float64).mean())
            if xc.dtype != np.uint8
            else float(np.bincount(xc.reshape(-1), minlength=256) @ (np.arange(256.0) ** 2) / xc.size)
        )
        means.append(m * scale)
        stds.append(float(np.sqrt(max(sq - m * m, 0.0))) * scale)
    return means, stds
