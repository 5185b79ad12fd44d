"""Why the engine refuses an input record (it then goes to the dead-letter topic)."""

from __future__ import annotations


class Rejected(Exception):
    """An input record the engine will not apply; it left the state untouched.

    ``reason`` is a short stable code (a metric label), ``detail`` says what was wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.outcome = None
        """What moving stream time to the record's time did before it was rejected (reservations
        expired, indicator lights published): an :class:`~adl_stream.engine.engine.Outcome` to emit
        all the same, or None."""
