"""Data files damaged *inside*, and paths with non-ASCII characters: each gives the parsed data or one clean
"is corrupt" :class:`DataError`, never a raw ``zlib.error`` / ``zipfile.BadZipFile`` / ``KeyError``.

* MNIST-rot zips whose directory is intact but a member's bytes fail their CRC or do not inflate (``test_data.py``
  covers a file that is not a zip and a truncated one), and non-ASCII zip / ``.amat`` paths;
* CIFAR batches in the official format (Python 2 pickles) and damaged batches;
* a download that fails verification.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from e4net.cli.main import main
from e4net.data import DataError, cifar, load_dataset, mnist_rot
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


# ---- CIFAR python batches: the Python 2 format of the official files, and damaged batches ----------------------


def _py2(value) -> bytes:
    """``value`` pickled as Python 2 pickles it (protocol 2): a str is a SHORT_BINSTRING, as in the official batches,
    which Python 3 reads as ``bytes`` only with ``encoding="bytes"``."""
    if isinstance(value, bytes):
        return b"U" + bytes([len(value)]) + value
    if isinstance(value, int):
        return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + value.to_bytes(4, "little", signed=True)
    if isinstance(value, list):
        return b"](" + b"".join(_py2(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in value.items()) + b"u"
    raise TypeError(type(value))


def _cifar10_folder(root: Path, batches: dict[str, bytes] | None = None) -> dict[str, tuple[list, list]]:
    """An extracted CIFAR-10 folder of 1-image Python 2 batches (labels 0..5), ``batches`` replacing some files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    content = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        pixels = [(7 * i + p) % 256 for p in range(3072)]
        content[name] = ([pixels], [i % 10])
        raw = b"\x80\x02" + _py2({b"batch_label": b"x", b"data": [pixels], b"labels": [i % 10]}) + b"."
        (folder / name).write_bytes((batches or {}).get(name, raw))
    return content


def test_cifar_python2_batches_load(tmp_path):
    content = _cifar10_folder(tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape == (5, 3, 32, 32) and ds.test.x.shape == (1, 3, 32, 32)
    assert ds.train.y.dtype == torch.int64 and ds.train.y.tolist() == [0, 1, 2, 3, 4] and ds.test.y.tolist() == [5]
    assert ds.train.x[2].flatten().tolist() == content["data_batch_3"][0][0]  # channel-major, row-major


def _py3_batch(data, labels, key=b"labels") -> bytes:
    return pickle.dumps({b"data": data, key: labels})


GOOD = np.zeros((1, 3072), dtype=np.uint8)


@pytest.mark.parametrize(
    "batch, message",
    [
        (pickle.dumps([1, 2]), r"^test_batch is corrupt: it is not a CIFAR python batch \(no b'data'\)$"),
        (pickle.dumps({b"labels": [1]}), r"^test_batch is corrupt: it is not a CIFAR python batch \(no b'data'\)$"),
        (pickle.dumps(5), r"^test_batch is corrupt: it is not a CIFAR python batch \(no b'data'\)$"),
        (b"\x80\x02garbage", r"^test_batch is corrupt: it is not a CIFAR python batch \("),
        (
            _py3_batch(GOOD, [], key=b"fine"),
            r"^test_batch is corrupt: expected data \(N, 3072\) and N labels, got \(1, 3072\) and 0$",
        ),
        (_py3_batch(np.zeros((2, 3000), np.uint8), [1, 2]), r"got \(2, 3000\) and 2$"),
        (_py3_batch(np.zeros(3072, np.uint8), [1]), r"got \(3072,\) and 1$"),
        (_py3_batch(GOOD, [1, 2]), r"got \(1, 3072\) and 2$"),
        (_py3_batch(GOOD, [-1]), r"^test_batch is corrupt: labels outside 0\.\.9$"),
        (_py3_batch(GOOD, [10]), r"^test_batch is corrupt: labels outside 0\.\.9$"),
    ],
    ids=["list", "no-data", "int", "garbage", "no-labels", "short-rows", "1-d", "more-labels", "label-1", "label10"],
)
def test_cifar_damaged_batch_is_one_clean_error(tmp_path, batch, message):
    _cifar10_folder(tmp_path, {"test_batch": batch})
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", tmp_path)


def test_cifar_labels_at_the_ends_of_the_range_and_int32_arrays(tmp_path):
    labels = np.array([0], dtype=np.int32)
    _cifar10_folder(tmp_path, {"test_batch": _py3_batch(GOOD, labels), "data_batch_1": _py3_batch(GOOD, [9])})
    ds = load_dataset("cifar10", tmp_path)
    assert ds.test.y.tolist() == [0] and ds.test.y.dtype == torch.int64 and ds.train.y[0].item() == 9


# ---- downloads: file:// URLs exercise the same code without a server --------------------------------------------


def test_download_verifies_by_default_and_makes_the_folder(tmp_path):
    from e4net.data._files import download, file_digest

    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "new" / "nested" / "file.bin"
    with pytest.raises(DataError, match="has md5 [0-9a-f]{32}, not the official 0{32}; it was not kept"):
        download(src.as_uri(), dest, "0" * 32)
    assert not dest.exists() and not [p for p in dest.parent.iterdir()]  # no partial file left
    assert download(src.as_uri(), dest, file_digest(src)) == dest and dest.read_bytes() == b"payload"


class _Bar:
    """Stands in for tqdm's bar in :func:`download`: records its arguments, updates and closing."""

    made: list[_Bar] = []

    def __init__(self, **kw):
        self.kw, self.updates, self.closed = kw, [], False
        _Bar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


def test_download_writes_a_hidden_part_file_beside_the_target(tmp_path, monkeypatch):
    """Atomic: the bytes go to ``.NAME.*.part`` in the target's folder (same file system), then ``os.replace``;
    the request has a timeout; the progress bar counts bytes of the announced size in 1 MiB blocks."""
    import urllib.request

    import tqdm

    from e4net.data import _files

    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * (2 * 2**20 + 5))
    replaced, opened = [], []
    real_replace, real_urlopen = _files.os.replace, urllib.request.urlopen
    monkeypatch.setattr(_files.os, "replace", lambda a, b: replaced.append((Path(a), Path(b))) or real_replace(a, b))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, **kw: opened.append(kw) or real_urlopen(url, **kw))
    monkeypatch.setattr(tqdm, "tqdm", _Bar)
    monkeypatch.setattr(_Bar, "made", [])
    dest = tmp_path / "data" / "file.bin"
    _files.download(src.as_uri(), dest, _files.file_digest(src))
    ((part, target),) = [r for r in replaced if r[1] == dest]  # (os.replace also writes the digest cache)
    assert part.parent == dest.parent
    assert part.name.startswith(".file.bin.") and part.name.endswith(".part") and not part.exists()
    assert dest.read_bytes() == src.read_bytes() and opened == [{"timeout": 60}]
    (bar,) = _Bar.made
    assert bar.kw == {
        "total": 2 * 2**20 + 5,
        "unit": "B",
        "unit_scale": True,
        "desc": "download file.bin",
        "leave": False,
    }
    assert bar.updates == [2**20, 2**20, 5] and bar.closed


# ---- CIFAR: defaults, downloads passing verify / checksum on, archives with other member paths ---------------------


def _cifar10_archive(path: Path, prefix: str = "cifar-10-batches-py/", skip: str = "") -> None:
    folder = path.parent / "build"
    _cifar10_folder(folder)
    with tarfile.open(path, "w:gz") as tf:
        for f in sorted((folder / "cifar-10-batches-py").iterdir()):
            if f.name != skip:
                tf.add(f, arcname=prefix + f.name)
    shutil.rmtree(folder)


def test_cifar_defaults_neither_download_nor_skip_verification(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 not found in .*Pass --download to fetch it from https://"):
        cifar.load("cifar10", tmp_path)
    _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="is not the official cifar10 archive"):
        cifar.load("cifar10", tmp_path)


@pytest.mark.parametrize(
    "prefix", ["cifar-10-batches-py/", "./cifar-10-batches-py/", ""], ids=["folder", "dot", "flat"]
)
def test_cifar_archive_member_paths(tmp_path, prefix):
    _cifar10_archive(tmp_path / "cifar-10-python.tar.gz", prefix)
    with pytest.warns(UserWarning, match="not verifying"):
        arrays = cifar.load("cifar10", tmp_path, verify=False)
    assert arrays["x_train"].shape == (5, 3, 32, 32) and arrays["y_test"].tolist() == [5]


def test_cifar_incomplete_archive_and_folder(tmp_path):
    _cifar10_archive(tmp_path / "cifar-10-python.tar.gz", skip="test_batch")
    missing = r"does not contain cifar-10-batches-py/test_batch; it is not the cifar10 archive$"
    with pytest.raises(DataError, match=missing), pytest.warns(UserWarning, match="not verifying"):
        cifar.load("cifar10", tmp_path, verify=False)
    other = tmp_path / "other"
    _cifar10_folder(other)
    (other / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py is incomplete: data_batch_3 is missing$"):
        cifar.load("cifar10", other)
    (other / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"")
    assert not (other / "cifar-10-batches-py" / ".e4net-cache").exists()


def test_cifar_cache_is_named_after_the_data_set(tmp_path):
    _cifar10_folder(tmp_path)
    cifar.load("cifar10", tmp_path)
    assert (tmp_path / "cifar-10-batches-py" / ".e4net-cache" / "cifar10.bin").is_file()


def test_cifar_download_passes_verify_and_checksum_on(tmp_path, monkeypatch):
    from e4net.data._files import file_digest

    served = tmp_path / "served" / "cifar-10-python.tar.gz"
    served.parent.mkdir()
    _cifar10_archive(served)
    monkeypatch.setitem(cifar.SPECS["cifar10"], "url", served.as_uri())
    with pytest.raises(DataError, match="it was not kept"):  # verified by default: not the official archive
        load_dataset("cifar10", tmp_path / "a", download=True)
    assert len(load_dataset("cifar10", tmp_path / "b", download=True, verify=False).train) == 5  # kept unverified
    sha = file_digest(served, "sha256")
    assert len(load_dataset("cifar10", tmp_path / "c", download=True, checksum=sha).train) == 5


# ---- the .amat parser and MNIST-rot's file lookup -----------------------------------------------------------------


def test_parse_amat_by_hand():
    tr, x, y = _amat(2, 3)
    xs, ys = mnist_rot.parse_amat(tr, "t.amat", None)  # any number of rows when none is expected
    assert xs.dtype == np.float32 and ys.dtype == np.int64 and xs.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(xs.reshape(2, -1), x, rtol=1e-3)
    assert ys.tolist() == y.tolist()
    one, _ = mnist_rot.parse_amat(tr.splitlines()[0], "t.amat", None)  # a single row (bytes without newline)
    assert one.shape == (1, 1, 28, 28)
    assert mnist_rot.parse_amat(tr.decode(), "t.amat", 2)[1].tolist() == y.tolist()  # str input too
    bad = [
        (
            b"",
            None,
            r"^t\.amat is corrupt: expected N rows of 785 numbers \(784 pixels then the label\), found 0 lines and 0 numbers$",
        ),
        (tr, 3, r"^t\.amat is corrupt: expected 3 rows of 785 numbers .* found 2 lines and 1570 numbers$"),
        (
            tr.rsplit(b" ", 1)[0] + b" 10\n",
            2,
            r"^t\.amat is corrupt: its last column holds values that are not the labels 0-9$",
        ),
        (tr.rsplit(b" ", 1)[0] + b" 2.5\n", 2, r"labels 0-9$"),
        (b"nan " + tr.split(b" ", 1)[1], 2, r"^t\.amat is corrupt: it holds non-finite pixel values$"),
    ]
    for text, rows, message in bad:
        with pytest.raises(DataError, match=message):
            mnist_rot.parse_amat(text, "t.amat", rows)


def test_mnist_rot_find_defaults_and_lookup(tmp_path):
    with pytest.raises(DataError, match=r"MNIST-rot not found in .*Pass --download to fetch it from http"):
        mnist_rot.find(tmp_path)  # no download unless asked
    (tmp_path / mnist_rot.TRAIN_FILE).write_bytes(b"1 2\n")  # one of the two extracted files only: not found
    with pytest.raises(DataError, match="MNIST-rot not found"):
        mnist_rot.find(tmp_path)
    zpath = tmp_path / mnist_rot.ZIP_NAME
    _write_zip(zpath, zipfile.ZIP_DEFLATED)
    (tmp_path / mnist_rot.TEST_FILE).write_bytes(b"1 2\n")
    with pytest.warns(UserWarning, match="not the official MNIST-rot zip"):
        assert mnist_rot.find(tmp_path) == [zpath]  # verified by default; the zip wins over extracted files
    sha = hashlib.sha256(zpath.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mnist_rot.find(tmp_path, checksum=sha.upper()) == [zpath]  # a known copy: accepted silently
    with pytest.raises(DataError, match="--checksum 'xyz' is not an md5"):
        mnist_rot.find(tmp_path, checksum="xyz")


def test_data_warnings_point_at_the_loader(tmp_path):
    """The "not the official file" warning is attributed to the data set's loader (``find``), not to the plumbing
    (mutation testing wraps every function in a trampoline, so the test names what it must not be)."""
    _write_zip(tmp_path / mnist_rot.ZIP_NAME, zipfile.ZIP_STORED)
    with pytest.warns(UserWarning, match="not the official") as caught:
        mnist_rot.find(tmp_path)
    assert Path(caught[0].filename).name not in ("_files.py", "warnings.py")  # mnist_rot.py (or a wrapper around it)


def test_a_cache_holding_pickled_objects_is_rebuilt(tmp_path):
    """The binary cache is read without unpickling: a cache file whose records are object arrays (pickles, which
    could run code) is not trusted but rebuilt from the source."""
    from e4net.data import _files

    xtr = _write_zip(tmp_path / mnist_rot.ZIP_NAME, zipfile.ZIP_DEFLATED)
    with pytest.warns(UserWarning):
        good = mnist_rot.load(tmp_path)
    (cache,) = (tmp_path / ".e4net-cache").iterdir()
    meta = {**_files.source_fingerprint([tmp_path / mnist_rot.ZIP_NAME]), "extra": {}}
    keys = list(good)
    with open(cache, "wb") as f:
        np.save(f, np.array(json.dumps({**meta, "keys": keys})), allow_pickle=False)
        for _ in keys:
            np.save(f, np.array([{"not": "data"}], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning):
        again = mnist_rot.load(tmp_path)
    assert again["x_train"].dtype == np.float32
    np.testing.assert_allclose(again["x_train"].reshape(6, -1), xtr, rtol=1e-3)


# ---- checksums and the digest cache --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_verify_file_names_each_digest(tmp_path, algorithm):
    from e4net.data._files import file_digest, verify_file

    path = tmp_path / "file.bin"
    path.write_bytes(b"content")
    other = "ab" * (20 if algorithm == "sha1" else 32)
    n = len(other)
    message = (
        rf"file\.bin is not the official file\.bin: its checksum \(md5 [0-9a-f]{{32}}, {algorithm} [0-9a-f]{{{n}}}\) "
    )
    with pytest.raises(DataError, match=message + r"differs from the official md5 0{32} and from --checksum " + other):
        verify_file(path, "0" * 32, checksum=other)  # verified (and refused) by default
    assert verify_file(path, "0" * 32, checksum=file_digest(path, algorithm).upper().lower()) is True
    with pytest.warns(UserWarning, match="not verifying the checksum"):
        assert verify_file(path, "0" * 32, verify=False) is False
    assert file_digest(path) == hashlib.md5(b"content").hexdigest()  # md5 by default


def test_checksum_argument_lengths(tmp_path):
    from e4net.data._files import check_checksum_arg

    for good in ("a" * 32, "B" * 40, "c" * 64):
        assert check_checksum_arg(f" {good} ") == good.lower()
    for bad in ("a" * 31, "a" * 41, "a" * 10, "g" * 32):
        with pytest.raises(DataError, match="is not an md5 \\(32\\), sha1 \\(40\\) or sha256 \\(64\\) hex digest"):
            check_checksum_arg(bad)


def test_known_digests_are_remembered_per_file(tmp_path, monkeypatch):
    from e4net.data._files import cache_dir, file_digest, known_digest

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert known_digest(a, "md5") == file_digest(a) and known_digest(b, "md5") == file_digest(b)
    store = json.loads((cache_dir() / "digests.json").read_text())
    assert sorted(store.values()) == sorted([file_digest(a), file_digest(b)])
    from e4net.data import _files

    monkeypatch.setattr(_files, "file_digest", lambda *args: pytest.fail("digest computed again"))
    assert known_digest(a, "md5") == hashlib.md5(b"a").hexdigest()  # remembered, not recomputed
    assert known_digest(b, "md5") == hashlib.md5(b"b").hexdigest()


def test_mnist_rot_defaults_and_arguments_are_passed_on(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="Pass --download"):
        mnist_rot.load(tmp_path / "empty")  # no download by default
    zpath = tmp_path / "local" / mnist_rot.ZIP_NAME
    _write_zip(zpath, zipfile.ZIP_DEFLATED)
    with pytest.warns(UserWarning, match="is not the official MNIST-rot zip"):
        mnist_rot.load(zpath.parent)  # verified by default (and used anyway)
    with pytest.warns(UserWarning, match="not verifying"):
        mnist_rot.find(zpath.parent, verify=False)
    sha = hashlib.sha256(zpath.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mnist_rot.load(zpath.parent, checksum=sha)  # the checksum reaches the verification: silent
    # downloads get verify and checksum too
    monkeypatch.setattr(mnist_rot, "URL", zpath.as_uri())
    with pytest.raises(DataError, match="it was not kept"):
        mnist_rot.find(tmp_path / "d1", download_=True)
    assert mnist_rot.find(tmp_path / "d2", download_=True, verify=False) == [tmp_path / "d2" / mnist_rot.ZIP_NAME]
    assert mnist_rot.find(tmp_path / "d3", download_=True, checksum=sha) == [tmp_path / "d3" / mnist_rot.ZIP_NAME]


def test_mnist_rot_zip_content_errors_name_the_member(tmp_path):
    zpath = tmp_path / mnist_rot.ZIP_NAME
    tr, _, _ = _amat(6, 0)
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr(mnist_rot.TRAIN_FILE, tr)
    with pytest.raises(
        DataError, match=rf"^{zpath} does not contain {mnist_rot.TEST_FILE}; it is not the MNIST-rot zip$"
    ):
        mnist_rot.load(tmp_path, checksum=hashlib.sha256(zpath.read_bytes()).hexdigest())
    te, _, _ = _amat(3, 1)  # 3 test rows where 4 are expected
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr(mnist_rot.TRAIN_FILE, tr)
        z.writestr(mnist_rot.TEST_FILE, te)
    with pytest.raises(DataError, match=rf"^{mnist_rot.TEST_FILE} is corrupt: expected 4 rows"):
        mnist_rot.load(tmp_path, checksum=hashlib.sha256(zpath.read_bytes()).hexdigest())


def test_verify_file_messages_in_full(tmp_path):
    from e4net.data._files import verify_file

    path = tmp_path / "file.bin"
    path.write_bytes(b"content")
    head = (
        rf"^{path} is not the official thing: its checksum \(md5 [0-9a-f]{{32}}\) differs from the official md5 0{{32}}"
    )
    refusal = head + (
        r"\. The file is corrupt or a different version; download it again \(--download\), or pass --no-verify "
        r"\(or --checksum <its digest>\) to use it anyway\.$"
    )
    with pytest.raises(DataError, match=refusal):
        verify_file(path, "0" * 32, what="thing")
    warning = r"^warning: " + head[1:] + r"; using it anyway \(results may not be comparable with the paper's\)$"
    with pytest.warns(UserWarning, match=warning):
        assert verify_file(path, "0" * 32, what="thing", refuse=False) is False


def test_cifar_find_defaults(tmp_path):
    with pytest.raises(DataError, match="Pass --download"):
        cifar.find("cifar10", tmp_path)  # no download unless asked
    _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="is not the official cifar10 archive"):
        cifar.find("cifar10", tmp_path)  # verified unless told not to
