"""Insurance funds: balances moved by flows and covered shortfalls, and the trigger policies that
say when a shortfall goes to ADL instead of the fund (SPEC §3.1).

Trigger policies are small named callables, ``policy(balance, shortfall, peak) -> bool`` (True: run
ADL), in the manner of tenacity's stop/wait objects: each is tested alone and chosen by
configuration. ``peak`` is the highest balance the fund held within the policy's ``window_ms`` of
stream time (the balance now, for a policy without a window).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Protocol

from .errors import Rejected
from .numbers import ZERO


class TriggerPolicy(Protocol):
    name: str
    #: Stream time over which the peak balance is kept (None: no history is kept).
    window_ms: int | None

    def __call__(self, balance: Decimal, shortfall: Decimal, peak: Decimal) -> bool:
        """True when the shortfall must be resolved by ADL rather than paid by the fund."""


@dataclass(frozen=True, slots=True)
class FundExhausted:
    """ADL only when the fund cannot pay the whole shortfall (the default)."""

    name: ClassVar[str] = "fund-exhausted"
    window_ms: ClassVar[None] = None

    def __call__(self, balance: Decimal, shortfall: Decimal, peak: Decimal) -> bool:
        return balance < shortfall


@dataclass(frozen=True, slots=True)
class FundFloor:
    """ADL when paying would take the fund below ``floor`` (>= 0)."""

    floor: Decimal
    name: ClassVar[str] = "fund-floor"
    window_ms: ClassVar[None] = None

    def __call__(self, balance: Decimal, shortfall: Decimal, peak: Decimal) -> bool:
        return balance - shortfall < self.floor


@dataclass(frozen=True, slots=True)
class Drawdown:
    """OKX style: ADL when paying would leave the fund more than ``pct`` percent below the highest
    balance it held within the last ``window_ms`` of stream time (OKX: 30 % within 8 h), or when
    it cannot pay at all."""

    pct: Decimal
    window_ms: int
    name: ClassVar[str] = "drawdown"

    def __call__(self, balance: Decimal, shortfall: Decimal, peak: Decimal) -> bool:
        after = balance - shortfall
        return after < 0 or after * 100 < peak * (100 - self.pct)


TRIGGER_POLICIES = (FundExhausted.name, FundFloor.name, Drawdown.name)


def trigger_policy(name: str, *, fund_floor: Decimal = Decimal(0), drawdown_pct: Decimal | None = None,
                   drawdown_window_ms: int | None = None) -> TriggerPolicy:
    """The trigger policy ``name`` (one of :data:`TRIGGER_POLICIES`) with its settings."""
    if name == FundFloor.name:
        return FundFloor(fund_floor)
    if name == Drawdown.name:
        return Drawdown(drawdown_pct, drawdown_window_ms)
    if name == FundExhausted.name:
        return FundExhausted()
    raise ValueError(f"unknown trigger policy {name!r}; choose from {', '.join(TRIGGER_POLICIES)}")


class FundLedger:
    """Balance of every insurance fund (never below zero) and, for a trigger with a window, the
    balances each fund held within it.

    The history is a monotonic deque per fund of ``[time, balance, until]``: the balance set at
    stream time ``time`` and held until the next change (``until``, None while it is the latest),
    each entry higher than every later one (a later, higher balance makes earlier ones irrelevant
    to the peak). An entry leaves once the window no longer reaches its ``until``, so the balance
    held at the start of the window counts. Times are stream time, which never goes back.
    """

    __slots__ = ("_balances", "_history", "window_ms")

    def __init__(self, window_ms: int | None = None) -> None:
        self._balances: dict[str, Decimal] = {}
        self._history: dict[str, list[list]] = {}
        self.window_ms = window_ms

    def balance(self, fund_id: str) -> Decimal:
        return self._balances.get(fund_id, ZERO)

    def balances(self) -> dict[str, Decimal]:
        return dict(self._balances)

    def held(self, fund_id: str) -> Decimal | None:
        """The balance of a fund that has had a flow or a debit; None for one never touched."""
        return self._balances.get(fund_id)

    def check_debit(self, fund_id: str, amount: Decimal) -> None:
        """Raise :class:`Rejected` unless ``amount`` can be taken from the fund."""
        if amount > self.balance(fund_id):
            raise Rejected(
                "fund_overdraft",
                f"debit of {amount} exceeds fund {fund_id!r} balance {self.balance(fund_id)}",
            )

    def credit(self, fund_id: str, amount: Decimal, now: int) -> Decimal:
        self._balances[fund_id] = balance = self.balance(fund_id) + amount
        if self.window_ms is not None:
            self._remember(fund_id, balance, now)
        return balance

    def debit(self, fund_id: str, amount: Decimal, now: int) -> Decimal:
        self.check_debit(fund_id, amount)
        return self.credit(fund_id, -amount, now)

    def _remember(self, fund_id: str, balance: Decimal, now: int) -> None:
        history = self._history.setdefault(fund_id, [])
        if history:
            history[-1][2] = now
        while history and history[-1][1] <= balance:
            history.pop()
        history.append([now, balance, None])
        horizon = now - self.window_ms
        while history[0][2] is not None and history[0][2] <= horizon:
            del history[0]

    def peak(self, fund_id: str, now: int) -> Decimal:
        """The highest balance held within the window before ``now`` (the balance, without one)."""
        history = self._history.get(fund_id)
        if self.window_ms is None or not history:
            return self.balance(fund_id)
        horizon = now - self.window_ms
        for _, balance, until in history:
            if until is None or until > horizon:
                return balance
        raise AssertionError("the latest entry never leaves the history")

    def history(self, fund_id: str) -> tuple[tuple[int, Decimal, int | None], ...] | None:
        history = self._history.get(fund_id)
        return None if not history else tuple(tuple(entry) for entry in history)

    def histories(self) -> list[str]:
        """The funds that have a balance history."""
        return [fund_id for fund_id, history in self._history.items() if history]

    def restore(self, fund_id: str, balance: Decimal | None, history=None) -> None:
        if balance is not None:
            self._balances[fund_id] = balance
        if history:
            self._history[fund_id] = [list(entry) for entry in history]
