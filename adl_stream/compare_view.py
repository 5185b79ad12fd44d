"""The policy comparison as people read it: a table (terminal and HTML), a picture, and the files.

``compare.json`` is :meth:`~adl_stream.compare.Comparison.json`; the table shows the same figures
(decimals exact, with thousands separators; ratios to four significant digits). The picture has
three panels: each policy's haircut total, the accounts it touched, and the distribution of the
haircut share of PnL across the accounts it touched in profit (one curve per policy, largest
first), so a risk engineer sees at a glance who pays under each rule.
"""

from __future__ import annotations

import base64
import html
from decimal import Decimal
from pathlib import Path

from .compare import Comparison

#: The two tables of the comparison: (title, ((column title, key of the report entry), ...)).
TABLES = (
    ("Decisions", (
        ("policy", "policy"), ("shortfalls", "shortfalls"), ("fund-covered", "fund_covered_shortfalls"),
        ("ADL", "adl_shortfalls"), ("fund paid", "fund_paid"), ("orders", "orders"),
        ("ADL quantity", "adl_quantity"), ("ADL notional", "adl_notional"), ("unfilled", "unfilled_quantity"),
        ("later shortfalls", "later_shortfalls"), ("later total", "later_shortfall_total"))),
    ("Who pays", (
        ("policy", "policy"), ("haircut", "haircut_total"), ("accounts", "accounts_touched"),
        ("closed fully", "positions_closed_fully"), ("max share of PnL", "max_haircut_share_of_pnl"),
        ("max share of equity", "max_haircut_share_of_equity"), ("gini", "haircut_gini"),
        ("max leverage after", "max_leverage_after"))),
)


def cell(value) -> str:
    """A figure of ``compare.json`` as the table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        try:
            return f"{Decimal(value):,f}" if value != "inf" else value
        except ArithmeticError:
            return value
    return str(value)


def tables(document: dict) -> list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]:
    """The comparison as tables of text, ``(title, columns, rows)``, one row per policy."""
    return [(title, tuple(c for c, _ in columns), [tuple(cell(e[key]) for _, key in columns)
                                                  for e in document["policies"]])
            for title, columns in TABLES]


def print_tables(document: dict, console, title: str = "The same crash under each policy") -> None:
    from rich.table import Table

    for name, columns, rows in tables(document):
        table = Table(title=f"{title}: {name.lower()}")
        for column in columns:
            table.add_column(column, justify="left" if column == "policy" else "right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def figure(comparison: Comparison):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    document = comparison.document()
    names = [entry["policy"] for entry in document["policies"]]
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, (haircuts, touched, shares) = plt.subplots(3, 1, figsize=(11, 11))
    positions = range(len(names))
    haircuts.bar(positions, [float(Decimal(e["haircut_total"])) for e in document["policies"]],
                 color=[colours[n] for n in names])
    haircuts.set_ylabel("haircut total\n(SPEC §3.5, against the mark)")
    haircuts.axhline(0, color="black", linewidth=0.8)
    touched.bar(positions, [e["accounts_touched"] for e in document["policies"]], color=[colours[n] for n in names])
    touched.set_ylabel("accounts touched")
    for axes in (haircuts, touched):
        axes.set_xticks(list(positions), names, rotation=20, ha="right", fontsize=8)
    for name, values in comparison.shares_of_pnl.items():
        if values:
            shares.plot(range(1, len(values) + 1), values, color=colours[name], label=name, drawstyle="steps-post")
    shares.set_xscale("log")
    shares.axhline(0, color="black", linewidth=0.8)
    shares.set_xlabel("accounts deleveraged while in profit, largest share first")
    shares.set_ylabel("haircut ÷ uPnL before the ADL\n(largest per account)")
    if any(comparison.shares_of_pnl.values()):
        shares.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"adl-stream compare ({comparison.mode}): who pays under each policy")
    fig.tight_layout()
    return fig


def write_files(comparison: Comparison, output: Path, stem: str = "compare") -> list[Path]:
    """``<stem>.json``, ``<stem>.png`` and the self-contained ``<stem>.html`` in ``output``."""
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    document = comparison.document()
    data = output / f"{stem}.json"
    data.write_text(comparison.json())
    png = output / f"{stem}.png"
    fig = figure(comparison)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    page = output / f"{stem}.html"
    page.write_text(page_html(document, png.read_bytes()))
    return [data, png, page]


def html_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page_html(document: dict, png: bytes) -> str:
    inputs = html.escape(", ".join(f"{k} {v}" for k, v in document["inputs"].items()))
    return ("<!doctype html><meta charset=utf-8><title>adl-stream compare</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
            "font-size:90%}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "td:first-child{text-align:left}</style>"
            f"<h1>adl-stream compare: the same crash under each policy ({html.escape(document['mode'])})</h1>"
            f"<img alt='haircut total, accounts touched and haircut share of PnL per policy' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<p>Inputs: {inputs}. The figures of compare.json.</p>"
            + "".join(html_table(*t) for t in tables(document)) + "\n")


#: The demo's short comparison: (column title, key of the report entry).
SHORT = (("allocation", "policy"), ("ADL", "adl_shortfalls"), ("orders", "orders"),
         ("accounts", "accounts_touched"), ("haircut", "haircut_total"),
         ("max share of PnL", "max_haircut_share_of_pnl"), ("later shortfalls", "later_shortfalls"))


def short_table(document: dict) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """``(columns, rows)`` of the demo's comparison: one row per policy, named by its allocation."""
    rows = [tuple(e["policy"].split("/", 1)[1] if key == "policy" else cell(e[key]) for _, key in SHORT)
            for e in document["policies"]]
    return tuple(title for title, _ in SHORT), rows
