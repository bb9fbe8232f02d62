"""Leader trades are sanity-checked where they enter: price in (0, 1), size > 0, timestamp in (0, now + skew],
notional recomputed. A failing trade is refused with a counted reason (parse_errors by kind), logged, never
emitted, and the handler goes on."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics
from services.ingest.poller import parse_rows
from services.ingest.rtds_feed import RtdsHandler
from tests.ingest.conftest import RECV_NS
from tests.ingest.test_identity import sim_trade

NOW_S = RECV_NS // 10**9
BAD = [({"price": "1"}, "PRICE_OUT_OF_RANGE"), ({"price": 0}, "PRICE_OUT_OF_RANGE"),
       ({"price": "1.0001"}, "PRICE_OUT_OF_RANGE"), ({"size": 0}, "SIZE_NOT_POSITIVE"),
       ({"size": "-0.01"}, "SIZE_NOT_POSITIVE"), ({"timestamp": 0}, "TIMESTAMP_OUT_OF_RANGE"),
       ({"timestamp": NOW_S + 3600}, "TIMESTAMP_OUT_OF_RANGE")]


def frame(**changes: Any) -> bytes:
    payload = {**sim_trade().rtds_payload(), **changes}
    return orjson.dumps({"topic": "activity", "type": "trades", "timestamp": 1, "payload": payload})


@pytest.mark.parametrize(("changes", "reason"), BAD)
def test_rtds_refuses_a_trade_failing_the_sanity_checks(changes: dict[str, Any], reason: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    metrics, out = IngestMetrics(), []
    handler = RtdsHandler(lambda _w: True, out.append, metrics)
    with caplog.at_level(logging.WARNING, "services.ingest.rtds_feed"):
        assert handler.handle(frame(**changes), RECV_NS)
    assert out == [] and metrics.count("parse_errors", "rtds", reason) == 1
    assert [r.reason for r in caplog.records] == [reason]  # type: ignore[attr-defined]
    handler.handle(frame(), RECV_NS)  # the next good trade still flows
    assert len(out) == 1 and out[0].fill.notional == out[0].fill.price * out[0].fill.size


@pytest.mark.parametrize(("changes", "reason"), BAD)
def test_the_poller_refuses_a_row_failing_the_sanity_checks(changes: dict[str, Any], reason: str) -> None:
    metrics = IngestMetrics()
    good = sim_trade().activity_row()
    fills = parse_rows([{**good, **changes}, good], RECV_NS, metrics)
    assert len(fills) == 1 and metrics.count("parse_errors", "data_api", reason) == 1


def test_a_configured_skew_is_what_the_timestamp_is_judged_against() -> None:
    out: list[Identified] = []
    strict = RtdsHandler(lambda _w: True, out.append, IngestMetrics(), max_clock_skew_s=5.0)
    strict.handle(frame(timestamp=NOW_S + 10), RECV_NS)
    assert out == []
    RtdsHandler(lambda _w: True, out.append, IngestMetrics()).handle(frame(timestamp=NOW_S + 10), RECV_NS)
    assert len(out) == 1
