"""The README's usage example runs as written (so the front page cannot drift from the code)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    runnable = [b for b in blocks if ">>>" not in b]
    assert runnable, "README has no runnable python example"
    for block in runnable:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
