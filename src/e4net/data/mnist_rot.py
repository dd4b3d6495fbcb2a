"""MNIST-rot (Larochelle et al. 2007), the benchmark of the paper's Sec. 5.1 / Tables 1-3, in its official form.

``mnist_rotation_new.zip`` holds ``mnist_all_rotation_normalized_float_train_valid.amat`` (12,000 rows: the first
10,000 are the paper's training split, the last 2,000 its validation split) and
``mnist_all_rotation_normalized_float_test.amat`` (50,000 rows). Each row is 784 floats in [0, 1] (28 x 28,
row-major) then the label. ``root`` may hold the zip or the two extracted files. Parsing the text takes
~10 s, so a binary copy is cached (:func:`e4net.data._files.cached_arrays`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._files import DataError, cached_arrays, check_checksum_arg, download, open_zip, verify_file

URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
ZIP_NAME = "mnist_rotation_new.zip"
# The md5 of the official zip, as used by public loaders of it (e.g. those following tscohen/gconv_experiments).
MD5 = "0f9a947ff3d30e95cd685462cbf3b847"
TRAIN_FILE = "mnist_all_rotation_normalized_float_train_valid.amat"
TEST_FILE = "mnist_all_rotation_normalized_float_test.amat"
ROWS = {TRAIN_FILE: 12000, TEST_FILE: 50000}


def parse_amat(text: bytes | str, name: str, rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``.amat`` text: ``rows`` lines of 784 floats then a label -> ``x (N, 1, 28, 28) float32``, ``y int64``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise DataError(f"{name} is not a text .amat file (non-ASCII bytes); the file is corrupt") from None
    n_lines = sum(1 for line in text.splitlines() if line.strip())
    flat = np.fromstring(text, dtype=np.float32, sep=" ")
    if n_lines == 0 or flat.size != n_lines * 785 or (rows is not None and n_lines != rows):
        raise DataError(
            f"{name} is corrupt: expected {rows or 'N'} rows of 785 numbers (784 pixels then the label), "
            f"found {n_lines} lines and {flat.size} numbers"
        )
    table = flat.reshape(n_lines, 785)
    labels = table[:, -1]
    if not np.all((labels >= 0) & (labels <= 9) & (labels == np.round(labels))):
        raise DataError(f"{name} is corrupt: its last column holds values that are not the labels 0-9")
    x = np.ascontiguousarray(table[:, :-1]).reshape(-1, 1, 28, 28)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} is corrupt: it holds non-finite pixel values")
    return x, labels.astype(np.int64)


def find(root: Path, download_: bool = False, verify: bool = True, checksum: str | None = None) -> list[Path]:
    """The source files under ``root``: ``[zip]`` or ``[train.amat, test.amat]``; downloads the zip if asked."""
    root = Path(root)
    checksum = check_checksum_arg(checksum)
    zpath = root / ZIP_NAME
    for folder in (root, root / "mnist_rotation_new"):
        if (folder / TRAIN_FILE).is_file() and (folder / TEST_FILE).is_file() and not zpath.is_file():
            return [folder / TRAIN_FILE, folder / TEST_FILE]
    if not zpath.is_file():
        if not download_:
            raise DataError(
                f"MNIST-rot not found in {root}: expected {ZIP_NAME} (or its two .amat files). "
                f"Pass --download to fetch it from {URL}, or --data-root to point at it."
            )
        download(URL, zpath, MD5, verify=verify, checksum=checksum)
    else:
        # A local zip that is not the official one (e.g. the replica in ../shared/data) is used with a warning: the
        # rows are still checked one by one when parsed.
        verify_file(zpath, MD5, verify=verify, checksum=checksum, what="MNIST-rot zip", refuse=False)
    return [zpath]


def load(
    root: Path, download_: bool = False, verify: bool = True, checksum: str | None = None
) -> dict[str, np.ndarray]:
    """Arrays ``x_train (12000, 1, 28, 28)``, ``y_train``, ``x_test (50000, ...)``, ``y_test`` (float32 in [0, 1])."""
    sources = find(root, download_, verify, checksum)

    def build() -> dict[str, np.ndarray]:
        if len(sources) == 1:
            with open_zip(sources[0]) as z:
                names = set(z.namelist())
                texts = {}
                for member in (TRAIN_FILE, TEST_FILE):
                    match = [n for n in names if n == member or n.endswith("/" + member)]
                    if not match:
                        raise DataError(f"{sources[0]} does not contain {member}; it is not the MNIST-rot zip")
                    try:
                        texts[member] = z.read(match[0])
                    except Exception as exc:  # noqa: BLE001 - zlib / CRC errors of a damaged archive
                        raise DataError(f"{sources[0]} is corrupt: cannot read {member} ({exc})") from None
        else:
            texts = {p.name: p.read_bytes() for p in sources}
        xtr, ytr = parse_amat(texts[TRAIN_FILE], TRAIN_FILE, ROWS[TRAIN_FILE])
        xte, yte = parse_amat(texts[TEST_FILE], TEST_FILE, ROWS[TEST_FILE])
        return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}

    return cached_arrays(sources, "mnist-rot", build)
