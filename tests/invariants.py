"""SPEC §4 checked on a run's records from the outside: input records in order, and the decisions
and orders read from the output topics. Independent of the engine: positions are summed from fills,
funds from flows and decisions."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal as D

from adl_stream.engine import (
    AdlOrder,
    BalanceUpdate,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    ShortfallDecision,
)

INFLOWS = {"DEPOSIT", "LIQUIDATION_SURPLUS", "FEE_INCOME"}


def check_spec_invariants(records, decisions: list[ShortfallDecision], orders: list[AdlOrder],
                          fund_of: dict[str, str]) -> dict:
    """Assert the invariants; return counts of what was checked (for the caller to assert on)."""
    by_event = {d.event_id: d for d in decisions}
    orders_of = defaultdict(list)
    for order in orders:
        orders_of[order.shortfall_event_id].append(order)
    position: dict[tuple[str, str], D] = defaultdict(D)
    unconfirmed: dict[str, AdlOrder] = {}  # emitted orders whose ADL fill has not arrived: reserved
    fund = defaultdict(D)
    checked = defaultdict(int)
    for record in records:
        if isinstance(record, Fill):
            position[(record.account_id, record.symbol)] += record.quantity if record.side == "BUY" else -record.quantity
            order = unconfirmed.get(record.adl_order_id) if record.kind == "ADL" else None
            if order is not None and order.account_id == record.account_id:  # the counterparty's fill
                del unconfirmed[record.adl_order_id]
        elif isinstance(record, FundFlow):
            fund[record.fund_id] += record.amount if record.kind in INFLOWS else -record.amount
        elif isinstance(record, LiquidationShortfall):
            decision = by_event[record.event_id]  # every shortfall decided
            mine = sorted(orders_of[record.event_id], key=lambda o: o.rank)
            assert decision.orders == len(mine) and decision.order_ids == tuple(o.order_id for o in mine)
            assert sum((o.quantity for o in mine), D(0)) == decision.adl_quantity  # conservation
            if decision.outcome == "FUND_COVERED":
                assert not mine and decision.fund_covered == record.shortfall
                fund[decision.fund_id] -= record.shortfall
            else:
                assert decision.adl_quantity + decision.unfilled_quantity == record.quantity
                assert decision.fund_covered == 0
                checked["adl"] += 1
            assert fund[decision.fund_id] >= 0, "fund below zero"
            assert decision.fund_balance_after == fund[decision.fund_id], "fund != seed + inflows - covered"
            assert decision.fund_id == fund_of[record.symbol]
            bankrupt_long = record.position_side == "LONG"
            for order in mine:
                assert order.quantity > 0 and order.price == record.bankruptcy_price
                held = position[(order.account_id, order.symbol)]
                assert (held < 0) == bankrupt_long and held != 0, "not an opposite-side position"
                reserved = sum((o.quantity for o in unconfirmed.values() if o.account_id == order.account_id
                                and o.symbol == order.symbol), D(0))
                assert order.quantity <= abs(held) - reserved, "closed beyond its free quantity"
                unconfirmed[order.order_id] = order
                checked["orders"] += 1
            checked["shortfalls"] += 1
        else:
            assert isinstance(record, (MarkPrice, BalanceUpdate))
    assert checked["shortfalls"] == len(decisions), "a decision without its shortfall"
    return dict(checked)
