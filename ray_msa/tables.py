"""One table, three ways to print it: aligned text for the terminal, markdown for a README,
CSV for a spreadsheet (the commands' `--format text|md|csv`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

FORMATS = ("text", "md", "csv")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str = "text") -> str:
    """`rows` of already formatted cells under `header`."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([header, *rows])
        return out.getvalue().rstrip("\n")
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows])
