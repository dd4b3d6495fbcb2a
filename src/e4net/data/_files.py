"""File plumbing for the data sets: checksums, downloads (atomic), a binary cache keyed by the source file, zip
reading. The general helpers (atomic writes, plain warnings) are in :mod:`e4net.io`.

* :func:`file_digest` -- md5 / sha1 / sha256 of a file, streamed.
* :func:`verify_file` -- compare against the official checksum (or a user-supplied one); refuse or warn.
* :func:`download` -- fetch a URL with :mod:`urllib` into ``DIR/name`` atomically (temporary file + ``os.replace``),
  verifying the checksum before the file appears under its final name.
* :func:`cached_arrays` -- a ``.npz`` copy of parsed arrays, beside the source if that folder is writable, else in
  :func:`e4net.io.cache_root` (``$E4NET_CACHE``, ``~/.cache/e4net``); invalidated when the source's size, mtime or
  first MiB change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import E4NetError
from ..io import PlainWarning, atomic_write_bytes, cache_root

CACHE_VERSION = 1


class DataError(E4NetError):
    """A data file is missing, corrupt or not the expected one."""


class DataWarning(PlainWarning):
    """A data file is used although it is not the official one (or was not verified); the CLI shows it as one
    plain line (:func:`e4net.io.install_plain_warnings`)."""


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _algorithm_for(hexdigest: str) -> str:
    return {32: "md5", 40: "sha1", 64: "sha256"}.get(len(hexdigest), "")


def check_checksum_arg(checksum: str | None) -> str | None:
    """Validate a user-supplied ``--checksum`` (an md5, sha1 or sha256 hex digest)."""
    if checksum is None:
        return None
    c = checksum.strip().lower()
    if not _algorithm_for(c) or any(ch not in "0123456789abcdef" for ch in c):
        raise DataError(f"--checksum {checksum!r} is not an md5 (32), sha1 (40) or sha256 (64) hex digest")
    return c


def verify_file(
    path: Path,
    expected_md5: str,
    *,
    verify: bool = True,
    checksum: str | None = None,
    what: str = "",
    refuse: bool = True,
) -> bool:
    """Check ``path`` against the official md5 ``expected_md5`` or a user-supplied ``checksum``.

    Returns True when it matches. On a mismatch: raises :class:`DataError` when ``verify and refuse``; otherwise
    warns (on stderr) and returns False. ``verify=False`` (``--no-verify``) skips the check with a warning.
    """
    what = what or path.name
    if not verify:
        _warn(f"warning: not verifying the checksum of {path} (--no-verify)")
        return False
    expected = [expected_md5] + ([checksum] if checksum else [])
    seen: dict[str, str] = {}
    for want in expected:
        alg = _algorithm_for(want)
        if alg not in seen:
            seen[alg] = known_digest(path, alg)
        if seen[alg] == want:
            return True
    got = ", ".join(f"{alg} {digest}" for alg, digest in seen.items())
    msg = f"{path} is not the official {what}: its checksum ({got}) differs from the official md5 {expected_md5}" + (
        f" and from --checksum {checksum}" if checksum else ""
    )
    if refuse:
        raise DataError(
            msg + ". The file is corrupt or a different version; download it again (--download), or pass "
            "--no-verify (or --checksum <its digest>) to use it anyway."
        )
    _warn("warning: " + msg + "; using it anyway (results may not be comparable with the paper's)")
    return False


def _warn(msg: str) -> None:
    warnings.warn(DataWarning(msg), stacklevel=3)


def download(url: str, dest: Path, expected_md5: str, *, verify: bool = True, checksum: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically; with ``verify`` a file whose checksum differs is not kept."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, "wb") as f:
                total = int(resp.headers.get("Content-Length") or 0) or None
                try:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False)
                except ImportError:  # pragma: no cover
                    bar = None
                while block := resp.read(1 << 20):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
                if bar is not None:
                    bar.close()
                f.flush()
                os.fsync(f.fileno())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"could not download {url}: {exc}") from None
        if verify:
            try:
                verify_file(tmp, expected_md5, verify=True, checksum=checksum, what=f"download of {url}")
            except DataError:
                got = file_digest(tmp, "md5")
                raise DataError(
                    f"the download of {url} has md5 {got}, not the official {expected_md5}; it was not kept "
                    f"(a proxy or a changed file?). Retry, or pass --no-verify to keep it anyway."
                ) from None
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


# ---- binary cache of parsed arrays -------------------------------------------------------------------------


def cache_dir() -> Path:
    """The data sets' cache: :func:`e4net.io.cache_root` itself."""
    return cache_root()


def source_fingerprint(paths: list[Path]) -> dict:
    """Size, mtime and sha256 of the first MiB of each source file: changes when a source changes."""
    fp = []
    for p in paths:
        st = p.stat()
        with open(p, "rb") as f:
            head = hashlib.sha256(f.read(1 << 20)).hexdigest()
        fp.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head})
    return {"version": CACHE_VERSION, "sources": fp}


def _writable(folder: Path) -> bool:
    """A folder we may write into: writable for us *and* not marked read-only (root ignores the mode bits)."""
    try:
        return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def _cache_candidates(sources: list[Path], name: str, beside: bool = True) -> list[Path]:
    key = hashlib.sha256(json.dumps([str(p.resolve()) for p in sources]).encode()).hexdigest()[:16]
    out = []
    if beside and _writable(sources[0].parent):
        out.append(sources[0].parent / ".e4net-cache" / f"{name}.bin")
    out.append(cache_dir() / f"{name}-{key}.bin")
    return out


def _save_arrays(f, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    np.save(f, np.array(json.dumps({**meta, "keys": list(arrays)})), allow_pickle=False)
    for k in arrays:
        np.save(f, np.ascontiguousarray(arrays[k]), allow_pickle=False)


def _load_arrays(path: Path, meta: dict) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file made from the same sources, else None. Plain ``.npy`` records, read straight
    into memory (no zip, no CRC), so loading is bound by memory bandwidth."""
    with open(path, "rb") as f:
        head = json.loads(str(np.load(f, allow_pickle=False)))
        keys = head.pop("keys")
        if head != meta:
            return None
        return {k: np.load(f, allow_pickle=False) for k in keys}


def cached_arrays(
    sources: list[Path],
    name: str,
    build: Callable[[], dict[str, np.ndarray]],
    extra: dict | None = None,
    beside: bool = True,
) -> dict[str, np.ndarray]:
    """Return ``build()``'s arrays, from a binary cache when one made from the same source files exists.

    The cache holds the arrays as consecutive ``.npy`` records after a JSON header (the sources' fingerprint and
    ``extra``); it is written atomically, beside the sources (``.e4net-cache/``) when that folder is writable (and
    not marked read-only), else under :func:`cache_dir`. A stale or unreadable cache is rebuilt.
    """
    meta = {**source_fingerprint(sources), "extra": extra or {}}
    candidates = _cache_candidates(sources, name, beside)
    for c in candidates:
        if c.is_file():
            try:
                arrays = _load_arrays(c, meta)
                if arrays is not None:
                    return arrays
            except Exception:  # noqa: BLE001 - a damaged cache is simply rebuilt
                pass
    arrays = build()
    for c in candidates:
        try:
            atomic_write_bytes(c, lambda f: _save_arrays(f, meta, arrays))
            break
        except OSError:
            continue
    return arrays


def known_digest(path: Path, algorithm: str) -> str:
    """``file_digest`` remembered in ``cache_dir()/digests.json`` per (path, size, mtime): verifying a 170 MB archive
    on every run costs nothing after the first."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{algorithm}"
    store = cache_dir() / "digests.json"
    try:
        table = json.loads(store.read_text())
    except (OSError, ValueError):
        table = {}
    if key in table:
        return table[key]
    digest = file_digest(path, algorithm)
    table[key] = digest
    try:
        data = json.dumps(table, indent=0).encode()
        atomic_write_bytes(store, lambda f: f.write(data))
    except OSError:
        pass
    return digest


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path} is not a readable zip archive ({exc}); the file is corrupt or truncated") from None
