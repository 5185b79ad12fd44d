"""Insurance funds: balances moved by flows and covered shortfalls, and the trigger policies that
say when a shortfall goes to ADL instead of the fund (SPEC §3.1).

Trigger policies are small named callables, ``policy(balance, shortfall) -> bool`` (True: run ADL),
in the manner of tenacity's stop/wait objects: each is tested alone and chosen by configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Protocol

from .errors import Rejected
from .numbers import ZERO


class TriggerPolicy(Protocol):
    name: str

    def __call__(self, balance: Decimal, shortfall: Decimal) -> bool:
        """True when the shortfall must be resolved by ADL rather than paid by the fund."""


@dataclass(frozen=True, slots=True)
class FundExhausted:
    """ADL only when the fund cannot pay the whole shortfall (the default)."""

    name: ClassVar[str] = "fund-exhausted"

    def __call__(self, balance: Decimal, shortfall: Decimal) -> bool:
        return balance < shortfall


@dataclass(frozen=True, slots=True)
class FundFloor:
    """ADL when paying would take the fund below ``floor`` (>= 0)."""

    floor: Decimal
    name: ClassVar[str] = "fund-floor"

    def __call__(self, balance: Decimal, shortfall: Decimal) -> bool:
        return balance - shortfall < self.floor


class FundLedger:
    """Balance of every insurance fund; never below zero."""

    __slots__ = ("_balances",)

    def __init__(self) -> None:
        self._balances: dict[str, Decimal] = {}

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

    def credit(self, fund_id: str, amount: Decimal) -> Decimal:
        self._balances[fund_id] = balance = self.balance(fund_id) + amount
        return balance

    def debit(self, fund_id: str, amount: Decimal) -> Decimal:
        self.check_debit(fund_id, amount)
        return self.credit(fund_id, -amount)
