"""Data sets: the rotation protocol, the embedded digits, per-class subsampling, MNIST-rot / CIFAR parsing,
the binary cache and its invalidation, checksum verification, downloads (local HTTP server), corrupt files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from e4net.data import (
    BatchLoader,
    DataError,
    Split,
    cifar,
    digits,
    load_dataset,
    mnist_rot,
    subsample_per_class,
)
from e4net.data.transforms import rotate
from e4net.groups import P4


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "cache"))


# ---- rotation protocol -------------------------------------------------------------------------------------


def test_rotate_by_right_angles_is_the_group_action():
    x = torch.rand(3, 2, 28, 28)
    for i in range(4):
        got = rotate(x, torch.full((3,), 90.0 * i))
        torch.testing.assert_close(got, P4.act_on_signal(x, P4.element(i)), atol=1e-5, rtol=0)


def test_rotate_keeps_canvas_and_mass_of_a_centred_blob():
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((yy - 13.5) ** 2 + (xx - 16) ** 2) / 4)[None, None]
    out = rotate(blob, torch.tensor([37.0]))
    assert out.shape == blob.shape
    assert abs(out.sum() - blob.sum()) / blob.sum() < 0.02  # bilinear keeps the mass of an interior blob
    assert not torch.allclose(out, blob, atol=1e-3)


# ---- embedded digits -----------------------------------------------------------------------------------------


def test_digits_split_and_determinism():
    a, b = digits.load(), digits.load()
    assert a["x_train"].shape == (4000, 1, 28, 28) and a["x_test"].shape == (1000, 1, 28, 28)
    assert np.bincount(a["y_train"]).tolist() == [400] * 10 and np.bincount(a["y_test"]).tolist() == [100] * 10
    assert np.array_equal(a["x_train"], b["x_train"]) and np.array_equal(a["y_test"], b["y_test"])
    assert a["x_train"].min() >= 0 and a["x_train"].max() <= 1 and a["x_train"].dtype == np.float32
    ang = a["angles"]
    assert ang.min() >= 0 and ang.max() < 360 and ang.std() > 80  # uniform over [0, 360)
    # The stored images are the raw digits rotated by their angles (not the raw digits themselves).
    raw = np.loadtxt(digits.csv_path(), delimiter=",", dtype=np.float32)[:, :784].reshape(-1, 1, 28, 28) / 255.0
    i = a["train_index"][:5]
    again = rotate(torch.from_numpy(raw[i]), torch.from_numpy(ang[i].astype(np.float64))).clamp(0, 1).numpy()
    np.testing.assert_allclose(a["x_train"][:5], again, atol=1e-5)
    assert np.abs(a["x_train"][:5] - raw[i]).max() > 0.5


def test_digits_dataset_object():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.mean is None
    assert len(ds.train) == 4000 and len(ds.test) == 1000


def test_corrupt_digits_file(tmp_path):
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt"):
        digits.load(bad)


# ---- subsampling ---------------------------------------------------------------------------------------------


def test_subsample_per_class_is_seeded_and_balanced():
    y = np.repeat(np.arange(10), 50)
    a, b, c = (subsample_per_class(y, 7, s) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(y[a]).tolist() == [7] * 10 and len(set(a.tolist())) == 70
    with pytest.raises(DataError, match="only 50"):
        subsample_per_class(y, 51, 0)


def test_train_per_class_and_val_split():
    ds = load_dataset("digits", train_per_class=30, seed=3, val_size=500)
    assert len(ds.train) == 300 and np.bincount(ds.train.y.numpy()).tolist() == [30] * 10
    assert len(ds.val) == 500 and len(ds.test) == 1000


# ---- loader --------------------------------------------------------------------------------------------------


def test_loader_orders_and_shards():
    split = Split(torch.arange(23.0).view(23, 1, 1, 1), torch.arange(23))
    full = BatchLoader(split, 8, shuffle=True, seed=5)
    ys = torch.cat([y for _, y in full.batches(2)])
    assert sorted(ys.tolist()) == list(range(23)) and len(full) == 3
    assert torch.equal(ys, torch.cat([y for _, y in full.batches(2)]))  # same epoch -> same order
    assert not torch.equal(ys, torch.cat([y for _, y in full.batches(3)]))
    assert torch.equal(torch.cat([y for _, y in full.batches(2, start=1)]), ys[8:])  # resume mid-epoch
    shards = [list(BatchLoader(split, 8, shuffle=True, seed=5, rank=r, world_size=2).batches(2)) for r in (0, 1)]
    merged = torch.cat([torch.cat([shards[0][i][1], shards[1][i][1]]) for i in range(3)])
    assert torch.equal(merged, ys)  # the ranks' chunks make up the global batches
    assert len(BatchLoader(split, 8, shuffle=False, limit=2)) == 2


# ---- MNIST-rot from a small file in the official format ------------------------------------------------------


def _amat(rows: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, 784)).astype(np.float32).round(4)
    y = rng.integers(0, 10, rows)
    text = "\n".join(" ".join(f"{v:.4g}" for v in row) + f" {lab}" for row, lab in zip(x, y)) + "\n"
    return text.encode(), x, y


@pytest.fixture
def small_mnist_rot(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_rot, "ROWS", {mnist_rot.TRAIN_FILE: 12, mnist_rot.TEST_FILE: 5})
    root = tmp_path / "mnist"
    root.mkdir()
    tr, xtr, ytr = _amat(12, 0)
    te, _, _ = _amat(5, 1)
    with zipfile.ZipFile(root / mnist_rot.ZIP_NAME, "w") as z:
        z.writestr(mnist_rot.TRAIN_FILE, tr)
        z.writestr(mnist_rot.TEST_FILE, te)
    return root, xtr, ytr


def test_mnist_rot_zip_parse_and_cache(small_mnist_rot, monkeypatch):
    root, xtr, ytr = small_mnist_rot
    with pytest.warns(UserWarning, match="not the official"):
        ds = load_dataset("mnist-rot", root)
    assert ds.train.x.shape == (12, 1, 28, 28) and ds.test.x.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(ds.train.x.reshape(12, -1).numpy(), xtr, rtol=1e-3)
    assert ds.train.y.tolist() == ytr.tolist()
    assert list((root / ".e4net-cache").iterdir())  # cached beside the (writable) source
    # Second load: from the cache, the text is not parsed again.
    monkeypatch.setattr(mnist_rot, "parse_amat", lambda *a: pytest.fail("parsed again despite the cache"))
    with pytest.warns(UserWarning):
        again = load_dataset("mnist-rot", root, val_size=2)
    assert torch.equal(again.val.x, ds.train.x[-2:])  # the validation split is the tail (official protocol)


def test_mnist_rot_cache_invalidated_when_source_changes(small_mnist_rot):
    root, _, _ = small_mnist_rot
    with pytest.warns(UserWarning):
        first = load_dataset("mnist-rot", root)
    tr, xtr2, _ = _amat(12, 7)
    te, _, _ = _amat(5, 8)
    time.sleep(0.01)
    with zipfile.ZipFile(root / mnist_rot.ZIP_NAME, "w") as z:
        z.writestr(mnist_rot.TRAIN_FILE, tr)
        z.writestr(mnist_rot.TEST_FILE, te)
    with pytest.warns(UserWarning):
        second = load_dataset("mnist-rot", root)
    assert not torch.equal(first.train.x, second.train.x)
    np.testing.assert_allclose(second.train.x.reshape(12, -1).numpy(), xtr2, rtol=1e-3)


def test_mnist_rot_extracted_files_and_readonly_cache(small_mnist_rot, tmp_path, monkeypatch):
    root, xtr, _ = small_mnist_rot
    ext = tmp_path / "extracted"
    ext.mkdir()
    with zipfile.ZipFile(root / mnist_rot.ZIP_NAME) as z:
        z.extractall(ext)
    ext.chmod(0o555)
    try:
        ds = load_dataset("mnist-rot", ext)
        assert not (ext / ".e4net-cache").exists()  # read-only folder: cached in $E4NET_CACHE instead
        assert list((tmp_path / "cache").glob("mnist-rot-*.bin"))
        np.testing.assert_allclose(ds.train.x.reshape(12, -1).numpy(), xtr, rtol=1e-3)
    finally:
        ext.chmod(0o755)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt|not a readable zip"),
        (lambda p: p.write_bytes(b"garbage"), "not a readable zip"),
    ],
)
def test_mnist_rot_corrupt_zip(small_mnist_rot, damage, message):
    root, _, _ = small_mnist_rot
    damage(root / mnist_rot.ZIP_NAME)
    with pytest.raises(DataError, match=message), pytest.warns(UserWarning):
        load_dataset("mnist-rot", root)


def test_mnist_rot_bad_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_rot, "ROWS", {mnist_rot.TRAIN_FILE: 3, mnist_rot.TEST_FILE: 2})
    tr, _, _ = _amat(3, 0)
    te, _, _ = _amat(2, 0)
    (tmp_path / mnist_rot.TRAIN_FILE).write_bytes(tr.rsplit(b" ", 1)[0] + b"\n")  # last label missing
    (tmp_path / mnist_rot.TEST_FILE).write_bytes(te)
    with pytest.raises(DataError, match="expected 3 rows of 785 numbers"):
        load_dataset("mnist-rot", tmp_path)
    (tmp_path / mnist_rot.TRAIN_FILE).write_bytes(tr.replace(b"\n", b" 11\n", 1).replace(b" 11\n", b"\n"))
    bad_label = tr.splitlines()
    bad_label[0] = bad_label[0].rsplit(b" ", 1)[0] + b" 12"
    (tmp_path / mnist_rot.TRAIN_FILE).write_bytes(b"\n".join(bad_label) + b"\n")
    with pytest.raises(DataError, match="labels 0-9"):
        load_dataset("mnist-rot", tmp_path)


def test_missing_data_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_dataset("mnist-rot", tmp_path)
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(DataError, match="--data-root is needed"):
        load_dataset("cifar100")


# ---- CIFAR in the canonical python format ---------------------------------------------------------------------


def _cifar100_archive(path: Path, n_train: int = 20, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    xte = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    with tarfile.open(path, "w:gz") as tf:
        for name, x in (("train", xtr), ("test", xte)):
            d = {
                b"data": x,
                b"fine_labels": [int(i) for i in rng.integers(0, 100, len(x))],
                b"coarse_labels": [0] * len(x),
            }
            raw = pickle.dumps(d)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return xtr, xte


def test_cifar100_checksum_refusal_no_verify_and_checksum(tmp_path):
    xtr, _ = _cifar100_archive(tmp_path / "cifar-100-python.tar.gz")
    with pytest.raises(DataError, match="not the official cifar100 archive.*--no-verify"):
        load_dataset("cifar100", tmp_path)
    with pytest.warns(UserWarning, match="--no-verify"):
        ds = load_dataset("cifar100", tmp_path, verify=False)
    assert ds.num_classes == 100 and ds.train.x.dtype == torch.uint8 and ds.train.x.shape == (20, 3, 32, 32)
    assert np.array_equal(ds.train.x.reshape(20, -1).numpy(), xtr)
    sha = hashlib.sha256((tmp_path / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    ds2 = load_dataset("cifar100", tmp_path, checksum=sha)  # a known non-official copy: accepted silently
    assert torch.equal(ds2.train.x, ds.train.x)
    x = ds.prepare(ds.train.x)  # per-channel normalisation with the training statistics
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    with pytest.raises(DataError, match="not an md5"):
        load_dataset("cifar100", tmp_path, checksum="xyz")


def test_cifar_official_checksum_accepted(tmp_path, monkeypatch):
    archive = tmp_path / "cifar-100-python.tar.gz"
    _cifar100_archive(archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar.SPECS["cifar100"], "md5", md5)
    assert len(load_dataset("cifar100", tmp_path).test) == 10


def test_cifar_corrupt_archive_and_folder(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    _cifar100_archive(archive)
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt"), pytest.warns(UserWarning):
        load_dataset("cifar100", tmp_path, verify=False)
    archive.unlink()
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"not a pickle")
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar100", tmp_path)


# ---- downloads from a local HTTP server ----------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_writes_atomically(small_mnist_rot, http_root, tmp_path, monkeypatch):
    src_root, xtr, _ = small_mnist_rot
    served, base = http_root
    payload = (src_root / mnist_rot.ZIP_NAME).read_bytes()
    (served / mnist_rot.ZIP_NAME).write_bytes(payload)
    monkeypatch.setattr(mnist_rot, "URL", f"{base}/{mnist_rot.ZIP_NAME}")
    dest = tmp_path / "dl"
    # Wrong checksum: refused, nothing left behind.
    with pytest.raises(DataError, match="not the official .*not kept"):
        load_dataset("mnist-rot", dest, download=True)
    assert not list(dest.iterdir())
    # Right checksum: downloaded, verified, loaded.
    monkeypatch.setattr(mnist_rot, "MD5", hashlib.md5(payload).hexdigest())
    ds = load_dataset("mnist-rot", dest, download=True)
    assert (dest / mnist_rot.ZIP_NAME).read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == [".e4net-cache", mnist_rot.ZIP_NAME]  # no temporary files
    np.testing.assert_allclose(ds.train.x.reshape(12, -1).numpy(), xtr, rtol=1e-3)


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch, http_root):
    _, base = http_root
    monkeypatch.setattr(mnist_rot, "URL", f"{base}/missing.zip")
    with pytest.raises(DataError, match="could not download"):
        load_dataset("mnist-rot", tmp_path, download=True)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*part"))


# ---- the replicas in ../shared/data ----------------------------------------------------------------------------


@pytest.mark.data
def test_mnist_rot_replica(shared_data, capsys):
    with pytest.warns(UserWarning, match="not the official"):  # the replica's checksum is not the official one
        t0 = time.perf_counter()
        ds = load_dataset("mnist-rot", shared_data, val_size=2000)
        t1 = time.perf_counter()
        load_dataset("mnist-rot", shared_data)
        t2 = time.perf_counter()
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10000, 2000, 50000)
    assert ds.train.x.min() >= 0 and ds.train.x.max() <= 1
    assert set(np.unique(ds.test.y.numpy()).tolist()) == set(range(10))
    assert not (shared_data / ".e4net-cache").exists()  # the read-only replica folder is never written to
    with capsys.disabled():
        print(f"\nMNIST-rot replica: first load {t1 - t0:.2f}s (parse + cache), second {t2 - t1:.2f}s (cache)")


@pytest.mark.data
def test_cifar10_replica_needs_no_verify(shared_data):
    with pytest.raises(DataError, match="not the official cifar10 archive"):
        load_dataset("cifar10", shared_data)
    with pytest.warns(UserWarning, match="--no-verify"):
        ds = load_dataset("cifar10", shared_data, verify=False, train_per_class=100, seed=1)
    assert len(ds.train) == 1000 and len(ds.test) == 10000 and ds.input_shape == (3, 32, 32)
    assert np.bincount(ds.train.y.numpy()).tolist() == [100] * 10


def test_cifar_download_from_local_server(tmp_path, http_root, monkeypatch):
    served, base = http_root
    xtr, _ = _cifar100_archive(served / "cifar-100-python.tar.gz")
    md5 = hashlib.md5((served / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(cifar.SPECS["cifar100"], "url", f"{base}/cifar-100-python.tar.gz")
    monkeypatch.setitem(cifar.SPECS["cifar100"], "md5", md5)
    ds = load_dataset("cifar100", tmp_path / "new", download=True)
    assert np.array_equal(ds.train.x.reshape(len(xtr), -1).numpy(), xtr)
    assert (tmp_path / "new" / "cifar-100-python.tar.gz").is_file()
