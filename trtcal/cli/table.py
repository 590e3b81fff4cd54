"""Text tables for the CLI: each column as wide as its widest cell, so a long tensor name, a long
number (``-3.40282e+38``) or a long header never pushes the columns after it out of line.

Cells are strings, formatted by the caller. ``align`` holds one character per column: ``<`` for
left (names, words), ``>`` for right (numbers). Columns are two spaces apart; no line ends in
spaces. The caller prints the lines, and may print notes between them (``lines[i + 1]`` is
``rows[i]``).
"""

from __future__ import annotations

from collections.abc import Sequence

GAP = "  "


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """The lines of a table: the header, then one line per row."""
    if len(align) != len(header) or any(a not in "<>" for a in align):
        raise ValueError(f"align {align!r} must give '<' or '>' for each of {len(header)} columns")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells, the header {len(header)}")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return GAP.join(c.ljust(w) if a == "<" else c.rjust(w)
                        for c, w, a in zip(cells, widths, align)).rstrip()

    return [line(header)] + [line(r) for r in rows]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> None:
    """Print :func:`table`'s lines."""
    for text in table(header, rows, align):
        print(text)
