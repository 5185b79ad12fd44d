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
    #: (ts, amount) of the fills applied after ``as_of``; None while there is none.
    after: list[tuple[int, Decimal]] | None = None


class Wallets:
    """Wallets by settle asset, then account."""

    __slots__ = ("_wallets",)

    def __init__(self) -> None:
        self._wallets: dict[str, dict[str, Wallet]] = {}

    def balance(self, account_id: str, asset: str) -> Decimal:
        wallet = self.get(account_id, asset)
        return wallet.balance if wallet else ZERO

    def items(self):
        """((account_id, asset), wallet) of every wallet, by asset, then account in arrival order."""
        for asset, of_asset in self._wallets.items():
            for account_id, wallet in of_asset.items():
                yield (account_id, asset), wallet

    def get(self, account_id: str, asset: str) -> Wallet | None:
        of_asset = self._wallets.get(asset)
        return None if of_asset is None else of_asset.get(account_id)

    def _open(self, account_id: str, asset: str) -> Wallet:
        of_asset = self._wallets.get(asset)
        if of_asset is None:
            of_asset = self._wallets[asset] = {}
        wallet = of_asset.get(account_id)
        if wallet is None:
            wallet = of_asset[account_id] = Wallet()
        return wallet

    def put(self, account_id: str, asset: str, wallet: Wallet) -> None:
        """Set a wallet as a whole (restoring state)."""
        self._wallets.setdefault(asset, {})[account_id] = wallet

    def set_balance(self, account_id: str, asset: str, balance: Decimal, ts: int) -> Wallet | None:
        """Apply an absolute balance; the wallet, or None (ignored) when not newer than the one held."""
        wallet = self._open(account_id, asset)
        if ts <= wallet.as_of:
            return None
        kept = [(t, amount) for t, amount in wallet.after or () if t > ts]
        wallet.after = kept or None
        wallet.balance = balance + sum((amount for _, amount in kept), ZERO)
        wallet.as_of = ts
        return wallet

    def apply_fill(self, account_id: str, asset: str, amount: Decimal, ts: int) -> Wallet | None:
        """Add a fill's realized PnL minus fee, unless the last balance already includes it; the
        wallet when its balance moved."""
        wallet = self._open(account_id, asset)
        if ts > wallet.as_of and amount:
            wallet.balance += amount
            if wallet.after is None:
                wallet.after = []
            wallet.after.append((ts, amount))
            return wallet
        return None
