"""File and message plumbing shared by the whole package (bottom layer: imports nothing from e4net).

* :func:`atomic_write_bytes` -- write a file so that a crash or a full disk never leaves a half-written file under
  its final name: a temporary file in the same folder, fsync, ``os.replace``; the previous file survives a failure.
* :func:`write_json` -- an indented JSON file, written atomically; :func:`append_jsonl` -- one durable JSON line.
  Both write non-finite floats as ``null`` (``NaN`` is not JSON), so a diverged run still leaves valid files.
* :func:`cache_root` -- the one folder where e4net keeps what it can rebuild (parsed data sets, compiled kernels).
* :class:`PlainWarning` and :func:`install_plain_warnings` -- warnings meant for the user of the command line
  (e.g. a data file that is not the official one), shown as one plain line on stderr instead of Python's
  ``file:line: Category: message`` format.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "cache_root",
    "atomic_write_bytes",
    "write_json",
    "append_jsonl",
    "json_safe",
    "PlainWarning",
    "install_plain_warnings",
]


CACHE_ENV = "E4NET_CACHE"
"""The environment variable naming :func:`cache_root` (``E4NET_CACHE_DIR``, the compiled kernels' name for it up to
the ninth session, is still read after it)."""


def cache_root() -> Path:
    """The folder where e4net keeps what it can rebuild, for every part of the package: ``$E4NET_CACHE``, else
    ``$E4NET_CACHE_DIR``, else ``$XDG_CACHE_HOME/e4net``, else ``~/.cache/e4net``. It holds the parsed data sets'
    binary copies and checksums (:mod:`e4net.data`) and, under ``numba-kernels``, the generated numba kernels and
    their machine code (:mod:`e4net.backends._numba_blocked`). Deleting it only costs the time to rebuild."""
    for name in (CACHE_ENV, "E4NET_CACHE_DIR"):
        if os.environ.get(name):
            return Path(os.environ[name])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "e4net"


def atomic_write_bytes(path: str | Path, writer: Callable[[IO[bytes]], object]) -> None:
    """Write a file atomically: ``writer(fileobj)`` into a temporary file in the same folder, fsync, rename.

    The folder is created if needed. If ``writer`` (or the disk) fails, the temporary file is removed, the
    exception propagates and a previous file at ``path`` is left unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (nan, inf) replaced by ``None``, in nested dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (non-finite floats as ``null``) atomically (:func:`atomic_write_bytes`)."""
    data = (json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append ``obj`` as one JSON line (non-finite floats as ``null``) and fsync, so that a finished line survives
    a crash."""
    with open(path, "a") as f:
        f.write(json.dumps(json_safe(obj), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


class PlainWarning(UserWarning):
    """A warning for the user of the command line: :func:`install_plain_warnings` shows it as its message alone."""


def install_plain_warnings() -> None:
    """Show :class:`PlainWarning` (and its subclasses) as one plain line on stderr (the CLI's style) instead of
    Python's warning format; other warnings keep theirs. Calling it again changes nothing."""
    if getattr(warnings.showwarning, "_e4net_plain", False):
        return
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PlainWarning):
            print(str(message), file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    show._e4net_plain = True  # type: ignore[attr-defined]
    warnings.showwarning = show
