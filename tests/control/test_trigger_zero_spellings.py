"""A trigger's zero-valued decimal is held to the API's decimal rules: a "0" spelt in a way docs/rest-api.md says is
not a decimal (padded, ``_``, other scripts' digits, over 64 characters) is 400 naming the field, as any other value
spelt so is. ``_is_zero`` read it with ``Decimal(raw.strip())``, so it was accepted and stored as "0"."""

from __future__ import annotations

import pytest

from services.control import trigger_rules
from services.control.errors import InvalidArgument
from tests.control.conftest import trigger
from tradingtools.control.v1 import trigger_pb2 as tpb

ZEROS = ["٠", "０", " 0", "0 ", "\u00a00", "0_0", "0" * 65]


@pytest.mark.parametrize("zero", ZEROS)
@pytest.mark.parametrize(("field", "other", "value"), [
    ("sell_fraction", "size", "40"),
    ("size", "sell_fraction", "1"),
    ("trail_pct", "size", "40"),
    ("activation_price", "size", "40"),
])
def test_a_zero_that_is_not_an_ascii_decimal_is_400_naming_the_field(zero: str, field: str, other: str,
                                                                       value: str) -> None:
    raw = trigger(**{field: zero, other: value})
    with pytest.raises(InvalidArgument) as err:
        trigger_rules.new_trigger(raw)
    assert str(err.value).startswith(trigger_rules.json_path(field))


@pytest.mark.parametrize("zero", ZEROS)
def test_a_trailing_stops_trigger_price_zero_must_be_an_ascii_decimal(zero: str) -> None:
    raw = trigger(kind=tpb.TRIGGER_KIND_TRAILING_STOP, trigger_price=zero, trail_pct="10")
    with pytest.raises(InvalidArgument, match=r"^triggerPrice"):
        trigger_rules.new_trigger(raw)
