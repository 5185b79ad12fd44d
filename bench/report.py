"""Figures of the benchmarks: percentiles, resident memory, and the table + JSON they print."""

from __future__ import annotations

import json
import os
import statistics

from rich.console import Console
from rich.table import Table


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if len(ordered) == 1:
        return {"p50": ordered[0], "p99": ordered[0], "max": ordered[0]}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": round(cuts[49], 4), "p99": round(cuts[98], 4), "max": round(ordered[-1], 4)}


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def table(console: Console, title: str, rows: list[dict]) -> None:
    if not rows:
        return
    out = Table(title=title, title_justify="left")
    for column in rows[0]:
        out.add_column(column, justify="right" if isinstance(rows[0][column], int | float) else "left")
    for row in rows:
        out.add_row(*(f"{v:,}" if isinstance(v, int) else f"{v:,.4g}" if isinstance(v, float) else str(v)
                      for v in row.values()))
    console.print(out)


def dump(results: dict, path: str | None) -> str:
    text = json.dumps(results, indent=2, default=str)
    if path:
        with open(path, "w") as out:
            out.write(text + "\n")
    return text
