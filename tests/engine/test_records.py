"""Records made by column are the records their ``__init__`` makes."""

from dataclasses import FrozenInstanceError, astuple, fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adl_stream.engine import AdlIndicator
from adl_stream.engine.records import MarkPrice, by_column

lights = st.builds(AdlIndicator, st.text(max_size=8), st.text(max_size=8), st.sampled_from(["LONG", "SHORT"]),
                   st.integers(1, 5), st.integers(1, 10**6), st.integers(1, 10**6),
                   st.floats(allow_nan=False), st.integers(0, 2**62))


@given(st.lists(lights, max_size=20))
def test_records_made_by_column_equal_and_behave_as_those_made_one_by_one(records):
    columns = [[getattr(r, f.name) for r in records] for f in fields(AdlIndicator)]
    made = by_column(AdlIndicator)(columns, len(records))
    assert made == records and [astuple(r) for r in made] == [astuple(r) for r in records]
    assert all(type(r) is AdlIndicator for r in made) and [hash(r) for r in made] == [hash(r) for r in records]
    for record in made:
        with pytest.raises(FrozenInstanceError):  # as frozen as the ones __init__ makes
            record.light = 0


def test_a_subset_of_fields_in_another_order_sets_those_fields():
    (mark,) = by_column(MarkPrice, ("ts", "symbol"))([[7], ["BTCUSDT"]], 1)
    assert (mark.symbol, mark.ts) == ("BTCUSDT", 7)
