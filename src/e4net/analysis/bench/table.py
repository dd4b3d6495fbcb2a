"""Rendering of the results: a :class:`Table` per row kind as markdown or as aligned plain text, and the number
formats the tables share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

STYLES = ("markdown", "plain")


@dataclass
class Table:
    """A caption (the line explaining the ratios), column headers, right-aligned columns (numbers) and the cells."""

    caption: str
    headers: Sequence[str]
    cells: list[list[str]]
    right: Sequence[bool] = ()

    def _is_right(self, j: int) -> bool:
        return j < len(self.right) and self.right[j]

    def markdown(self) -> str:
        """Header, separator and one line per row (``|`` in a cell is escaped); no caption."""

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        sep = "|" + "".join("---:|" if self._is_right(j) else "---|" for j in range(len(self.headers)))
        return "\n".join([line(self.headers), sep, *(line(r) for r in self.cells)])

    def plain(self) -> str:
        """Columns padded to their widest cell, the header underlined; no caption."""
        widths = [max(len(str(c)) for c in col) for col in zip(self.headers, *self.cells)]

        def line(cells: Sequence[str]) -> str:
            out = [c.rjust(w) if self._is_right(j) else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(out).rstrip()

        return "\n".join([line(self.headers), "  ".join("-" * w for w in widths), *(line(r) for r in self.cells)])

    def render(self, style: str = "markdown") -> str:
        """The caption, a blank line and the table in ``style`` (``"markdown"`` or ``"plain"``)."""
        if style not in STYLES:
            raise ValueError(f"unknown table style {style!r}; choose from {', '.join(STYLES)}")
        return f"{self.caption}\n\n{self.markdown() if style == 'markdown' else self.plain()}"


def fmt(x: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals, ``-`` when missing."""
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    """A ratio as ``1.23x``, ``-`` when missing."""
    return "-" if x is None else f"{x:.2f}x"


def impl_cell(row: dict) -> str:
    """The implementation's name, followed by its note (e.g. why it failed)."""
    return f"{row['impl']}{' ' + row['note'] if row['note'] else ''}"
