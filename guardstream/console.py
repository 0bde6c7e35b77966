"""Tables on the terminal (rich), or tab-separated lines when the output is piped."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def terminal() -> Console:
    return Console(soft_wrap=True)


def emit_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; tab-separated lines, header first, when piped."""
    console = terminal()
    if not console.is_terminal:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
