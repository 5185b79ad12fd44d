"""``adl-stream demo``: a market crash through the real processor, in one command.

It starts the embedded broker (or uses ``--bootstrap-servers``), creates the topics, starts the
processor (metrics on the metrics port), simulates the crash and publishes it, follows the
processing with a live progress view, then reads ``adl-decisions`` and ``adl-orders`` back and
prints the summary: shortfalls by outcome, ADL orders and notional by symbol, the insurance funds'
path, the most-deleveraged accounts, and whether every decision is the one the simulator's own
engine predicted. It writes ``summary.json``, ``adl-demo.png`` (mark prices, fund balances and
ADL orders over event time: one colour per symbol in every panel, the funds in black line styles
from their seed, and a mark where each fund ran out and ADL began) and a self-contained
``adl-demo.html`` (the picture and the summary's tables) to the output directory, with the
processor's JSON log. Everything it started is stopped before it returns.

Everything in the summary is computed from the records on the output topics.
"""

from __future__ import annotations

import base64
import gc
import html
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .embedded import FAST_GROUP_JOIN, EmbeddedBroker
from .engine import AdlOrder, ShortfallDecision, SymbolSpec
from .engine.records import OUTCOMES
from .readable import iso_time, plain
from .runtime.config import Settings, Topics
from .runtime.kafka import create_missing_topics, publisher_config, read_to_end
from .runtime.logs import configure_logging
from .runtime.processor import Processor
from .simulation.market import MarketSimulator, Scenario, default_symbols
from .simulation.publish import Publisher
from .wire import Codec

TOP_ACCOUNTS = 5


@dataclass
class DemoReport:
    published: int
    decisions: list[ShortfallDecision]
    orders: list[AdlOrder]
    predicted: list[ShortfallDecision]
    marks: dict[str, list[tuple[int, Decimal]]]
    fund_seed: Decimal
    start_ts: int
    metrics_url: str
    symbols: Mapping[str, SymbolSpec]
    files: list[Path] = field(default_factory=list)
    comparison: dict | None = None
    """``compare.json``: the same crash under each allocation policy (:func:`compare_policies`)."""

    def exhausted(self) -> dict[str, int]:
        """Fund -> event time of the first shortfall it did not pay (ADL from then on)."""
        first: dict[str, int] = {}
        for d in sorted(self.decisions, key=lambda d: d.ts):
            if d.outcome != "FUND_COVERED":
                first.setdefault(d.fund_id, d.ts)
        return first

    def summary(self) -> dict:
        """The figures of the summary, from the output records (decimals as exact strings)."""
        outcomes = Counter(d.outcome for d in self.decisions)
        by_symbol: dict[str, dict] = defaultdict(lambda: {"orders": 0, "quantity": Decimal(0), "notional": Decimal(0)})
        by_account: dict[tuple[str, str], dict] = defaultdict(lambda: {"orders": 0, "quantity": Decimal(0), "notional": Decimal(0)})
        for order in self.orders:
            for row in (by_symbol[order.symbol], by_account[(order.account_id, order.symbol)]):
                row["orders"] += 1
                row["quantity"] += order.quantity
                row["notional"] += order.quantity * order.price
        funds: dict[str, dict] = {}
        for d in sorted(self.decisions, key=lambda d: d.ts):
            fund = funds.setdefault(d.fund_id, {"covered": Decimal(0), "min": d.fund_balance_after, "end": None})
            fund["covered"] += d.fund_covered
            fund["min"] = min(fund["min"], d.fund_balance_after)
            fund["end"] = d.fund_balance_after
        exhausted = self.exhausted()
        assets = {spec.fund_id: spec.settle_asset for spec in self.symbols.values()}
        for fund_id, fund in funds.items():
            fund.update(settle_asset=assets[fund_id], exhausted_at=iso_time(exhausted.get(fund_id)))
        for symbol, row in by_symbol.items():
            row["settle_asset"] = self.symbols[symbol].settle_asset
        top = sorted(by_account.items(), key=lambda kv: (-kv[1]["notional"], kv[0]))[:TOP_ACCOUNTS]
        return plain({
            "published_records": self.published,
            "shortfalls": len(self.decisions),
            "outcomes": {k: outcomes.get(k, 0) for k in OUTCOMES},
            "unfilled_quantity": sum((d.unfilled_quantity for d in self.decisions), Decimal(0)),
            "orders": len(self.orders),
            "by_symbol": dict(sorted(by_symbol.items())),
            "funds": {f: {"seed": self.fund_seed, **v} for f, v in sorted(funds.items())},
            "most_deleveraged": [{"account_id": a, "symbol": s, **row} for (a, s), row in top],
            "decisions_as_predicted": len(set(self.decisions) & set(self.predicted)),
        })


#: The demo's processor shares two cores with the broker: a partition's fetch may come later than
#: the production default (100 ms) after the others'. Waiting longer keeps the processing order the
#: event-time order, so the decisions equal the simulator's prediction.
DEMO_MAX_IDLE_MS = 2_000
#: The crash spans about two minutes of event time: an ADL indicator pass every 10 s (12 passes)
#: shows the lights move on the dashboard, where the production default (30 s) would pass 4 times.
DEMO_INDICATOR_INTERVAL_MS = 10_000


def demo_settings(bootstrap: str, metrics_port: int, prefix: str = "") -> Settings:
    topics = Topics(**{name: f"{prefix}{getattr(Topics, name)}" for name in Topics.__dataclass_fields__})
    return Settings(bootstrap_servers=bootstrap, group_id=f"{prefix}adl-demo", metrics_host="127.0.0.1",
                    metrics_port=metrics_port, poll_timeout_ms=50, topics=topics, symbols=default_symbols(),
                    kafka=dict(FAST_GROUP_JOIN), log_format="json", max_idle_ms=DEMO_MAX_IDLE_MS,
                    indicator_interval_ms=DEMO_INDICATOR_INTERVAL_MS)


def run_demo(scenario: Scenario, output: Path, *, metrics_port: int = 0, partitions: int = 3,
             bootstrap_servers: str | None = None, topic_prefix: str = "", console: Console | None = None) -> DemoReport:
    console = console or Console()
    output.mkdir(parents=True, exist_ok=True)
    broker = None if bootstrap_servers else EmbeddedBroker(output / "broker.log").start()
    try:
        settings = demo_settings(bootstrap_servers or broker.bootstrap, metrics_port, topic_prefix)
        create_missing_topics(settings, [*settings.topics.inputs(), *settings.topics.outputs()], partitions)
        console.print(f"[bold]adl-stream demo[/]: Kafka at {settings.bootstrap_servers}, "
                      f"{scenario.accounts:,} accounts, crash {-scenario.crash_depth:.0%}, seed {scenario.seed}")
        report = _run(settings, scenario, output, console)
    finally:
        if broker is not None:
            gc.collect()  # Kafka clients in reference cycles (callbacks) close now, before their broker goes
            broker.stop()
    _render(report, console)
    report.files += _write_files(report, output)
    report.comparison, files = compare_policies(scenario, settings, output, console)
    report.files += files
    console.print("Files: " + ", ".join(str(p) for p in report.files))
    return report


def _run(settings: Settings, scenario: Scenario, output: Path, console: Console) -> DemoReport:
    simulator = MarketSimulator(scenario, settings.symbols, trigger=settings.trigger(), ranking=settings.ranking(),
                                indicator_interval_ms=settings.indicator_interval_ms)
    columns = (SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}"))
    # The market is on the topics before the processor starts: records still being produced while
    # the processor has caught up could be overtaken by later ones of another partition (the merge
    # waits for lagging partitions, not for a producer), and the decisions must equal the prediction.
    with Progress(*columns, console=console) as progress:
        simulate = progress.add_task("simulate the market", total=None, note="")
        records = []
        for record in simulator.records():
            records.append(record)
            if len(records) % 2_000 == 0:
                progress.update(simulate, completed=len(records))
        progress.update(simulate, total=len(records), completed=len(records),
                        note=f"{len(simulator.tape.decisions)} shortfalls")
        publish = progress.add_task("publish to Kafka", total=len(records), note="")
        publisher = Publisher(publisher_config(settings), settings.topics)
        publisher.send_all(records, lambda n: progress.update(publish, completed=n))
    with open(output / "processor.log", "w") as log:
        configure_logging("json", "info", log)
        processor = Processor(settings)
        stop, codes = threading.Event(), []
        thread = threading.Thread(target=lambda: codes.append(processor.run(stop)), name="adl-processor")
        thread.start()
        try:
            _wait(lambda: processor.health is not None and processor.health.ready or not thread.is_alive(), 60,
                  "the processor to be ready")
            if not thread.is_alive():
                raise RuntimeError(f"the processor stopped at start; see {output / 'processor.log'}")
            metrics_url = f"http://127.0.0.1:{processor.health.port}/metrics"
            console.print(f"Processor ready; metrics at {metrics_url}")
            with Progress(*columns, console=console) as progress:
                process = progress.add_task("process", total=len(records), note="")
                decide = progress.add_task("decide shortfalls", total=len(simulator.tape.decisions), note="")

                def follow() -> bool:
                    m = processor.metrics
                    handled = m.total("adl_events_processed_total") + m.total("adl_dead_letters_total")
                    decided = m.total("adl_shortfalls_total")
                    funds = "  ".join(f"{f} {b:,.0f}" for f, b in sorted(processor.fund_balances().items()))
                    progress.update(process, completed=handled, note=f"funds: {funds}")
                    progress.update(decide, completed=decided, note=f"{m.total('adl_orders_total'):.0f} ADL orders")
                    return handled >= len(records) or not thread.is_alive()

                _wait(follow, 300, "the processor to handle every record")
        finally:
            stop.set()
            thread.join(60)
        if codes != [0]:
            raise RuntimeError(f"the processor stopped with exit code {codes}; see {output / 'processor.log'}")
    codec = Codec()
    decisions = _unique(codec.decode(m.value(), ShortfallDecision) for m in read_to_end(settings, settings.topics.adl_decisions))
    orders = _unique(codec.decode(m.value(), AdlOrder) for m in read_to_end(settings, settings.topics.adl_orders))
    return DemoReport(len(records), decisions, orders, simulator.tape.decisions, simulator.tape.marks,
                      simulator.fund_seed, scenario.start_ts, metrics_url, settings.symbols)


#: The comparison simulates the crash once per allocation policy; a spreading policy emits an order
#: per position of the side for each ADL (about n² orders: 480k for 5,000 accounts, 25 s each).
#: Beyond this many accounts it takes the first ones of the same seed (the same traders, the same
#: marks) so that the demo stays within about 40 s on two cores.
DEMO_COMPARE_ACCOUNTS = 1_000


def compare_policies(scenario: Scenario, settings: Settings, output: Path, console: Console) -> tuple[dict, list[Path]]:
    """The demo's crash under every allocation policy with the processor's trigger, the simulated
    exchange reacting to each one's orders: a short table, and compare.json/.png/.html."""
    from dataclasses import replace

    from .compare import ALLOCATIONS, compare_scenario, policy_specs
    from .compare_view import short_table, write_files

    accounts = min(scenario.accounts, DEMO_COMPARE_ACCOUNTS)
    specs = policy_specs([settings.trigger_policy], ALLOCATIONS, haircut_cap=settings.haircut_cap)
    with console.status(f"deciding the crash under {len(specs)} allocation policies ..."):
        comparison = compare_scenario(replace(scenario, accounts=accounts), settings.symbols, specs)
    document = comparison.document()
    columns, rows = short_table(document)
    crash = "the same crash" if accounts == scenario.accounts else f"the same crash with its first {accounts:,} traders"
    table = Table(title=f"ADL policies compared: {crash}, each policy's orders filled by the simulated exchange "
                        f"(trigger {settings.trigger_policy}; compare.json)")
    for column in columns:  # the policy's name never cut; a figure wraps on a narrow terminal, never cut
        table.add_column(column, justify="left" if column == "allocation" else "right",
                         no_wrap=column == "allocation", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return document, write_files(comparison, output)


def _unique(records) -> list:
    """Output records by id, first copy kept: the outputs are idempotent (a broker that shows
    aborted records, as Tansu does, could repeat one byte for byte)."""
    seen = {}
    for record in records:
        seen.setdefault(getattr(record, "order_id", None) or record.event_id, record)
    return list(seen.values())


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


# -- output ----------------------------------------------------------------------------------


def _amount(value: str, unit: str = "") -> str:
    """An exact decimal of the summary with thousands separators, and its unit."""
    text = f"{Decimal(value):,f}"
    return f"{text} {unit}" if unit else text


def summary_tables(summary: dict) -> list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]:
    """The summary as tables of text, ``(title, columns, rows)``: the terminal's and the page's."""
    o, by_symbol = summary["outcomes"], summary["by_symbol"]
    return [
        ("Shortfalls", ("decided", "fund-covered", "ADL", "ADL partial", "unfilled quantity", "ADL orders"),
         [(f"{summary['shortfalls']:,}", f"{o['FUND_COVERED']:,}", f"{o['ADL']:,}", f"{o['ADL_PARTIAL']:,}",
           _amount(summary["unfilled_quantity"]), f"{summary['orders']:,}")]),
        ("ADL by symbol", ("symbol", "orders", "quantity (contracts)", "notional"),
         [(symbol, f"{row['orders']:,}", _amount(row["quantity"]), _amount(row["notional"], row["settle_asset"]))
          for symbol, row in by_symbol.items()]),
        ("Insurance funds", ("fund", "seed", "covered", "lowest", "after last shortfall", "exhausted: ADL from"),
         [(fund, *(_amount(row[k], row["settle_asset"]) for k in ("seed", "covered", "min", "end")),
           row["exhausted_at"] or "never") for fund, row in summary["funds"].items()]),
        ("Most-deleveraged accounts", ("account", "symbol", "orders", "quantity (contracts)", "notional"),
         [(row["account_id"], row["symbol"], f"{row['orders']:,}", _amount(row["quantity"]),
           _amount(row["notional"], by_symbol[row["symbol"]]["settle_asset"])) for row in summary["most_deleveraged"]]),
    ]


def _render(report: DemoReport, console: Console) -> None:
    s = report.summary()
    for title, columns, rows in summary_tables(s):
        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"Decisions on the output topic identical to the simulator engine's: {_agreement(report, s)}")


def _agreement(report: DemoReport, summary: dict) -> str:
    same = summary["decisions_as_predicted"] == len(report.predicted) == summary["shortfalls"]
    return f"{summary['decisions_as_predicted']}/{len(report.predicted)} " + ("yes" if same else "NO")


def _write_files(report: DemoReport, output: Path) -> list[Path]:
    summary = report.summary()
    summary_path = output / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    png = output / "adl-demo.png"
    fig = figure(report)
    fig.savefig(png, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    page = output / "adl-demo.html"
    image = base64.b64encode(png.read_bytes()).decode()
    tables = "".join(_html_table(*table) for table in summary_tables(summary))
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>adl-stream demo</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse;"
        "margin-bottom:1em}th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}</style>"
        f"<h1>adl-stream demo</h1><img alt='mark prices, insurance funds and ADL orders over event time' "
        f"src='data:image/png;base64,{image}'>"
        f"<p>Summary from the output topics (also in summary.json). Decisions identical to the simulator "
        f"engine's: {html.escape(_agreement(report, summary))}.</p>{tables}\n")
    return [summary_path, png, page]


def _html_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


FUND_STYLES = ("-", "--", "-.", ":")


def figure(report: DemoReport):
    """The demo's picture: marks, fund balances and ADL orders over event time. A symbol has one
    colour in every panel; the funds are black, one line style each, starting at their seed; a
    vertical line in the fund's style marks, across the panels, its first shortfall left to ADL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    seconds = lambda ts: (ts - report.start_ts) / 1000  # noqa: E731
    colours = {symbol: f"C{i}" for i, symbol in enumerate(sorted(report.symbols))}
    assets = {spec.fund_id: spec.settle_asset for spec in report.symbols.values()}
    styles = {fund: FUND_STYLES[i % len(FUND_STYLES)] for i, fund in enumerate(sorted(assets))}
    unit = "/".join(sorted(set(assets.values())))
    thousands = FuncFormatter(lambda value, _: f"{value:,.0f}")
    fig, (prices, funds, adl) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)

    for symbol, path in sorted(report.marks.items()):
        if path:
            first = float(path[0][1])
            prices.plot([seconds(t) for t, _ in path], [100 * float(m) / first for _, m in path],
                        color=colours[symbol], label=symbol)
    prices.set_ylabel("mark price, % of its start")
    prices.legend(loc="lower left")

    seed = float(report.fund_seed)
    by_fund = defaultdict(lambda: [(0.0, seed)])
    for d in sorted(report.decisions, key=lambda d: d.ts):
        by_fund[d.fund_id].append((seconds(d.ts), float(d.fund_balance_after)))
    for fund_id, points in sorted(by_fund.items()):
        funds.step([x for x, _ in points], [y for _, y in points], where="post", color="black",
                   linestyle=styles[fund_id], label=f"fund {fund_id}")
    funds.axhline(seed, color="grey", linewidth=0.8, linestyle=":")
    funds.annotate(f"seed {seed:,.0f} {unit} per fund", (0, seed), xytext=(4, 4), textcoords="offset points",
                   color="dimgrey")
    funds.set_ylim(bottom=-0.05 * seed, top=1.2 * seed)
    funds.set_ylabel(f"fund balance after\neach shortfall, {unit}")
    funds.yaxis.set_major_formatter(thousands)

    for i, (fund_id, ts) in enumerate(sorted(report.exhausted().items(), key=lambda item: item[1])):
        for axes in (prices, funds, adl):
            axes.axvline(seconds(ts), color="black", linestyle=styles[fund_id], linewidth=0.9)
        funds.annotate(f"{fund_id} exhausted: ADL from here", (seconds(ts), 0.75 - 0.12 * i), xytext=(6, 0),
                       xycoords=funds.get_xaxis_transform(), textcoords="offset points", va="center",
                       arrowprops={"arrowstyle": "-", "linestyle": styles[fund_id]})
    funds.legend(loc="upper right")

    per_symbol = defaultdict(list)
    for order in report.orders:
        per_symbol[order.symbol].append((seconds(order.ts), float(order.quantity * order.price)))
    for symbol, points in sorted(per_symbol.items()):
        adl.scatter([x for x, _ in points], [y for _, y in points], s=8, color=colours[symbol], label=symbol)
    adl.set_yscale("log")
    adl.yaxis.set_major_formatter(thousands)
    adl.set_ylabel(f"ADL order notional, {unit}\n(quantity × bankruptcy price)")
    adl.set_xlabel("event time since the start of the simulation, s")
    adl.legend(loc="upper left")
    fig.suptitle("adl-stream demo: a crash, the insurance funds, and auto-deleveraging")
    fig.tight_layout()
    return fig
