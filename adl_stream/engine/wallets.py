"""Wallet balances per (account, asset) (SPEC §1).

A BalanceUpdate sets the wallet absolutely as of its ``ts`` (one not newer than the held one is
ignored). Realized PnL and fees of fills *after* that ``ts`` are applied on top; those at or before
it are already in it. A wallet remembers the fills applied after its ``as_of``, so a balance that
arrives after a later fill keeps that fill's PnL instead of wiping it.
"""

from __future__ import annotations

from decimal import Decimal

from .numbers import MONEY_SCALE, ZERO, of_units, to_units


class Wallet:
    """A wallet: ``units`` its balance in integer units of 1e-36 (:mod:`.numbers`), ``balance`` the
    same as a ``Decimal``; ``after`` the (ts, amount in units) of the fills applied after ``as_of``,
    None while there is none."""

    __slots__ = ("units", "as_of", "after")

    def __init__(self, balance: Decimal = ZERO, as_of: int = -1,
                 after: list[tuple[int, Decimal]] | None = None) -> None:
        self.units = to_units(balance, MONEY_SCALE) if balance else 0
        self.as_of = as_of
        self.after = [(ts, to_units(amount, MONEY_SCALE)) for ts, amount in after] if after else None

    @classmethod
    def of_units(cls, units: int, as_of: int, after: tuple[tuple[int, int], ...] = ()) -> Wallet:
        """A wallet from its exact values in units (as :class:`.state.Entities` holds them)."""
        wallet = cls.__new__(cls)
        wallet.units, wallet.as_of, wallet.after = units, as_of, list(after) or None
        return wallet

    def __repr__(self) -> str:
        return f"Wallet(balance={self.balance}, as_of={self.as_of}, after={self.amounts_after()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wallet):
            return NotImplemented
        return (self.units, self.as_of, self.after) == (other.units, other.as_of, other.after)

    __hash__ = None  # type: ignore[assignment]

    @property
    def balance(self) -> Decimal:
        return of_units(self.units, MONEY_SCALE)

    def amounts_after(self) -> tuple[tuple[int, Decimal], ...]:
        """``after`` with the amounts as ``Decimal``."""
        return tuple((ts, of_units(amount, MONEY_SCALE)) for ts, amount in self.after or ())


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

    def load(self, wallets: dict[tuple[str, str], tuple[int, int, tuple]]) -> None:
        """Add wallets ``(account, asset) -> (units, as_of, after)`` (a restore, in bulk)."""
        of_units = Wallet.of_units
        for (account_id, asset), (units, as_of, after) in wallets.items():
            of_asset = self._wallets.get(asset)
            if of_asset is None:
                of_asset = self._wallets[asset] = {}
            of_asset[account_id] = of_units(units, as_of, after)

    def put(self, account_id: str, asset: str, wallet: Wallet) -> None:
        """Set a wallet as a whole (restoring state)."""
        self._wallets.setdefault(asset, {})[account_id] = wallet

    def set_balance(self, account_id: str, asset: str, balance: int, ts: int) -> Wallet | None:
        """Apply an absolute balance (in units of 1e-36); the wallet, or None (ignored) when not newer
        than the one held."""
        wallet = self._open(account_id, asset)
        if ts <= wallet.as_of:
            return None
        kept = [(t, amount) for t, amount in wallet.after or () if t > ts]
        wallet.after = kept or None
        wallet.units = balance + sum(amount for _, amount in kept)
        wallet.as_of = ts
        return wallet

    def apply_fill(self, account_id: str, asset: str, amount: int, ts: int) -> Wallet | None:
        """Add a fill's realized PnL minus fee (in units of 1e-36), unless the last balance already
        includes it; the wallet when its balance moved."""
        wallet = self._open(account_id, asset)
        if ts > wallet.as_of and amount:
            wallet.units += amount
            if wallet.after is None:
                wallet.after = []
            wallet.after.append((ts, amount))
            return wallet
        return None
