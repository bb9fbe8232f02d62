"""The quiet-tick checks of guard's tick path: prices already known valid, and inside the band."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.guard.domain import tick_view
from services.guard.domain.trigger_model import Source

D = Decimal
BAND = ((Source.BEST_BID, D("0.40"), D("0.60"), False), (Source.LAST_TRADE, None, D("0.70"), True))


@pytest.mark.parametrize(("prices", "inside"), [
    ([D("0.50"), None, D("0.65")], True),
    ([D("0.40"), None, None], False),   # at the low edge: a stop-loss at 0.40 fires
    ([D("0.60"), None, None], False),   # at an exclusive high edge
    ([D("0.59"), None, D("0.70")], True),   # at an inclusive high edge
    ([D("0.59"), None, D("0.71")], False),
    ([None, D("0.10"), None], True),    # a source the band does not watch
    ([None, None, None], True),          # nothing watched is in the tick
])
def test_inside_band(prices: list[Decimal | None], inside: bool) -> None:
    assert tick_view.inside_band(prices, BAND) is inside


def test_known_prices_only_when_each_was_parsed_before() -> None:
    tick_view.PARSED.clear()
    assert tick_view.known_prices(("0.5", "", "0.25")) is None  # not parsed yet: the full path decides
    tick_view.PARSED.put("0.5", D("0.5"))
    tick_view.PARSED.put("0.25", D("0.25"))
    assert tick_view.known_prices(("0.5", "", "0.25")) == [D("0.5"), None, D("0.25")]
    assert tick_view.known_prices(("0.5", "x", "")) is None  # malformed: never in the cache
