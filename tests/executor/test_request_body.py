"""The POST /v1/orders body: canonical decimal strings, also when a fan-out repeats (differently written) values."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from services.executor import venue as v
from services.executor.insiders_api import request_body

D = Decimal


def _req(amount: Decimal | None, size: Decimal | None, limit: Decimal) -> v.PlaceRequest:
    return v.PlaceRequest("co_1", "u_1", "w_1", "0xabc", "tok", "BUY", "FAK", amount, size, limit)


@pytest.mark.parametrize(("amount", "size", "limit", "want"), [
    (D("10.00"), None, D("0.520"), ("10", None, "0.52")),
    (D("10"), None, D("0.52"), ("10", None, "0.52")),  # equal values written differently: same strings
    (D("1E+1"), None, D("5.2E-1"), ("10", None, "0.52")),
    (None, D("19.2300"), D("0.01"), (None, "19.23", "0.01")),
    (D("0.000001"), None, D("0.99"), ("0.000001", None, "0.99")),
])
def test_decimals_are_canonical_strings(amount: Decimal | None, size: Decimal | None, limit: Decimal,
                                        want: tuple[str | None, str | None, str]) -> None:
    body = orjson.loads(request_body(_req(amount, size, limit)))
    assert (body["amountUsd"], body["size"], body["limitPrice"]) == want
    assert body["clientOrderId"] == "co_1" and body["negRisk"] is False
