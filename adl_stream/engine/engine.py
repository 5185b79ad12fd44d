"""The ADL engine: all state of one processor and the one entry point, :meth:`Engine.apply`.

Pure domain code: no Kafka, no I/O, no clock. Records go in, in the order the runtime decides;
outputs come back. A record that is rejected (bad field, unknown symbol, late, a withdrawal the fund
cannot pay, a shortfall for a position not held) raises :class:`~adl_stream.engine.errors.Rejected`
and changes no position, wallet, fund, mark or reservation; a repeated id has no effect
(``Outcome.duplicate``).

Stream time is the largest event time of the records whose *fields* were valid; it drives
reservation expiry and the de-duplication window, and it advances before the checks that depend
on state (so a shortfall sees the reservations that expired by its own time). The same records in
the same order always give the same outputs.

Event-time guard (SPEC §4, README "Event time: how far ahead, how far behind"): with
``max_event_skew_ms``, a record whose event time is further ahead of its *reference* than that is
rejected as ``future_event`` before it touches anything: it never moves stream time, expires a
reservation or evicts an id. The reference is stream time, or the record's ``received_ts`` (the
time the bus received it, given by the runtime) when that is later. A record with an id (fill,
fund flow, shortfall) older than ``max_lateness_ms`` before stream time is rejected as
``late_event``; the lateness bound is at most the de-duplication window, beyond which a repeat
could not be recognised. So is a balance update that late (README, "Lean positions"): every
balance still accepted is then at or after ``stream_time - max_lateness_ms``, and a wallet can
forget the fills before that horizon that it remembered for a late balance (:mod:`.wallets`).
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from . import validation
from .dedup import DUPLICATE, LATE, SeenIds
from .errors import Rejected
from .funds import FundExhausted, FundLedger, TriggerPolicy
from .index import Candidate, RankingIndex
from .indicators import AdlIndicator, IndicatorCleared, Indicators
from .numbers import EXACT
from .positions import PositionBook
from .allocation import AllocationPolicy, PnlLeverage, QueuePolicy
from .records import (
    ADL,
    BUY,
    FUND_COVERED,
    FUND_INFLOWS,
    LONG,
    AdlOrder,
    BalanceUpdate,
    Fill,
    FundFlow,
    InputRecord,
    LiquidationShortfall,
    MarkPrice,
    ShortfallDecision,
)
from .reservations import Reservation, ReservationBook
from .shortfall import ShortfallContext, decide
from .state import FUND, FUND_HISTORY, LIGHT, MARK, POSITION, RESERVATION, STREAM_TIME, WALLET
from .symbols import SymbolSpec
from .wallets import NO_WALLET, Wallets


_APPLYING = EXACT.copy()
"""The decimal context while a record is applied: :data:`.numbers.EXACT`."""


@dataclass(slots=True)
class Outcome:
    """What applying one record produced. The sequences are empty tuples unless the record made
    some (no list made per record: three empty lists were half the cost of an ``Outcome``)."""

    orders: Sequence[AdlOrder] = ()
    decision: ShortfallDecision | None = None
    expired: Sequence[Reservation] = ()
    indicators: Sequence[AdlIndicator | IndicatorCleared] = ()
    """ADL indicator lights that changed at an interval this record's time crossed (SPEC §3.6)."""
    duplicate: bool = False
    stale: bool = False
    """A mark or balance not newer than the one held: ignored by design (SPEC §1)."""


class Engine:
    def __init__(
        self,
        symbols: Mapping[str, SymbolSpec],
        *,
        trigger: TriggerPolicy | None = None,
        ranking: AllocationPolicy | None = None,
        reservation_timeout_ms: int = 60_000,
        dedup_window_ms: int = 86_400_000,
        indicator_interval_ms: int = 0,
        max_event_skew_ms: int | None = None,
        max_lateness_ms: int | None = None,
    ) -> None:
        """``max_event_skew_ms`` None: no record is refused for being ahead; ``max_lateness_ms``
        None: the de-duplication window (it may not exceed it)."""
        if max_lateness_ms is not None and max_lateness_ms > dedup_window_ms:
            raise ValueError(f"max_lateness_ms {max_lateness_ms} exceeds the de-duplication window {dedup_window_ms}")
        self.max_event_skew_ms = max_event_skew_ms
        self.max_lateness_ms = dedup_window_ms if max_lateness_ms is None else max_lateness_ms
        self.symbols = dict(symbols)
        self.assets = frozenset(spec.settle_asset for spec in self.symbols.values())
        self.fund_ids = frozenset(spec.fund_id for spec in self.symbols.values())
        self.book = PositionBook()
        self.wallets = Wallets()
        self._wallet_accounts = {asset: self.wallets.accounts(asset) for asset in self.assets}
        self.index = RankingIndex(lambda symbol: self.symbols[symbol].settle_asset, self.wallets)
        self.marks: dict[str, tuple[Decimal, int]] = {}
        trigger = trigger or FundExhausted()
        self.funds = FundLedger(trigger.window_ms)
        self.reservations = ReservationBook(self.index.position_changed)
        self.seen = SeenIds(dedup_window_ms)
        self.indicators = Indicators(indicator_interval_ms)
        self.stream_time = -1
        self._advanced: Outcome | None = None
        self._received_ts: int | None = None
        self.changed: dict[tuple[str, ...], None] = {}
        """Keys (:mod:`.state`) of the entities changed since the runtime last took them, in the
        order they first changed (a dict used as an ordered set: the same records give the same
        order, so :func:`.state.take` needs no sort for deterministic changelog bytes)."""
        self._shortfalls = ShortfallContext(
            book=self.book,
            index=self.index,
            funds=self.funds,
            reservations=self.reservations,
            trigger=trigger,
            ranking=ranking or PnlLeverage(),
            reservation_timeout_ms=reservation_timeout_ms,
        )
        self._handlers = {
            Fill: self._fill,
            MarkPrice: self._mark,
            BalanceUpdate: self._balance,
            FundFlow: self._flow,
            LiquidationShortfall: self._shortfall,
        }

    @property
    def policy(self) -> str:
        return self._shortfalls.policy

    # -- entry point -------------------------------------------------------------------------

    def apply(self, record: InputRecord, received_ts: int | None = None) -> Outcome:
        """Apply ``record``. ``received_ts``, when given, is when the bus received it (the Kafka
        record timestamp): an event time may be ``max_event_skew_ms`` ahead of it too."""
        handler = self._handlers.get(type(record))
        if handler is None:
            raise TypeError(f"not an input record: {type(record).__name__}")
        # The engine's context, set and put back (as decimal.localcontext, without its copy of the
        # context at every record: 0.25 us of the 10 us a fill costs). _APPLYING is the engine's
        # own copy of EXACT, so the flags it collects touch nothing else.
        caller = decimal.getcontext()
        decimal.setcontext(_APPLYING)
        self._advanced = None
        self._received_ts = received_ts
        try:
            return handler(record)
        except Rejected as rejected:  # stream time may have moved first: that stays, and is told
            rejected.outcome = self._advanced
            raise
        finally:
            decimal.setcontext(caller)

    # -- queries -----------------------------------------------------------------------------

    def mark(self, symbol: str) -> Decimal | None:
        held = self.marks.get(symbol)
        return held[0] if held else None

    def adl_queue(self, symbol: str, bankrupt_side: str, top: int | None = None) -> list[Candidate]:
        """Who a shortfall of a bankrupt ``bankrupt_side`` (LONG/SHORT) position in ``symbol`` would
        deleverage now, first first (the first ``top`` of them): the opposite side with free
        quantity, ranked at the latest mark (empty before the first mark)."""
        mark = self.mark(symbol)
        if mark is None:
            return []
        asset = self.symbols[symbol].settle_asset
        with decimal.localcontext(EXACT):
            return self.index.ranked(symbol, bankrupt_side != LONG, mark,
                                     lambda account: self._equity(account, asset),
                                     self.queue_policy().score, limit=top)

    def queue_policy(self):
        """The configured policy if it is a queue, else ``pnl-leverage`` (whose queue gives the
        spreading policies' ranks and the ADL indicators)."""
        policy = self._shortfalls.ranking
        return policy if isinstance(policy, QueuePolicy) else PnlLeverage()

    def equity(self, account_id: str, asset: str) -> Decimal:
        """Wallet balance plus unrealized PnL of the account's positions settled in ``asset``.

        A position whose symbol has no mark yet is valued at its entry price (upnl 0).
        """
        with decimal.localcontext(EXACT):
            return self._equity(account_id, asset)

    def _equity(self, account_id: str, asset: str) -> Decimal:
        """:meth:`equity` in the caller's (the engine's) context."""
        equity = self.wallets.balance(account_id, asset)
        for position in self.book.of_account(account_id):
            if self.symbols[position.symbol].settle_asset == asset:
                mark = self.mark(position.symbol)
                if mark is not None:
                    equity += position.upnl(mark)
        return equity

    # -- handlers ----------------------------------------------------------------------------

    def _check_time(self, ts: int) -> None:
        """Rejected as ``future_event`` when ``ts`` is more than ``max_event_skew_ms`` ahead of the
        later of stream time and the record's ``received_ts`` (nothing to compare before either)."""
        skew = self.max_event_skew_ms
        if skew is None:
            return
        received = self._received_ts
        reference = self.stream_time if received is None or received < self.stream_time else received
        if reference >= 0 and ts > reference + skew:
            by = "stream time" if reference == self.stream_time else "the time the bus received it"
            raise Rejected("future_event", f"ts {ts} is {ts - reference} ms ahead of {by} ({reference}); "
                           f"max_event_skew_ms is {skew}: is the producer's clock wrong?")

    def _check_new(self, id_: str, ts: int) -> bool:
        """True for an id not seen before; False for a duplicate; Rejected when too late to tell."""
        if id_ in self.seen:
            return False
        if ts < self.stream_time - self.max_lateness_ms:
            raise self._late(ts)
        return True

    def _late(self, ts: int) -> Rejected:
        return Rejected(
            "late_event",
            f"ts {ts} is more than max_event_lateness_ms ({self.max_lateness_ms} ms) behind "
            f"stream time {self.stream_time}",
        )

    def _advance(self, ts: int, outcome: Outcome) -> None:
        if ts > self.stream_time:
            self._advanced = outcome
            changed = self.changed
            crossed = self.indicators.due(self.stream_time, ts)
            self.stream_time = ts
            changed[STREAM_TIME] = None
            self.seen.evict(ts)  # its parts are taken as changes by state.take_changes
            expired = self.reservations.expire(ts)
            for reservation in expired:
                position = reservation.position
                self.book.discard_if_idle(position)
                changed[(RESERVATION, reservation.order_id, position.account_id)] = None
                changed[(POSITION, position.symbol, position.account_id)] = None
            outcome.expired = expired
            if crossed is not None:
                outcome.indicators = self.indicators.publish(self, crossed, changed)

    def _fill(self, fill: Fill) -> Outcome:
        spec, quantity, price, fee = validation.check_fill(fill, self.symbols)
        self._check_time(fill.ts)
        # _check_new and seen.add in one look-up (the id's segment holds fill.ts: _advance keeps it)
        horizon = self.stream_time - self.max_lateness_ms
        added = self.seen.add_new(fill.fill_id, fill.ts, horizon)
        if added == DUPLICATE:
            return Outcome(duplicate=True)
        if added == LATE:
            raise self._late(fill.ts)
        outcome = Outcome()
        self._advance(fill.ts, outcome)
        asset = spec.settle_asset
        accounts = self._wallet_accounts[asset]
        slot = accounts.slot_of.get(fill.account_id)
        if slot is None:
            slot = accounts.slot(fill.account_id)
        position = self.book.get(fill.account_id, fill.symbol)
        if position is None:  # held under one string object per account id, whichever record brought it
            position = self.book.open(accounts.ids[slot], fill.symbol)
        account = position.account_id
        if fill.kind == ADL:
            self.reservations.release(fill.adl_order_id, fill.account_id, fill.quantity)
        realized = position.apply_units(quantity if fill.side == BUY else -quantity, price)
        self.index.position_changed(position)
        if position.light and not position.q:  # closed: a tombstone for its light
            position.light = 0
            self.indicators.unlit.add((fill.symbol, fill.account_id))
            self.changed[(LIGHT, fill.symbol, fill.account_id)] = None
        opened = accounts.as_of[slot] == NO_WALLET  # the fill makes the account's wallet
        units = accounts.apply_fill(slot, realized - fee, fill.ts, self.stream_time - self.max_lateness_ms)
        if units is not None:
            self.index.balance_changed(account, asset, units)
        if not position.q:  # (an open position is never idle)
            self.book.discard_if_idle(position)
        changed = self.changed
        changed[(POSITION, fill.symbol, fill.account_id)] = None
        if units is not None or opened:  # a wallet the fill left as it was is not written again
            changed[(WALLET, fill.account_id, spec.settle_asset)] = None
        if fill.kind == ADL:
            changed[(RESERVATION, fill.adl_order_id, fill.account_id)] = None
        return outcome

    def _fund_changed(self, fund_id: str) -> None:
        self.changed[(FUND, fund_id)] = None
        if self.funds.window_ms is not None:
            self.changed[(FUND_HISTORY, fund_id)] = None

    def _wallet_changed(self, account_id: str, asset: str, amount: int, ts: int) -> None:
        """``amount`` in units of 1e-36."""
        units = self.wallets.apply_fill(account_id, asset, amount, ts, self.stream_time - self.max_lateness_ms)
        if units is not None:
            self.index.balance_changed(account_id, asset, units)

    def _mark(self, mark: MarkPrice) -> Outcome:
        validation.check_mark(mark, self.symbols)
        self._check_time(mark.ts)
        held = self.marks.get(mark.symbol)
        if held is not None and mark.ts <= held[1]:
            return Outcome(stale=True)
        outcome = Outcome()
        self._advance(mark.ts, outcome)
        self.marks[mark.symbol] = (mark.mark_price, mark.ts)
        self.index.mark_changed(mark.symbol, mark.mark_price)
        self.changed[(MARK, mark.symbol)] = None
        return outcome

    def _balance(self, update: BalanceUpdate) -> Outcome:
        balance = validation.check_balance(update, self.assets)
        self._check_time(update.ts)
        if update.ts < self.stream_time - self.max_lateness_ms:  # the wallets fold what it could reach
            raise Rejected(
                "late_event",
                f"balance ts {update.ts} is more than max_event_lateness_ms ({self.max_lateness_ms} ms) "
                f"behind stream time {self.stream_time}",
            )
        outcome = Outcome()
        units = self.wallets.set_balance(update.account_id, update.asset, balance, update.ts)
        if units is None:
            outcome.stale = True
            return outcome
        self._advance(update.ts, outcome)
        self.index.balance_changed(update.account_id, update.asset, units)
        self.changed[(WALLET, update.account_id, update.asset)] = None
        return outcome

    def _flow(self, flow: FundFlow) -> Outcome:
        validation.check_flow(flow, self.fund_ids)
        self._check_time(flow.ts)
        if not self._check_new(flow.flow_id, flow.ts):
            return Outcome(duplicate=True)
        outcome = Outcome()
        self._advance(flow.ts, outcome)
        if flow.kind not in FUND_INFLOWS:
            self.funds.check_debit(flow.fund_id, flow.amount)
        self.seen.add(flow.flow_id, flow.ts)
        self.funds.credit(flow.fund_id, flow.amount if flow.kind in FUND_INFLOWS else -flow.amount, self.stream_time)
        self._fund_changed(flow.fund_id)
        return outcome

    def _shortfall(self, shortfall: LiquidationShortfall) -> Outcome:
        spec = validation.check_shortfall(shortfall, self.symbols)
        self._check_time(shortfall.ts)
        if not self._check_new(shortfall.event_id, shortfall.ts):
            return Outcome(duplicate=True)
        # Ranking values positions at the latest mark; before the first mark, at the bankruptcy price.
        mark = self.mark(shortfall.symbol) or shortfall.bankruptcy_price
        asset = spec.settle_asset
        outcome = Outcome()
        self._advance(shortfall.ts, outcome)
        # decide() checks the bankrupt position before it changes anything.
        orders, decision = decide(
            shortfall, spec, mark, lambda account: self._equity(account, asset), self._shortfalls, self.stream_time
        )
        self.seen.add(shortfall.event_id, shortfall.ts)
        changed = self.changed
        if decision.outcome == FUND_COVERED:
            self._fund_changed(decision.fund_id)
        for order in orders:
            for account in (order.account_id, order.bankrupt_account_id):
                changed[(RESERVATION, order.order_id, account)] = None
                changed[(POSITION, order.symbol, account)] = None
        outcome.orders, outcome.decision = orders, decision
        return outcome

    # -- state view ----------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """The whole state as plain, ordered data (for inspection and state comparison)."""
        return {
            "stream_time": self.stream_time,
            "positions": {
                f"{p.symbol}/{p.account_id}": (p.quantity, p.cost, p.reserved)
                for p in sorted(self.book, key=lambda p: (p.symbol, p.account_id))
            },
            "wallets": {f"{a}/{asset}": (w.balance, w.as_of) for (a, asset), w in sorted(self.wallets.items())},
            "funds": dict(sorted(self.funds.balances().items())),
            "marks": dict(sorted(self.marks.items())),
            "reservations": sorted(
                (r.order_id, r.position.account_id, r.quantity, r.expires_at) for r in self.reservations
            ),
            "seen_ids": len(self.seen),
        }
