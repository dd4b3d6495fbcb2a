"""The package face is lazy (PEP 562): ``import e4net.groups`` loads no layer, backend, model or analysis code,
and every top-level name still resolves on first access."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")
HEAVY = ("e4net.nn", "e4net.backends", "e4net.models", "e4net.analysis")


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_groups_loads_no_higher_layer():
    out = _run(
        "import e4net.groups, sys\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        "print(e4net.groups.__file__)\n"
    )
    loaded, path = out.splitlines()
    assert loaded == "[]", f"import e4net.groups loaded {loaded}"
    assert path.startswith(SRC)


def test_top_level_names_resolve():
    out = _run(
        "import sys, e4net\n"
        f"assert not any(m.startswith({HEAVY!r}) for m in sys.modules), 'import e4net is not lazy'\n"
        "from e4net.analysis import Count, count\n"
        "from e4net.models import create_model, list_models\n"
        "from e4net.nn import set_backend\n"
        "from e4net._memory import tune_cpu_allocator\n"
        "from e4net.deploy import export\n"
        "import e4net.backends, e4net.groups, e4net.nn\n"
        "expected = dict(groups=e4net.groups, nn=e4net.nn, backends=e4net.backends, count=count, Count=Count,\n"
        "    create_model=create_model, list_models=list_models, tune_cpu_allocator=tune_cpu_allocator,\n"
        "    set_backend=set_backend, export=export)\n"
        "for name in e4net.__all__:\n"
        "    if name != '__version__':\n"
        "        assert getattr(e4net, name) is expected.pop(name), name\n"
        "assert not expected, expected\n"
        "assert e4net.__version__ and 'set_backend' in dir(e4net)\n"
        "try:\n"
        "    e4net.no_such_name\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_name' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
        "print('ok')\n"
    )
    assert out.strip() == "ok"


def test_lazy_names_in_a_fresh_interpreter():
    """Attribute access alone (no ``from`` import first) imports what it needs."""
    out = _run(
        "import e4net\n"
        "print(e4net.count(e4net.create_model('p4cnn'), (1, 28, 28)).params > 0, e4net.nn.GroupConv.__name__)\n"
        "print('p4cnn' in e4net.models.list_models(), e4net.set_backend.__module__)\n"
    )
    assert out.split() == ["True", "GroupConv", "True", "e4net.nn.backend"]
