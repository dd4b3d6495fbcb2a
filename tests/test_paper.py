"""``e4net.paper``: the paper's Tables 1-4 as data, written once, joined by name to the registered models.

Checks that every number of the paper appears once in the code (only in ``src/e4net/paper.py``), that every row names
a registered model whose overrides build, the lookup functions, the layering around it, and that docs/models.md
holds no hand-written copy of the paper's numbers that could drift (its table is the output of ``e4net models
--markdown``; the few numbers its prose quotes are checked against the rows).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from e4net import paper
from e4net.models import create_model, list_models, model_spec
from e4net.paper import PaperRow, ablations, row, rows, rows_for_model

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "e4net"
PAPER_PY = SRC / "paper.py"
DOCS = ROOT / "docs" / "models.md"


# ---- written once ---------------------------------------------------------------------------------------------------
def _paper_literals() -> set[str]:
    """The source spelling of every float literal in e4net/paper.py (errors, ±, params, FLOPs), plus the integer
    spelling of the large ones (``44670`` for ``44.67e3``)."""
    text = PAPER_PY.read_text()
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            out.add(ast.get_source_segment(text, node))
            if node.value >= 1000 and node.value.is_integer():
                out |= {str(int(node.value)), f"{int(node.value):_}", f"{int(node.value):,}"}
    return out


def test_each_paper_number_is_written_once_in_the_code():
    literals = _paper_literals()
    quoted = ("1.29", "0.023", "18.8e3", "77.54e3", "5.63e9", "4.96")  # numbers written in several places before
    assert set(quoted) <= literals and len(literals) > 60
    text = PAPER_PY.read_text()
    assert all(len(re.findall(rf"(?<![\w.]){re.escape(q)}(?![\w.])", text)) == 1 for q in quoted)
    hits = []
    for f in [*SRC.rglob("*.py"), *(ROOT / "benchmarks").glob("*")]:
        if f == PAPER_PY or not f.is_file():
            continue
        t = f.read_text()
        for lit in literals:
            for m in re.finditer(rf"(?<![\w.,]){re.escape(lit)}(?![\w.]|,\d)", t):
                hits.append(f"{f.relative_to(ROOT)}:{t.count(chr(10), 0, m.start()) + 1}: {lit}")
    assert not hits, "paper numbers outside e4net/paper.py:\n" + "\n".join(hits)


# ---- joined by name to the registry ---------------------------------------------------------------------------------
def test_every_row_names_a_registered_model_and_its_overrides_build():
    built: set[tuple[str, tuple]] = set()
    for r in rows():
        assert r.model in list_models(), r
        assert model_spec(r.model).dataset == r.dataset, r
        key = (r.model, tuple(sorted(r.overrides.items())))
        if key not in built:
            built.add(key)
            model = create_model(r.model, **r.overrides)
            for k, v in r.overrides.items():  # the override reached the model (E4-Net keeps its arguments)
                assert getattr(model, k, v) == v, (r, k)


def test_every_registered_model_of_the_paper_has_one_row_without_overrides():
    for name in list_models():
        if model_spec(name).builder.__module__.startswith("e4net.") and model_spec(name).dataset != "digits3d":
            assert len(rows_for_model(name, {})) == 1, name


# ---- lookups ------------------------------------------------------------------------------------------------------
def test_rows_and_row():
    assert [len(rows(t)) for t in paper.TABLES] == [5, 4, 9, 5]
    assert rows() == list(paper.ROWS) == rows("table1") + rows("table2") + rows("table3") + rows("table4")
    assert [r.model for r in rows("table1")] == ["p4-sa", "p4cnn", "alpha-p4cnn", "e4net", "e4net-large"]
    assert row("table4", "p4m-E4R18").model == "p4m-e4r18" and row("table4", "p4m-E4R18").dataset == "cifar10"
    with pytest.raises(ValueError, match="unknown table"):
        rows("table5")
    with pytest.raises(ValueError, match="unknown table"):
        row("table5", "E4-Net")
    with pytest.raises(ValueError, match="no row 'E4Net'"):
        row("table1", "E4Net")


def test_the_baseline_is_one_experiment_printed_in_three_tables():
    e4 = row("table1", "E4-Net")
    for table, label, overrides in [("table2", "K&V", {"concat": "both"}), ("table3", "s=2", {"slices": 2}),
                                    ("table3", "r=1", {"reduction": 1}), ("table3", "k=5", {"kernel_size": 5})]:  # fmt: skip
        r = row(table, label)
        assert (r.params, r.macs, r.error()) == (e4.params, e4.macs, e4.error())
        assert (r.model, dict(r.overrides)) == ("e4net", overrides)


def test_rows_for_model():
    assert rows_for_model("e4net", {}) == [row("table1", "E4-Net")]
    assert rows_for_model("e4net", {"concat": "none"}) == [row("table2", "None")]
    assert len(rows_for_model("e4net")) == 1 + 4 + 9
    assert rows_for_model("p4m-e4r18") == [row("table4", "p4m-E4R18")]
    assert rows_for_model("nope") == [] and rows_for_model("e4net", {"slices": 3}) == []


def test_ablations():
    assert ablations() == rows("table2") + rows("table3")
    assert [a.name for a in ablations("table2")] == [f"e4net concat={c}" for c in ("none", "kernel", "value", "both")]
    assert all(a.model == "e4net" and len(a.overrides) == 1 for a in ablations())
    for bad in ("table1", "table4", "table9"):
        with pytest.raises(ValueError, match="no ablations"):
            ablations(bad)


def test_errors_by_data_set_and_immutability():
    r18 = row("table4", "R18")
    assert r18.error() == r18.error("cifar10") == (r18.test_error, r18.test_error_std)
    assert r18.error("cifar100") == (r18.test_error_cifar100, r18.test_error_cifar100_std) != r18.error()
    with pytest.raises(ValueError, match="no cifar100 error"):
        row("table1", "E4-Net").error("cifar100")
    with pytest.raises(TypeError):
        row("table2", "None").overrides["concat"] = "both"  # type: ignore[index]
    assert PaperRow("table1", "x", "e4net", 1.0, 2.0).name == "e4net"


# ---- docs/models.md -------------------------------------------------------------------------------------------------
_BEGIN, _END = "<!-- BEGIN e4net models --markdown -->\n", "\n<!-- END e4net models --markdown -->"


def test_docs_table_is_the_output_of_e4net_models_markdown():
    """The committed table of docs/models.md is what the code prints now (regenerate: ``e4net models --markdown``)."""
    text = DOCS.read_text()
    committed = text[text.index(_BEGIN) + len(_BEGIN) : text.index(_END)]
    res = subprocess.run(
        [sys.executable, "-m", "e4net", "models", "--markdown"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert committed == res.stdout.rstrip("\n"), "docs/models.md is stale: paste `e4net models --markdown` into it"


def _count(x: float) -> str:
    """A count as the paper prints its Params and FLOPs: 18.8K, 17M, 2.99G."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def test_docs_prose_quotes_the_paper_rows():
    """The derivations in docs/models.md quote some of the paper's numbers; each quote is rebuilt from e4net.paper."""
    e4, large, p4cnn = row("table1", "E4-Net"), row("table1", "E4-Net (large)"), row("table1", "p4-CNN")
    s1, s4, r2, r4 = row("table3", "s=1"), row("table3", "s=4"), row("table3", "r=2"), row("table3", "r=4")
    k3, k7 = row("table3", "k=3"), row("table3", "k=7")
    p4r18, p4e4r18 = row("table4", "p4-R18"), row("table4", "p4-E4R18")
    quotes = [
        f"(paper {_count(e4.params)}, ",
        f"(paper {_count(e4.macs)}, ",
        f"the paper's {_count(large.params)} / {_count(large.macs)} both point",
        f"Table 1's **{_count(p4cnn.params)} params",
        f"its **{_count(p4cnn.macs)} MACs",
        f"grow by ({k7.macs / 1e6:g} − {k3.macs / 1e6:g})M / (49 − 9)",
        f"the s-rows grow by {(s4.macs - s1.macs) / 3 / 1e6:.1f}M per slice",
        f"({_count(s4.params)} − {_count(s1.params)}) / 3",
        f"r-slope ({(e4.params - r2.params) / 1e3:.1f}K for r = 1 → 2, {(e4.params - r4.params) / 1e3:.1f}K for 1 → 4)",
        f"the paper's own p4-R18 ({_count(p4r18.macs)}, {_count(p4r18.params)})",
        f"its {_count(p4e4r18.macs)} / {_count(p4e4r18.params)} for p4-E4R18",
        f"p4-R18 would be 2.22G, not {_count(p4r18.macs)}.",
    ]
    text = " ".join(DOCS.read_text().split())
    missing = [q for q in quotes if q not in text]
    assert not missing, f"docs/models.md quotes a paper number that e4net.paper does not have: {missing}"


def test_docs_python_example_runs():
    block = re.search(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S).group(1)
    exec(compile(block, str(DOCS), "exec"), {"__name__": "docs_example"})
