"""MNIST-rot archives that are damaged *inside* (a member whose bytes fail their CRC or do not inflate) and paths
with non-ASCII characters: each gives the parsed data or one clean "is corrupt" :class:`DataError`, never a raw
``zlib.error`` / ``zipfile.BadZipFile``.

``test_data.py`` covers a zip that is not a zip and a truncated one; here the archive's directory is intact and only
a member's data is bad, so the error appears while the ``.amat`` is read.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from e4net.cli.main import main
from e4net.data import DataError, load_dataset, mnist_rot
from e4net.errors import E4NetError

NON_ASCII = "données-ü-数据 ☃"  # accents, CJK, a symbol and a space


@pytest.fixture(autouse=True)
def _small_rows_private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_rot, "ROWS", {mnist_rot.TRAIN_FILE: 6, mnist_rot.TEST_FILE: 4})


def _amat(rows: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, 784)).astype(np.float32).round(4)
    y = rng.integers(0, 10, rows)
    text = "\n".join(" ".join(f"{v:.4g}" for v in row) + f" {lab}" for row, lab in zip(x, y)) + "\n"
    return text.encode(), x, y


def _write_zip(path: Path, compression: int, prefix: str = "") -> np.ndarray:
    """A small MNIST-rot zip (6 + 4 rows); returns the training pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tr, xtr, _ = _amat(6, 0)
    te, _, _ = _amat(4, 1)
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(prefix + mnist_rot.TRAIN_FILE, tr)
        z.writestr(prefix + mnist_rot.TEST_FILE, te)
    return xtr


def _damage_member_data(path: Path, member: str, damage) -> None:
    """Rewrite the data bytes of ``member`` in place with ``damage(data) -> data`` (same length), leaving the
    archive's directory and every header intact."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    data = bytes(raw[start : start + info.compress_size])
    new = damage(data)
    assert len(new) == len(data)
    raw[start : start + len(data)] = new
    path.write_bytes(bytes(raw))


def _flip_middle_byte(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1 :]


def _invalid_deflate(data: bytes) -> bytes:
    # a deflate block header with block type 3 (reserved): "invalid block type" when inflated
    return b"\xff" * len(data)


DAMAGES = {
    # stored member, one byte changed: zipfile raises BadZipFile("Bad CRC-32 for file ...")
    "crc": (zipfile.ZIP_STORED, _flip_middle_byte, zipfile.BadZipFile, "Bad CRC-32"),
    # deflated member that does not inflate: zlib.error("Error -3 while decompressing data: invalid block type")
    "zlib": (zipfile.ZIP_DEFLATED, _invalid_deflate, zlib.error, "invalid block type"),
}


@pytest.mark.parametrize("member", [mnist_rot.TRAIN_FILE, mnist_rot.TEST_FILE], ids=["train", "test"])
@pytest.mark.parametrize("kind", list(DAMAGES))
def test_damaged_member_is_one_clean_error(tmp_path, kind, member):
    compression, damage, raw_error, raw_message = DAMAGES[kind]
    path = tmp_path / "mnist" / mnist_rot.ZIP_NAME
    _write_zip(path, compression)
    _damage_member_data(path, member, damage)
    # the premise: the archive opens and lists its members, and reading the damaged one raises the raw error
    with zipfile.ZipFile(path) as z, pytest.raises(raw_error, match=raw_message):
        assert set(z.namelist()) == {mnist_rot.TRAIN_FILE, mnist_rot.TEST_FILE}
        z.read(member)
    with pytest.raises(DataError) as info, pytest.warns(UserWarning, match="not the official"):
        load_dataset("mnist-rot", path.parent)
    msg = str(info.value)
    assert msg.startswith(f"{path} is corrupt: cannot read {member} (") and raw_message in msg and "\n" not in msg
    assert info.value.__suppress_context__  # one clean error: the raw one is not chained in a traceback
    assert not list((tmp_path / "cache").glob("mnist-rot-*")) and not (path.parent / ".e4net-cache").exists()


def test_damaged_member_via_the_cli_is_one_line(tmp_path, capsys):
    path = tmp_path / "mnist" / mnist_rot.ZIP_NAME
    _write_zip(path, zipfile.ZIP_DEFLATED)
    _damage_member_data(path, mnist_rot.TRAIN_FILE, _invalid_deflate)
    rc = main(["train", "--dataset", "mnist-rot", "--data-root", str(path.parent), "--out", str(tmp_path / "run"),
               "--epochs", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and f"{path} is corrupt: cannot read {mnist_rot.TRAIN_FILE}" in lines[0], err


@pytest.mark.parametrize("layout", ["zip", "zip-member-in-non-ascii-folder", "extracted", "extracted-subfolder"])
def test_non_ascii_paths_work(tmp_path, layout):
    root = tmp_path / NON_ASCII
    if layout.startswith("zip"):
        prefix = f"{NON_ASCII}/" if layout == "zip-member-in-non-ascii-folder" else ""
        xtr = _write_zip(root / mnist_rot.ZIP_NAME, zipfile.ZIP_DEFLATED, prefix)
        with pytest.warns(UserWarning, match="not the official"):
            ds = load_dataset("mnist-rot", root)
    else:
        folder = root / "mnist_rotation_new" if layout == "extracted-subfolder" else root
        xtr = _write_zip(tmp_path / "tmp.zip", zipfile.ZIP_DEFLATED)
        folder.mkdir(parents=True)
        with zipfile.ZipFile(tmp_path / "tmp.zip") as z:
            z.extractall(folder)
        ds = load_dataset("mnist-rot", root)
    assert ds.train.x.shape == (6, 1, 28, 28) and ds.test.x.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(ds.train.x.reshape(6, -1).numpy(), xtr, rtol=1e-3)
    again = load_dataset("mnist-rot", root) if layout.startswith("extracted") else None
    if again is not None:  # the binary cache is found again under the non-ASCII path
        assert np.array_equal(again.train.x.numpy(), ds.train.x.numpy())


def test_non_ascii_path_of_a_damaged_zip_is_named_in_the_error(tmp_path):
    path = tmp_path / NON_ASCII / mnist_rot.ZIP_NAME
    _write_zip(path, zipfile.ZIP_STORED)
    _damage_member_data(path, mnist_rot.TEST_FILE, _flip_middle_byte)
    with pytest.raises(DataError, match="is corrupt: cannot read") as info, pytest.warns(UserWarning):
        load_dataset("mnist-rot", path.parent)
    assert str(path) in str(info.value)


def test_non_ascii_bytes_inside_the_amat_are_corrupt(tmp_path):
    root = tmp_path / NON_ASCII
    tr, _, _ = _amat(6, 0)
    te, _, _ = _amat(4, 1)
    root.mkdir()
    (root / mnist_rot.TRAIN_FILE).write_bytes(tr.replace(b" ", " é ".encode(), 1))
    (root / mnist_rot.TEST_FILE).write_bytes(te)
    with pytest.raises(E4NetError, match=rf"{mnist_rot.TRAIN_FILE} is not a text .amat file \(non-ASCII bytes\)"):
        load_dataset("mnist-rot", root)
    shutil.rmtree(root)
