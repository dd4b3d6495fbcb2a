"""The README's interactive examples (``>>>`` blocks) print what the README says they print.

``test_readme.py`` runs the plain examples; this runs the ``>>>`` ones as doctests, so a printed count or value on
the front page cannot drift from the code.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_interactive_examples_print_what_they_say():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    interactive = [b for b in blocks if ">>>" in b]
    assert interactive, "README has no >>> example"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for i, block in enumerate(interactive):
        test = parser.get_doctest(block, {"__name__": "readme_example"}, f"README.md block {i}", str(README), 0)
        assert test.examples and any(ex.want for ex in test.examples), f"block {i} shows no output to check"
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} README example(s) print something else (see the output above)"
