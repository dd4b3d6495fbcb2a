"""CIFAR-10 / CIFAR-100 (Sec. 5.2, Table 4, Fig. 2) from their canonical python archives.

``cifar-10-python.tar.gz`` (folder ``cifar-10-batches-py``: ``data_batch_1..5``, ``test_batch``) and
``cifar-100-python.tar.gz`` (folder ``cifar-100-python``: ``train``, ``test`` with ``b'fine_labels'``), or the
extracted folders. The archives are verified against the official md5 sums; a different file is refused unless
``--no-verify`` (or ``--checksum <its digest>``) is given. A binary copy is cached like MNIST-rot's.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ._files import DataError, cached_arrays, check_checksum_arg, download, verify_file

SPECS = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": b"labels",
        "classes": 10,
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": b"fine_labels",
        "classes": 100,
    },
}


def _unpickle(raw: bytes, name: str) -> dict:
    try:
        d = pickle.load(io.BytesIO(raw), encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt batch file
        raise DataError(f"{name} is corrupt: it is not a CIFAR python batch ({exc})") from None
    if not isinstance(d, dict) or b"data" not in d:
        raise DataError(f"{name} is corrupt: it is not a CIFAR python batch (no b'data')")
    return d


def _batches(spec: dict, names: list[str], read) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n in names:
        d = _unpickle(read(n), n)
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d.get(spec["label_key"], []), dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
            raise DataError(f"{n} is corrupt: expected data (N, 3072) and N labels, got {x.shape} and {len(y)}")
        if len(y) and (y.min() < 0 or y.max() >= spec["classes"]):
            raise DataError(f"{n} is corrupt: labels outside 0..{spec['classes'] - 1}")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def find(name: str, root: Path, download_: bool = False, verify: bool = True, checksum: str | None = None) -> Path:
    spec = SPECS[name]
    root = Path(root)
    checksum = check_checksum_arg(checksum)
    archive = root / spec["archive"]
    folder = root / spec["folder"]
    if archive.is_file():
        verify_file(archive, spec["md5"], verify=verify, checksum=checksum, what=f"{name} archive")
        return archive
    if folder.is_dir():
        return folder
    if not download_:
        raise DataError(
            f"{name} not found in {root}: expected {spec['archive']} or the folder {spec['folder']}/. "
            f"Pass --download to fetch it from {spec['url']}, or --data-root to point at it."
        )
    return download(spec["url"], archive, spec["md5"], verify=verify, checksum=checksum)


def load(
    name: str, root: Path, download_: bool = False, verify: bool = True, checksum: str | None = None
) -> dict[str, np.ndarray]:
    """Arrays ``x_train (N, 3, 32, 32) uint8``, ``y_train``, ``x_test``, ``y_test``."""
    spec = SPECS[name]
    source = find(name, root, download_, verify, checksum)

    def build() -> dict[str, np.ndarray]:
        if source.is_dir():

            def read(n: str) -> bytes:
                p = source / n
                if not p.is_file():
                    raise DataError(f"{source} is incomplete: {n} is missing")
                return p.read_bytes()

        else:
            try:
                tf = tarfile.open(source, "r:gz")
                files = {m.name.rsplit("/", 1)[-1]: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
                tf.close()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DataError(f"{source} is corrupt: cannot read the archive ({exc})") from None

            def read(n: str) -> bytes:
                if n not in files:
                    raise DataError(f"{source} does not contain {spec['folder']}/{n}; it is not the {name} archive")
                return files[n]

        xtr, ytr = _batches(spec, spec["train"], read)
        xte, yte = _batches(spec, spec["test"], read)
        return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}

    sources = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    return cached_arrays(sources, name, build)
