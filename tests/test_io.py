"""``e4net.io``: atomic writes (the old file survives a failed write), JSON files with non-finite values, plain
warnings on stderr, the one cache folder of the package."""

from __future__ import annotations

import json
import warnings

import pytest

from e4net.io import PlainWarning, append_jsonl, atomic_write_bytes, cache_root, install_plain_warnings, write_json


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_bytes(target, boom)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_write_replaces_and_creates_the_folder(tmp_path):
    target = tmp_path / "new" / "f.bin"
    atomic_write_bytes(target, lambda f: f.write(b"one"))
    atomic_write_bytes(target, lambda f: f.write(b"two"))
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_non_finite_values_are_written_as_null(tmp_path):  # moved from test_train.py
    append_jsonl(tmp_path / "m.jsonl", {"test_loss": float("nan"), "x": [1.0, float("inf")]})
    write_json(tmp_path / "s.json", {"test_loss": float("nan")})
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"test_loss": None, "x": [1.0, None]}
    assert json.loads((tmp_path / "s.json").read_text()) == {"test_loss": None}
    append_jsonl(tmp_path / "m.jsonl", {"test_loss": 0.5, "t": (1, -float("inf"))})
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[1]) == {"test_loss": 0.5, "t": [1, None]}


class _FileWarning(PlainWarning):
    pass


def test_plain_warnings_are_one_line_on_stderr(capsys, monkeypatch):
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kw: shown.append(str(message)))
    install_plain_warnings()
    install_plain_warnings()  # idempotent: installed once
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(_FileWarning("warning: not the official file"), stacklevel=1)
        warnings.warn(UserWarning("other"), stacklevel=1)
    assert capsys.readouterr().err == "warning: not the official file\n"
    assert shown == ["other"]  # other warnings keep the previous display


def test_one_cache_folder_for_data_and_kernels(tmp_path, monkeypatch):
    """$E4NET_CACHE, else the kernels' older $E4NET_CACHE_DIR, else $XDG_CACHE_HOME/e4net, else ~/.cache/e4net; the
    data sets' cache and the generated kernels' folder both follow it."""
    from e4net.backends._numba_blocked import cache_dir as kernel_dir
    from e4net.data._files import cache_dir as data_dir

    for name in ("E4NET_CACHE", "E4NET_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "e4net"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "e4net"
    monkeypatch.setenv("E4NET_CACHE_DIR", str(tmp_path / "old"))
    assert cache_root() == tmp_path / "old"
    monkeypatch.setenv("E4NET_CACHE", str(tmp_path / "new"))
    assert cache_root() == tmp_path / "new"
    assert data_dir() == tmp_path / "new" and kernel_dir() == tmp_path / "new" / "numba-kernels"
