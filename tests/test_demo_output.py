"""The demo's picture and page, from a simulated crash (no broker: the simulator's own decisions
and orders stand for the output topics)."""

import html.parser
from decimal import Decimal as D

import pytest
from matplotlib.colors import to_hex

from adl_stream.demo import DemoReport, _write_files, figure, summary_tables
from adl_stream.engine import Engine
from adl_stream.readable import iso_time
from adl_stream.simulation.market import MarketSimulator, Scenario


@pytest.fixture(scope="module")
def report() -> DemoReport:
    simulator = MarketSimulator(Scenario(seed=3, accounts=400))
    records = list(simulator.records())
    engine = Engine(simulator.symbols)
    orders = [order for record in records for order in engine.apply(record).orders]
    decisions = simulator.tape.decisions
    return DemoReport(len(records), decisions, orders, decisions, simulator.tape.marks, simulator.fund_seed,
                      simulator.scenario.start_ts, "", simulator.symbols)


def test_one_colour_per_symbol_in_every_panel_and_the_funds_in_black_line_styles(report):
    fig = figure(report)
    prices, funds, adl = fig.axes
    marks = {line.get_label(): to_hex(line.get_color()) for line in prices.get_lines() if not line.get_label().startswith("_")}
    scatter = {points.get_label(): to_hex(points.get_facecolor()[0]) for points in adl.collections}
    assert set(marks) == set(report.symbols) and len(set(marks.values())) == len(marks)
    assert scatter and all(scatter[symbol] == marks[symbol] for symbol in scatter)
    fund_lines = {line.get_label(): line for line in funds.get_lines() if line.get_label().startswith("fund ")}
    assert set(fund_lines) == {f"fund {spec.fund_id}" for spec in report.symbols.values()}
    assert {to_hex(line.get_color()) for line in fund_lines.values()} == {"#000000"}  # no symbol's colour
    assert len({line.get_linestyle() for line in fund_lines.values()}) == len(fund_lines)
    for line in fund_lines.values():  # each fund starts at its seed
        assert (line.get_xdata()[0], line.get_ydata()[0]) == (0.0, float(report.fund_seed))


def test_the_picture_shows_units_thousands_the_seed_and_when_each_fund_ran_out(report):
    fig = figure(report)
    fig.canvas.draw()
    _, funds, adl = fig.axes
    assert "USDT" in funds.get_ylabel() and "USDT" in adl.get_ylabel() and ", s" in adl.get_xlabel()
    labels = [t.get_text() for t in funds.get_yticklabels()]
    assert any("," in label for label in labels), labels  # 20,000 and not 20000
    texts = [t.get_text() for t in funds.texts]
    assert f"seed {float(report.fund_seed):,.0f} USDT per fund" in texts
    exhausted = report.exhausted()
    assert exhausted and set(exhausted) <= {spec.fund_id for spec in report.symbols.values()}
    for fund_id in exhausted:
        assert f"{fund_id} exhausted: ADL from here" in texts
        first_adl = min(d.ts for d in report.decisions if d.fund_id == fund_id and d.outcome != "FUND_COVERED")
        x = (first_adl - report.start_ts) / 1000
        for axes in fig.axes:  # a vertical line at that moment in every panel
            assert any(list(line.get_xdata()) == [x, x] for line in axes.get_lines())


class _Tables(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None


def page_tables(page: str) -> dict[str, list[dict[str, str]]]:
    """The page's tables by their heading: one dict (column -> cell) per row."""
    parser = _Tables()
    parser.feed(page)
    titles = [part.split("</h2>", 1)[0] for part in page.split("<h2>")[1:]]
    return {title: [dict(zip(rows[0], row)) for row in rows[1:]] for title, rows in zip(titles, parser.tables)}


def number(cell: str) -> D:
    """A table cell such as '1,234.5 USDT' as its exact value."""
    return D(cell.split()[0].replace(",", ""))


def check_page_against_summary(page: str, summary: dict) -> None:
    """Every figure of the page's tables is the summary's, exactly."""
    assert "<pre>" not in page and "data:image/png;base64," in page
    tables = page_tables(page)
    assert list(tables) == [title for title, _, _ in summary_tables(summary)]
    (shortfalls,) = tables["Shortfalls"]
    assert number(shortfalls["decided"]) == summary["shortfalls"]
    assert number(shortfalls["ADL"]) == summary["outcomes"]["ADL"]
    assert number(shortfalls["ADL orders"]) == summary["orders"]
    assert number(shortfalls["unfilled quantity"]) == D(summary["unfilled_quantity"])
    for row in tables["ADL by symbol"]:
        expected = summary["by_symbol"][row["symbol"]]
        assert (number(row["orders"]), number(row["quantity (contracts)"]), number(row["notional"])) == (
            expected["orders"], D(expected["quantity"]), D(expected["notional"]))
        assert row["notional"].endswith(" " + expected["settle_asset"])
    assert {row["symbol"] for row in tables["ADL by symbol"]} == set(summary["by_symbol"])
    for row in tables["Insurance funds"]:
        expected = summary["funds"][row["fund"]]
        assert number(row["seed"]) == D(expected["seed"]) and number(row["lowest"]) == D(expected["min"])
        assert number(row["covered"]) == D(expected["covered"]) and number(row["after last shortfall"]) == D(expected["end"])
        assert row["exhausted: ADL from"] == (expected["exhausted_at"] or "never")
    assert [(row["account"], number(row["notional"])) for row in tables["Most-deleveraged accounts"]] == [
        (row["account_id"], D(row["notional"])) for row in summary["most_deleveraged"]]


def test_the_page_shows_the_summary_as_tables_with_the_same_figures(report, tmp_path):
    import json

    _write_files(report, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    check_page_against_summary((tmp_path / "adl-demo.html").read_text(), summary)
    exhausted = report.exhausted()
    assert {f: row["exhausted_at"] for f, row in summary["funds"].items()} == {
        f: iso_time(exhausted.get(f)) for f in summary["funds"]}
    assert any(row["exhausted_at"] for row in summary["funds"].values())
