"""How a liquidation shortfall is decided (SPEC §3): fund first, then ADL in ranking order.

This is the one place that answers "what happens to a shortfall". The caller (the engine) has
validated the record's fields and resolved the symbol; :func:`decide` checks the bankrupt position,
then either debits the fund or ranks the opposite side and matches the quantity, reserving what
each order takes, and returns the orders with the decision that audits them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from .errors import Rejected
from .funds import FundLedger, TriggerPolicy
from .index import RankingIndex
from .numbers import ZERO
from .positions import PositionBook
from .ranking import RankingPolicy
from .records import (
    ADL_FULL,
    ADL_PARTIAL,
    BUY,
    FUND_COVERED,
    LONG,
    SELL,
    AdlOrder,
    LiquidationShortfall,
    ShortfallDecision,
)
from .reservations import ReservationBook
from .symbols import SymbolSpec


@dataclass(frozen=True, slots=True)
class ShortfallContext:
    """What a decision reads and changes besides the shortfall itself."""

    book: PositionBook
    index: RankingIndex
    funds: FundLedger
    reservations: ReservationBook
    trigger: TriggerPolicy
    ranking: RankingPolicy
    reservation_timeout_ms: int

    @property
    def policy(self) -> str:
        """``<trigger>/<ranking>``, as recorded in every decision."""
        return f"{self.trigger.name}/{self.ranking.name}"


def order_id(event_id: str, rank: int) -> str:
    """Deterministic ADL order id: the same shortfall and queue place always give the same id."""
    return f"{event_id}:{rank}"


def decide(
    shortfall: LiquidationShortfall,
    spec: SymbolSpec,
    mark: Decimal,
    equity_of: Callable[[str], Decimal],
    ctx: ShortfallContext,
) -> tuple[list[AdlOrder], ShortfallDecision]:
    bankrupt_is_long = shortfall.position_side == LONG
    bankrupt = ctx.book.get(shortfall.account_id, shortfall.symbol)
    if bankrupt is None or bankrupt.quantity == ZERO or (bankrupt.quantity > ZERO) != bankrupt_is_long:
        raise Rejected(
            "unknown_position",
            f"account {shortfall.account_id!r} holds no {shortfall.position_side} position "
            f"in {shortfall.symbol}",
        )
    if bankrupt.free < shortfall.quantity:
        raise Rejected(
            "exceeds_position",
            f"quantity {shortfall.quantity} exceeds the {bankrupt.free} free on the bankrupt "
            f"{shortfall.position_side} position of {shortfall.account_id!r} in {shortfall.symbol}",
        )

    fund_id = spec.fund_id
    balance = ctx.funds.balance(fund_id)
    policy = ctx.policy

    def decision(outcome: str, covered: Decimal, adl: Decimal, unfilled: Decimal, orders: list[AdlOrder], after: Decimal):
        return ShortfallDecision(
            event_id=shortfall.event_id,
            symbol=shortfall.symbol,
            bankrupt_account_id=shortfall.account_id,
            fund_id=fund_id,
            quantity=shortfall.quantity,
            shortfall=shortfall.shortfall,
            outcome=outcome,
            fund_covered=covered,
            adl_quantity=adl,
            unfilled_quantity=unfilled,
            orders=len(orders),
            order_ids=tuple(order.order_id for order in orders),
            fund_balance_after=after,
            policy=policy,
            ts=shortfall.ts,
        )

    # 1. Fund first.
    if not ctx.trigger(balance, shortfall.shortfall):
        after = ctx.funds.debit(fund_id, shortfall.shortfall)
        return [], decision(FUND_COVERED, shortfall.shortfall, ZERO, ZERO, [], after)

    # 2. ADL: opposite side, in ranking order, each for min(left, free), at the bankruptcy price.
    # The index ranks the side and returns only the head of the queue that covers the quantity.
    queue = ctx.index.ranked(shortfall.symbol, not bankrupt_is_long, mark, equity_of, ctx.ranking.score,
                             covering=shortfall.quantity)
    closing_side = BUY if bankrupt_is_long else SELL  # counterparties are short when bankrupt is long
    expires_at = shortfall.ts + ctx.reservation_timeout_ms
    left = shortfall.quantity
    orders: list[AdlOrder] = []
    for rank, candidate in enumerate(queue, start=1):
        if left == ZERO:
            break
        take = min(left, candidate.position.free)
        oid = order_id(shortfall.event_id, rank)
        orders.append(
            AdlOrder(
                order_id=oid,
                shortfall_event_id=shortfall.event_id,
                symbol=shortfall.symbol,
                account_id=candidate.position.account_id,
                side=closing_side,
                quantity=take,
                price=shortfall.bankruptcy_price,
                bankrupt_account_id=shortfall.account_id,
                rank=rank,
                score=candidate.score,
                ts=shortfall.ts,
            )
        )
        ctx.reservations.reserve(oid, candidate.position, take, expires_at)
        ctx.reservations.reserve(oid, bankrupt, take, expires_at)
        left -= take
    outcome = ADL_PARTIAL if left > ZERO else ADL_FULL
    return orders, decision(outcome, ZERO, shortfall.quantity - left, left, orders, balance)
