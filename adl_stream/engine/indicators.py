"""ADL indicator lights (SPEC §3.6, as Binance's and Bybit's ADL lights): where each position stands
in its side's ADL queue, published so that nobody is surprised by an ADL.

Each time stream time crosses a multiple of ``interval_ms``, every symbol with a mark has both sides
ranked by the queue (the configured queue policy, or ``pnl-leverage`` under a spreading policy),
over the positions with free quantity; a position of rank ``r`` among ``n`` gets
``light = 5 - floor(5 * (r - 1) / n)`` (5: first in line). A record goes out only for a position
whose light (or side) changed since the last one published for it; a position that closed gets a
tombstone. A fully reserved position keeps its last light until it is ranked again.

The last light published is kept on the position (``Position.light``, signed: + long, - short), so
the pass compares in one vectorized step; the keys of closed positions waiting for their tombstone
are :attr:`Indicators.unlit`. Both are engine state (changelog entity ``("l", symbol, account)``).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np

from .records import LONG, SHORT, by_column

if TYPE_CHECKING:
    from .engine import Engine

LIGHTS = (1, 2, 3, 4, 5)
_LIGHT, _ACCOUNT_ID = attrgetter("light"), attrgetter("account_id")


@dataclass(frozen=True, slots=True)
class AdlIndicator:
    """A position's place in its side's ADL queue (topic ``adl-indicators``, key ``<symbol>:<account_id>``)."""

    symbol: str
    account_id: str
    side: str
    light: int
    rank: int
    positions: int
    score: float
    ts: int

    @property
    def key(self) -> str:
        return f"{self.symbol}:{self.account_id}"


@dataclass(frozen=True, slots=True)
class IndicatorCleared:
    """The position closed: a tombstone for its key."""

    symbol: str
    account_id: str
    ts: int

    @property
    def key(self) -> str:
        return f"{self.symbol}:{self.account_id}"


_LIGHTS_OF = by_column(AdlIndicator)


def lights(n: int) -> np.ndarray:
    """The light of each rank 1..n."""
    return 5 - (5 * np.arange(n)) // n


class Indicators:
    __slots__ = ("interval_ms", "unlit", "counts")

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.unlit: set[tuple[str, str]] = set()
        """(symbol, account) of lit positions that went flat: a tombstone at the next pass."""
        self.counts: Counter[tuple[str, str, int]] = Counter()
        """Positions per (symbol, side, light) at the last pass."""

    def due(self, before: int, now: int) -> int | None:
        """The multiple of the interval crossed when stream time moves from ``before`` to ``now``."""
        if self.interval_ms and before >= 0 and now // self.interval_ms > before // self.interval_ms:
            return now // self.interval_ms * self.interval_ms
        return None

    def publish(self, engine: Engine, ts: int, changed: dict) -> list[AdlIndicator | IndicatorCleared]:
        """Rank every side, and return the records of the lights that changed and the tombstones."""
        out: list[AdlIndicator | IndicatorCleared] = []
        score = engine.queue_policy().score
        self.counts.clear()
        for symbol in sorted(engine.symbols):
            mark = engine.mark(symbol)
            if mark is None:
                continue
            asset = engine.symbols[symbol].settle_asset
            for long, side in ((True, LONG), (False, SHORT)):
                view = engine.index.view(symbol, long, mark, lambda account: engine.equity(account, asset), score)
                if view is None:
                    continue
                n = len(view)
                new = lights(n)
                for light in LIGHTS:
                    self.counts[(symbol, side, light)] = int(np.count_nonzero(new == light))
                signed = new if long else -new
                old = np.fromiter(map(_LIGHT, view.positions), np.int64, n)
                rows = np.flatnonzero(old != signed)
                if not len(rows):
                    continue
                # by column, in C-level maps (a Python loop per changed light was most of a pass)
                positions = list(map(view.positions.__getitem__, rows.tolist()))
                deque(map(setattr, positions, repeat("light"), signed[rows].tolist()), 0)
                accounts = list(map(_ACCOUNT_ID, positions))
                changed.update(dict.fromkeys(zip(repeat("l"), repeat(symbol), accounts)))
                out += _LIGHTS_OF((repeat(symbol), accounts, repeat(side), new[rows].tolist(), (rows + 1).tolist(),
                                   repeat(n), view.scores[rows].tolist(), repeat(ts)), len(rows))
        for symbol, account in sorted(self.unlit):
            position = engine.book.get(account, symbol)
            if position is None or not position.light:
                out.append(IndicatorCleared(symbol, account, ts))
            changed[("l", symbol, account)] = None
        self.unlit.clear()
        return out
