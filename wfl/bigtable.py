"""Print a rich Table of thousands of rows in linear time (`wfl show` / `wfl status RUN` of a
run with 100,000 records).

rich measures and wraps every cell through several layers of renderables: ~1 ms a row, so a
30,000-step run took minutes to print. The tables wfl prints are simple (no borders, cells
that are strings or single-styled Text), so a big one is laid out here instead: each column
as wide as its widest cell, two spaces between columns, as rich lays out such a table when it
fits. Long cells are not wrapped (a terminal wraps them; a pipe keeps them on one line for
grep). Small tables, and anything this does not recognise, are left to rich.
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.console import COLOR_SYSTEMS, Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.style import Style
from rich.table import Row, Table
from rich.text import Text

from .runlist import BIG as BIG  # lines from which a table is printed here, not by rich
from .runlist import GAP as _GAP
from .runlist import layout, simple


class Cell(str):
    """Table cell text with one rich style. Making a rich Text costs ~5 us (a str ~0.3 us),
    which is most of the time to list 100,000 records; a BigTable turns a Cell into a Text
    only when rich prints it. The style is a class attribute (one subclass per style), as
    an attribute of each instance would cost it a dict."""

    style = ""

    @property
    def plain(self) -> str:
        """The text, as rich's Text.plain (so a Cell reads like the Text it stands for)."""
        return str(self)


_STYLED: dict[str, type[Cell]] = {"": Cell}


def cell(text: str, style: str = "") -> Cell:
    kind = _STYLED.get(style)
    if kind is None:
        kind = _STYLED[style] = type("Cell", (Cell,), {"style": style})
    return kind(text)


_PLAIN_ROW = Row()  # rich only reads a row's style and end_section: one can serve all


def _is_cell(c: Any) -> bool:
    return isinstance(c, str | Text)


def print_fast(console: Console, renderable: RenderableType) -> None:
    """console.print(renderable), with tables (also inside a Group) laid out in linear time
    when they are big, or when they fit the console's width (then rich would lay them out
    just so: rich takes ~2 ms a row even for 50, a third of `wfl status`'s time budget)."""
    parts = list(renderable.renderables) if isinstance(renderable, Group) else [renderable]
    for part in parts:
        laid_out = _lines(console, part) if isinstance(part, Table) else None
        if laid_out is None:
            console.print(part)
            continue
        lines, width = laid_out
        if width > console.width and len(lines) < BIG:
            console.print(part)  # rich fits it to the console: worth its time for a few rows
        else:
            console.file.write("".join(line + "\n" for line in lines))
            console.file.flush()


def _lines(console: Console, table: Table) -> tuple[list[str], int] | None:
    """The table's lines and its width, or None if it is not the kind of table this lays
    out."""
    if table.box is not None or table.pad_edge or tuple(table.padding) != (0, 1, 0, 1):
        return None
    columns = table.columns
    if any(c.style for c in columns) or not table.show_header:
        return None
    texts: list[list[str]] = []  # per column: header, then each row's text
    for column in columns:
        cells = column._cells
        if not all(map(_is_cell, cells)):
            return None
        texts.append([str(column.header), *(_text(c) for c in cells)])
    paint = _Painter(console)
    if paint.system or not all(simple("".join(t)) for t in texts):
        return _lines_one_by_one(table, paint)
    # plain ASCII, one line a cell (a pipe, the usual case for big output): str methods only
    return layout(texts, [column.justify == "right" for column in columns])


def _text(c: Any) -> str:
    return c.plain if type(c) is Text else c


def _style(c: Any) -> str:
    style = getattr(c, "style", None)
    return str(style) if style else ""


def _lines_one_by_one(table: Table, paint: _Painter) -> tuple[list[str], int]:
    """The general layout: colour, wide characters, cells of several lines."""
    columns = table.columns
    heads = [(str(c.header), str(table.header_style or "")) for c in columns]
    cells = [
        [(c.plain if type(c) is Text else str(c), _style(c)) for c in col._cells] for col in columns
    ]
    widths = [
        max(_width(line) for text, _ in [head, *column] for line in text.split("\n"))
        for head, column in zip(heads, cells, strict=True)
    ]
    justify = [c.justify for c in columns]
    out: list[str] = []
    last = len(columns) - 1
    for row in [heads, *zip(*cells, strict=True)]:
        split = [text.split("\n") for text, _ in row]
        for k in range(max(len(s) for s in split)):
            pieces = []
            for i, (lines, (_, style)) in enumerate(zip(split, row, strict=True)):
                text = lines[k] if k < len(lines) else ""
                pad = widths[i] - _width(text)
                if justify[i] == "right":
                    text = " " * pad + paint(text, style)
                else:
                    text = paint(text, style) + ("" if i == last else " " * pad)
                pieces.append(text)
            out.append(_GAP.join(pieces).rstrip())
    return out, sum(widths) + len(_GAP) * last


def _width(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


class _Painter:
    """Wraps text in the ANSI codes of a style, when the console shows colour."""

    def __init__(self, console: Console) -> None:
        name = console.color_system
        self.system = COLOR_SYSTEMS.get(name) if name else None
        self.codes: dict[str, tuple[str, str]] = {}

    def __call__(self, text: str, style: str) -> str:
        if not style or not self.system or not text:
            return text
        codes = self.codes.get(style)
        if codes is None:
            before, _, after = (
                Style.parse(style).render("\0", color_system=self.system).partition("\0")
            )
            codes = self.codes[style] = (before, after)
        return codes[0] + text + codes[1]


class BigTable(Table):
    """A rich Table whose add_row is a list append (rich's checks each cell at ~40 us a row):
    for the tables of one run's steps and records, which can have 100,000 rows."""

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: Any = None,
        end_section: bool = False,
    ) -> None:
        columns = self.columns
        if len(renderables) != len(columns) or None in renderables:
            super().add_row(*renderables, style=style, end_section=end_section)
            return
        # rich checks here that each cell is renderable; print_fast checks what it lays out,
        # and rich's own rendering of anything else raises as add_row would have
        for column, cell in zip(columns, renderables, strict=True):
            column._cells.append(cell)  # type: ignore[arg-type]
        self.rows.append(
            _PLAIN_ROW if style is None and not end_section else Row(style, end_section)
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for column in self.columns:  # rich renders a str as markup: a Cell is plain text
            column._cells = [
                Text(str(c), style=c.style) if isinstance(c, Cell) else c for c in column._cells
            ]
        yield from super().__rich_console__(console, options)
