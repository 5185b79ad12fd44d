"""Wallet balances per (account, asset) (SPEC §1).

A BalanceUpdate sets the wallet absolutely as of its ``ts`` (one not newer than the held one is
ignored). Realized PnL and fees of fills *after* that ``ts`` are applied on top; those at or before
it are already in it. A wallet remembers the fills applied after its ``as_of``, so a balance that
arrives after a later fill keeps that fill's PnL instead of wiping it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .numbers import ZERO


@dataclass(slots=True)
class Wallet:
    balance: Decimal = ZERO
    as_of: int = -1
    #: (ts, amount) of the fills applied after ``as_of``.
    after: list[tuple[int, Decimal]] = field(default_factory=list)


class Wallets:
    __slots__ = ("_wallets",)

    def __init__(self) -> None:
        self._wallets: dict[tuple[str, str], Wallet] = {}

    def balance(self, account_id: str, asset: str) -> Decimal:
        wallet = self._wallets.get((account_id, asset))
        return wallet.balance if wallet else ZERO

    def items(self):
        return self._wallets.items()

    def get(self, account_id: str, asset: str) -> Wallet | None:
        return self._wallets.get((account_id, asset))

    def put(self, account_id: str, asset: str, wallet: Wallet) -> None:
        """Set a wallet as a whole (restoring state)."""
        self._wallets[(account_id, asset)] = wallet

    def set_balance(self, account_id: str, asset: str, balance: Decimal, ts: int) -> bool:
        """Apply an absolute balance; False (ignored) when not newer than the one held."""
        wallet = self._wallets.setdefault((account_id, asset), Wallet())
        if ts <= wallet.as_of:
            return False
        wallet.after = [(t, amount) for t, amount in wallet.after if t > ts]
        wallet.balance = balance + sum((amount for _, amount in wallet.after), ZERO)
        wallet.as_of = ts
        return True

    def apply_fill(self, account_id: str, asset: str, amount: Decimal, ts: int) -> Wallet | None:
        """Add a fill's realized PnL minus fee, unless the last balance already includes it; the
        wallet when its balance moved."""
        wallet = self._wallets.setdefault((account_id, asset), Wallet())
        if ts > wallet.as_of:
            wallet.after.append((ts, amount))
            if amount:
                wallet.balance += amount
                return wallet
        return None
