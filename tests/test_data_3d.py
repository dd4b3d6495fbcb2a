"""The embedded 3-D benchmark digits3d (voxel digits under seeded SO(3) rotations) and the MedMNIST 3-D reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e4net.data import DataError, digits, digits3d, load_dataset
from e4net.groups import OH, O


def test_rotations_are_uniform_elements_of_so3_and_seeded():
    r = digits3d.random_rotations(4000, 1)
    assert np.allclose(np.einsum("nij,nkj->nik", r, r), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(r), 1.0)
    assert np.array_equal(r, digits3d.random_rotations(4000, 1)) and not np.array_equal(
        r, digits3d.random_rotations(4000, 2)
    )
    # Haar: E[R] = 0 and the rotation angle has density (1 - cos t) / pi, so E[trace R] = 0 and E[cos t] = -1/2
    assert np.abs(r.mean(0)).max() < 0.05
    cos_t = (np.trace(r, axis1=1, axis2=2) - 1) / 2
    assert abs(cos_t.mean() + 0.5) < 0.03


def test_rotation_by_a_cube_element_is_its_exact_permutation():
    """The interpolating rotation and the group's index permutation agree on the 24 (48) exact rotations: one
    convention for coordinates, axes and direction."""
    cube = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    for G in (O, OH):
        for g in G.elements():
            m = torch.tensor(G.matrix(g), dtype=torch.float64).expand(2, 3, 3)
            torch.testing.assert_close(digits3d.rotate_volumes(cube, m), G.act_on_signal(cube, g), atol=1e-5, rtol=0)


def test_embedding_keeps_the_ink_inside_the_cube():
    img = torch.ones(1, 1, 28, 28)
    img[..., :4, :] = img[..., -4:, :] = img[..., :, :4] = img[..., :, -4:] = 0  # MNIST's 20 x 20 box of ink
    cube = digits3d.embed(img)
    assert cube.shape == (1, 1, 16, 16, 16) and cube.sum() == 10 * 10 * digits3d.SLAB
    rot = digits3d.rotate_volumes(cube.expand(16, -1, -1, -1, -1), torch.from_numpy(digits3d.random_rotations(16, 3)))
    assert torch.allclose(rot.sum((1, 2, 3, 4)), cube.sum(), rtol=0.08)  # trilinear resampling keeps the mass


def test_digits3d_split_and_loading():
    a = digits3d.load()
    assert a["x_train"].shape == (4000, 1, 16, 16, 16) and a["x_test"].shape == (1000, 1, 16, 16, 16)
    assert a["x_train"].dtype == np.uint8 and a["x_train"].max() > 200
    d2 = digits.load()
    assert np.array_equal(a["train_index"], d2["train_index"]) and np.array_equal(a["test_index"], d2["test_index"])
    assert np.array_equal(a["y_train"], d2["y_train"]) and np.array_equal(a["y_test"], d2["y_test"])
    ds = load_dataset("digits3d")
    assert ds.input_shape == (1, 16, 16, 16) and ds.num_classes == 10 and len(ds.test) == 1000
    x = ds.prepare(ds.train.x[:2])
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def _write_medmnist(path, n=(5, 2, 3), size=4, classes=3):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (m, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (m, 1))
    np.savez_compressed(path, **arrays)
    return arrays


def test_medmnist3d_reader(tmp_path):
    arrays = _write_medmnist(tmp_path / "organmnist3d.npz")
    out = digits3d.load_medmnist3d(tmp_path / "organmnist3d.npz")
    for split in ("train", "val", "test"):
        assert out[f"x_{split}"].shape == (len(arrays[f"{split}_labels"]), 1, 4, 4, 4)
        assert np.array_equal(out[f"x_{split}"][:, 0], arrays[f"{split}_images"])
        assert (
            np.array_equal(out[f"y_{split}"], arrays[f"{split}_labels"][:, 0]) and out[f"y_{split}"].dtype == np.int64
        )
    with pytest.raises(DataError, match="does not exist"):
        digits3d.load_medmnist3d(tmp_path / "missing.npz")
    bad = dict(arrays)
    del bad["val_labels"]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DataError, match="lacks val_labels"):
        digits3d.load_medmnist3d(tmp_path / "bad.npz")
    bad = dict(arrays, test_images=arrays["test_images"][:, 0])
    np.savez(tmp_path / "bad2.npz", **bad)
    with pytest.raises(DataError, match=r"test_images must be \(N, D, H, W\)"):
        digits3d.load_medmnist3d(tmp_path / "bad2.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        digits3d.load_medmnist3d(tmp_path / "junk.npz")
