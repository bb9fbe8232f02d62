"""Guard's alerts (an order event it set aside after every attempt failed: a position it may not be guarding)
reach ``tt:stream:alerts``, the stream control delivers to the operator's webhook."""

from __future__ import annotations

from typing import Any

import pytest

from common.alerts import AlertKind, Severity, raise_alert
from tests.guard.conftest import GuardFactory
from tests.helpers import alerts_raised, eventually

pytestmark = pytest.mark.integration


async def test_an_alert_raised_in_guard_reaches_the_alert_stream(make_guard: GuardFactory, redis_url: str) -> None:
    await make_guard()
    raise_alert(AlertKind.DEAD_LETTERED, "tt:dlq:guard-orders-test", "an order event was set aside",
                severity=Severity.CRITICAL)

    def alerted() -> list[Any]:
        return [a for a in alerts_raised(redis_url, "DEAD_LETTERED") if a.key == "tt:dlq:guard-orders-test"]

    await eventually(lambda: len(alerted()) == 1, timeout_s=10)
    assert alerted()[0].service == "guard"
