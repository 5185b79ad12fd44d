"""Wallet balances per (account, asset) (SPEC §1).

A BalanceUpdate sets the wallet absolutely as of its ``ts`` (an older one than held is ignored);
realized PnL and fees of fills *after* that ``ts`` are applied on top, those at or before it are
already in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .numbers import ZERO


@dataclass(slots=True)
class Wallet:
    balance: Decimal = ZERO
    as_of: int = -1


class Wallets:
    __slots__ = ("_wallets",)

    def __init__(self) -> None:
        self._wallets: dict[tuple[str, str], Wallet] = {}

    def balance(self, account_id: str, asset: str) -> Decimal:
        wallet = self._wallets.get((account_id, asset))
        return wallet.balance if wallet else ZERO

    def items(self):
        return self._wallets.items()

    def set_balance(self, account_id: str, asset: str, balance: Decimal, ts: int) -> bool:
        """Apply an absolute balance; False (ignored) when not newer than the one held."""
        wallet = self._wallets.setdefault((account_id, asset), Wallet())
        if ts <= wallet.as_of:
            return False
        wallet.balance, wallet.as_of = balance, ts
        return True

    def apply_fill(self, account_id: str, asset: str, amount: Decimal, ts: int) -> None:
        """Add a fill's realized PnL minus fee, unless the last balance already includes it."""
        wallet = self._wallets.setdefault((account_id, asset), Wallet())
        if ts > wallet.as_of:
            wallet.balance += amount
