"""Numbers and times as people read them, in logs, ``inspect`` and JSON output (never on the wire).

A wire decimal has scale 18, so a fund of 600 decodes as ``600.000000000000000000`` and nothing as
``0E-18``. :func:`plain_decimal` writes the same exact value without the trailing zeros and without
an exponent (``600``, ``0``, ``0.0015``); :func:`plain` does it through a JSON-ready structure.
Event times are epoch milliseconds in the records; :func:`iso_time` writes them in ISO 8601, UTC.
"""

from __future__ import annotations

import datetime as dt
import decimal
from decimal import Decimal

#: Wide enough for every value the engine holds (wire decimals, costs to 1e-36): never rounds.
_EXACT = decimal.Context(prec=100)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def plain_decimal(value: Decimal) -> str:
    """The exact value, shortest: ``600.000000000000000000`` -> ``600``, ``0E-18`` -> ``0``."""
    return f"{value.normalize(_EXACT):f}"


def plain(value):
    """``value`` with every Decimal (in dicts, lists and tuples) written by :func:`plain_decimal`."""
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def iso_time(ts_ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 in UTC, to the millisecond: ``2026-11-24T00:00:00.000Z``."""
    if ts_ms is None:
        return None
    moment = _EPOCH + dt.timedelta(milliseconds=ts_ms)  # exact: no float seconds
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
