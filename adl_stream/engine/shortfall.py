"""How a liquidation shortfall is decided (SPEC §3): fund first, then ADL under the allocation policy.

This is the one place that answers "what happens to a shortfall". The caller (the engine) has
validated the record's fields and resolved the symbol; :func:`decide` checks the bankrupt position,
then either debits the fund (when the trigger policy lets it) or asks the allocation policy who
gives how much of the opposite side, reserving what each order takes, and returns the orders with
the decision that audits them (and the haircut they cost their holders, SPEC §3.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from .errors import Rejected
from .funds import FundLedger, TriggerPolicy
from .index import RankingIndex
from .numbers import ZERO, rounded_to_wire
from .positions import PositionBook
from .allocation import AllocationPolicy, Request
from .allocation.base import FINEST_LOT
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
    ranking: AllocationPolicy
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
    now: int,
) -> tuple[list[AdlOrder], ShortfallDecision]:
    """Decide ``shortfall`` at stream time ``now``, its opposite side ranked at ``mark``."""
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

    def decision(outcome: str, covered: Decimal, adl: Decimal, unfilled: Decimal, orders: list[AdlOrder],
                 after: Decimal, haircut: Decimal = ZERO):
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
            haircut=haircut,
        )

    # 1. Fund first.
    if not ctx.trigger(balance, shortfall.shortfall, ctx.funds.peak(fund_id, now)):
        after = ctx.funds.debit(fund_id, shortfall.shortfall, now)
        return [], decision(FUND_COVERED, shortfall.shortfall, ZERO, ZERO, [], after)

    # 2. ADL: the allocation policy says who gives how much of the opposite side, at the bankruptcy price.
    request = Request(ctx.index, shortfall.symbol, not bankrupt_is_long, mark, shortfall.bankruptcy_price,
                      shortfall.quantity, spec.lot_size or FINEST_LOT, equity_of)
    closing_side = BUY if bankrupt_is_long else SELL  # counterparties are short when bankrupt is long
    expires_at = shortfall.ts + ctx.reservation_timeout_ms
    left, haircut = shortfall.quantity, ZERO
    orders: list[AdlOrder] = []
    for allocation in ctx.ranking.allocate(request):
        position, take = allocation.candidate.position, allocation.quantity
        oid = order_id(shortfall.event_id, allocation.rank)
        orders.append(
            AdlOrder(
                order_id=oid,
                shortfall_event_id=shortfall.event_id,
                symbol=shortfall.symbol,
                account_id=position.account_id,
                side=closing_side,
                quantity=take,
                price=shortfall.bankruptcy_price,
                bankrupt_account_id=shortfall.account_id,
                rank=allocation.rank,
                score=allocation.candidate.score,
                ts=shortfall.ts,
            )
        )
        ctx.reservations.reserve(oid, position, take, expires_at)
        ctx.reservations.reserve(oid, bankrupt, take, expires_at)
        left -= take
        haircut += take * request.haircut_per_unit
    outcome = ADL_PARTIAL if left > ZERO else ADL_FULL
    return orders, decision(outcome, ZERO, shortfall.quantity - left, left, orders, balance, rounded_to_wire(haircut))
