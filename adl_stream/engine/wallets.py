"""Wallet balances per (account, asset) (SPEC §1).

A BalanceUpdate sets the wallet absolutely as of its ``ts`` (one not newer than the held one is
ignored). Realized PnL and fees of fills *after* that ``ts`` are applied on top; those at or before
it are already in it. A wallet remembers the fills applied after its ``as_of``, so a balance that
arrives after a later fill keeps that fill's PnL instead of wiping it.

Folding (README, "Lean positions"): a balance more than ``max_lateness_ms`` behind stream time is
rejected as ``late_event`` (:class:`~adl_stream.engine.engine.Engine`), so every balance accepted
from now on has ``ts >= horizon = stream_time - max_lateness_ms``; a fill at or before the horizon
is then already in any balance that can still arrive, and no balance will ever keep it. When a fill
is added, the fills at the head of ``after`` that are at or before the horizon are dropped (their
amounts stay in the balance): ``after`` holds the fills of about ``max_lateness_ms``, not every
fill since the last balance. Dropping them changes no balance that any input can produce.

Storage (README, "Lean positions"): no object per wallet. The accounts of one settle asset have
dense *slots* (:class:`Accounts`), shared with the ranking index's columns (:mod:`.index`), and a
wallet is a slot's entries in three columns: the balance, its ``as_of``, and (only while there are
some) the fills after it. :class:`Wallet` is the value that :meth:`Wallets.get` returns and
:meth:`Wallets.put` takes.
"""

from __future__ import annotations

from array import array
from decimal import Decimal

import numpy as np

from .numbers import MONEY_SCALE, ZERO, of_units, shared_int, shared_ints as _shared_ints, to_units

NO_WALLET = -(1 << 63)
"""``as_of`` of a slot whose account has no wallet in the asset (a slot the index made first)."""


class Wallet:
    """A wallet's value: ``units`` its balance in integer units of 1e-36 (:mod:`.numbers`),
    ``balance`` the same as a ``Decimal``; ``after`` the (ts, amount in units) of the fills applied
    after ``as_of``, None while there is none."""

    __slots__ = ("units", "as_of", "after")

    def __init__(self, balance: Decimal = ZERO, as_of: int = -1,
                 after: list[tuple[int, Decimal]] | None = None) -> None:
        self.units = to_units(balance, MONEY_SCALE) if balance else 0
        self.as_of = as_of
        self.after = [(ts, to_units(amount, MONEY_SCALE)) for ts, amount in after] if after else None

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


class Accounts:
    """The accounts of one settle asset by dense slot, and their wallets as columns by slot:
    ``units`` the balance (integers of 1e-36), ``as_of`` (:data:`NO_WALLET` for none), ``after``
    (by slot, the fills after ``as_of``, None for none). ``ids`` gives the one
    string object of each account id that the book and the index hold."""

    __slots__ = ("slot_of", "ids", "units", "as_of", "after")

    def __init__(self) -> None:
        self.slot_of: dict[str, int] = {}
        self.ids: list[str] = []
        self.units: list[int] = []
        self.as_of = array("q")
        self.after: list[list[tuple[int, int]] | None] = []

    def __len__(self) -> int:
        return len(self.ids)

    def slot(self, account_id: str) -> int:
        slot = self.slot_of.get(account_id)
        if slot is None:
            slot = self.slot_of[account_id] = shared_int(len(self.ids))
            self.ids.append(account_id)
            self.units.append(0)
            self.as_of.append(NO_WALLET)
            self.after.append(None)
        return slot

    def load_ids(self, account_ids: list[str]) -> list[int] | None:
        """Fill a fresh table with ``account_ids`` (a restore's column, an id possibly repeated):
        their slots in the order the ids first appear, every wallet column at its default. Returns
        None when no id repeats (row ``i`` is slot ``i``), else the last row of each slot's id (a
        later row overriding an earlier one, as a dict's ``update`` does). One dict is built either
        way: it maps each id to its last row first, then its values are renumbered in place."""
        n, slot_of = len(account_ids), self.slot_of
        slot_of.update(zip(account_ids, _shared_ints(0, n)))  # id -> its last row
        last = None
        if len(slot_of) < n:
            last = list(slot_of.values())
            n = len(last)
            slot_of.update(zip(list(slot_of), _shared_ints(0, n)))  # (the same keys: no new entry)
            account_ids = list(slot_of)
        self.ids, self.units, self.after = list(account_ids), [0] * n, [None] * n
        self.as_of = array("q", [NO_WALLET]) * n
        return last

    def slots(self, account_ids: list[str]) -> list[int]:
        """:meth:`slot` of each of ``account_ids`` (a restore's columns): the accounts new here get
        their slots in one pass, in the order they first appear."""
        if not self.slot_of:  # a fresh table (a restore): every id new, in order
            last = self.load_ids(account_ids)
            return _shared_ints(0, len(account_ids)) if last is None else list(map(self.slot_of.__getitem__, account_ids))
        get = self.slot_of.get
        slots = list(map(get, account_ids))
        if None in slots:
            new = list(dict.fromkeys([a for a, slot in zip(account_ids, slots) if slot is None]))
            start, n = len(self.ids), len(new)
            shared_int(start + n)
            self.slot_of.update(zip(new, _shared_ints(start, start + n)))
            self.ids += new
            self.units += [0] * n
            self.as_of.extend(array("q", [NO_WALLET]) * n)
            self.after += [None] * n
            slots = list(map(get, account_ids))
        return slots

    def apply_fill(self, slot: int, amount: int, ts: int, horizon: int | None = None) -> int | None:
        """:meth:`Wallets.apply_fill` for the account in ``slot``."""
        as_of = self.as_of[slot]
        if as_of == NO_WALLET:
            self.as_of[slot] = as_of = -1
        if ts <= as_of or not amount:
            return None
        self.units[slot] = units = self.units[slot] + amount
        after = self.after[slot]
        if after is None:
            self.after[slot] = [(ts, amount)]
            return units
        if horizon is not None and after[0][0] <= horizon:
            folded, n = 1, len(after)
            while folded < n and after[folded][0] <= horizon:
                folded += 1
            del after[:folded]
        after.append((ts, amount))
        return units

    def wallet(self, slot: int) -> Wallet | None:
        as_of = self.as_of[slot]
        if as_of == NO_WALLET:
            return None
        wallet = Wallet(ZERO, as_of)
        wallet.units = self.units[slot]
        after = self.after[slot]
        wallet.after = list(after) if after else None
        return wallet


class Wallets:
    """Wallets by settle asset, then account."""

    __slots__ = ("_assets",)

    def __init__(self) -> None:
        self._assets: dict[str, Accounts] = {}

    def accounts(self, asset: str) -> Accounts:
        """The accounts of ``asset`` (made empty on first use): the index shares their slots."""
        accounts = self._assets.get(asset)
        if accounts is None:
            accounts = self._assets[asset] = Accounts()
        return accounts

    def account(self, account_id: str, asset: str) -> str:
        """The string object that stands for ``account_id`` wherever the engine keeps it (the first
        one seen in ``asset``): one copy of each id, whichever record object brought it."""
        accounts = self.accounts(asset)
        return accounts.ids[accounts.slot(account_id)]

    def balance(self, account_id: str, asset: str) -> Decimal:
        accounts = self._assets.get(asset)
        slot = None if accounts is None else accounts.slot_of.get(account_id)
        return ZERO if slot is None else of_units(accounts.units[slot], MONEY_SCALE)

    def items(self):
        """((account_id, asset), wallet) of every wallet, by asset, then account in arrival order."""
        for asset, accounts in self._assets.items():
            for account_id, slot in accounts.slot_of.items():
                wallet = accounts.wallet(slot)
                if wallet is not None:
                    yield (account_id, asset), wallet

    def keys(self):
        """(account_id, asset) of every wallet, in the order of :meth:`items` (no wallet built)."""
        for asset, accounts in self._assets.items():
            as_of = accounts.as_of
            for account_id, slot in accounts.slot_of.items():
                if as_of[slot] != NO_WALLET:
                    yield account_id, asset

    def count(self) -> int:
        """How many wallets :meth:`keys` lists (one numpy pass over each asset's ``as_of``)."""
        return sum(len(accounts.as_of) - int(np.count_nonzero(np.frombuffer(accounts.as_of, np.int64) == NO_WALLET))
                   for accounts in self._assets.values() if len(accounts.as_of))

    def get(self, account_id: str, asset: str) -> Wallet | None:
        """The wallet's value now (a copy: changing it changes nothing held)."""
        accounts = self._assets.get(asset)
        slot = None if accounts is None else accounts.slot_of.get(account_id)
        return None if slot is None else accounts.wallet(slot)

    def exact(self, account_id: str, asset: str) -> tuple[int, int, tuple] | None:
        """The wallet's value now as ``(units, as_of, after)`` (what the changelog holds), or None:
        :meth:`get` without the :class:`Wallet` it builds (the changelog gathers one per fill)."""
        accounts = self._assets.get(asset)
        slot = None if accounts is None else accounts.slot_of.get(account_id)
        if slot is None:
            return None
        as_of = accounts.as_of[slot]
        if as_of == NO_WALLET:
            return None
        after = accounts.after[slot]
        return (accounts.units[slot], as_of, tuple(after) if after else ())

    def load(self, wallets) -> dict[str, tuple[list[int], list[int]]]:
        """Set wallets given as columns (a restore, in bulk; a :class:`~.state.WalletRun`: row ``i``
        is ``(accounts[i], assets[i]) -> (units[i], as_of[i], after.get(i, ()))``, a later row of
        the same key overriding an earlier one). Per asset, the slots are found in one pass and the
        columns set as one slice where the slots are new and consecutive (a fresh engine), else slot
        by slot. Returns, per asset, the slots set (each once) and their balances (units)."""
        account_ids, assets, units, as_of, after = wallets
        if not account_ids:
            return {}
        first_asset = assets[0]
        by_asset: dict[str, list[int] | None] = {}
        if assets.count(first_asset) == len(assets):  # (the usual case: one settle asset)
            by_asset[first_asset] = None
        else:
            for row, asset in enumerate(assets):
                of_asset = by_asset.get(asset)
                if of_asset is None:
                    of_asset = by_asset[asset] = []
                of_asset.append(row)
        out = {}
        for asset, rows in by_asset.items():
            if rows is None:
                ids, values, times, later = account_ids, units, as_of, after
            else:
                ids, values = [account_ids[i] for i in rows], [units[i] for i in rows]
                times = [as_of[i] for i in rows]
                later = {n: after[i] for n, i in enumerate(rows) if i in after} if after else {}
            accounts = self.accounts(asset)
            if not accounts.slot_of:  # a fresh table (a restore): slots 0..m-1 in one pass, set as slices
                last = accounts.load_ids(ids)
                if last is not None:  # an id repeats: each slot takes its id's last row
                    values, times = [values[row] for row in last], [times[row] for row in last]
                    slot_of, kept = accounts.slot_of, {}
                    for row, amounts in later.items():  # (few: the wallets with fills after their balance)
                        slot = slot_of[ids[row]]
                        if last[slot] == row:
                            kept[slot] = amounts
                    later = kept
                accounts.units[:] = values
                accounts.as_of[:] = array("q", times)
                for slot, amounts in later.items():
                    accounts.after[slot] = list(amounts)
                out[asset] = (_shared_ints(0, len(values)), values)
                continue
            slots = accounts.slots(ids)
            units_of, as_of_of, after_of = accounts.units, accounts.as_of, accounts.after
            for row, (slot, balance, at) in enumerate(zip(slots, values, times)):  # a later row overrides
                units_of[slot], as_of_of[slot] = balance, at
                amounts = later.get(row)
                after_of[slot] = list(amounts) if amounts else None
            distinct = list(dict.fromkeys(slots))
            out[asset] = (distinct, [units_of[slot] for slot in distinct])
        return out

    def put(self, account_id: str, asset: str, wallet: Wallet) -> None:
        """Set a wallet as a whole (restoring state)."""
        accounts = self.accounts(asset)
        slot = accounts.slot(account_id)
        accounts.units[slot], accounts.as_of[slot] = wallet.units, wallet.as_of
        accounts.after[slot] = list(wallet.after) if wallet.after else None

    def set_balance(self, account_id: str, asset: str, balance: int, ts: int) -> int | None:
        """Apply an absolute balance (in units of 1e-36); the balance now (units), or None (ignored)
        when not newer than the one held."""
        accounts = self.accounts(asset)
        slot = accounts.slot(account_id)
        if ts <= accounts.as_of[slot]:  # NO_WALLET is below every ts
            return None
        after = accounts.after[slot]
        kept = [(t, amount) for t, amount in after if t > ts] if after else None
        accounts.after[slot] = kept or None
        if kept:
            balance += sum(amount for _, amount in kept)
        accounts.units[slot], accounts.as_of[slot] = balance, ts
        return balance

    def apply_fill(self, account_id: str, asset: str, amount: int, ts: int, horizon: int | None = None) -> int | None:
        """Add a fill's realized PnL minus fee (in units of 1e-36), unless the last balance already
        includes it; the balance now (units) when it moved, else None. ``horizon``: no balance at or
        before it can be accepted any more, so the fills at the head of ``after`` at or before it are
        folded (module docstring)."""
        accounts = self.accounts(asset)
        return accounts.apply_fill(accounts.slot(account_id), amount, ts, horizon)
