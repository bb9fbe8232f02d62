"""Alerts as data: the stream payload, the Slack text, the signature, the bounded outbox, the publisher's
hand-back when Redis is away."""

from __future__ import annotations

from typing import Any

import pytest

from common.alerts import Alert, AlertKind, AlertPublisher, Outbox, Severity, raise_alert, signature, verify

ALERT = Alert("ORDER_LOST", "order_lost:INSIDERS", "lost:co_1", "CRITICAL", "order co_1 LOST", 1_790_000_000_000,
              "executor", {"client_order_id": "co_1", "reason": "NOT_FOUND"})


def test_the_stream_payload_round_trips() -> None:
    assert Alert.from_json(ALERT.to_json()) == ALERT


@pytest.mark.parametrize("raw", [b"", b"[]", b"{}", b'{"kind": "X"}', b"not json",
                                 b'{"kind":"K","key":"k","dedupe_id":"d","severity":"S","summary":"s","at_ms":"x"}'])
def test_a_malformed_payload_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not an alert"):
        Alert.from_json(raw)


def test_the_slack_text_says_what_where_and_when() -> None:
    text = ALERT.text()
    assert text.splitlines() == ["*CRITICAL* order co_1 LOST",
                                 "_ORDER_LOST_ from *executor* at 2026-09-21 14:13:20 UTC",
                                 "• client_order_id: co_1", "• reason: NOT_FOUND"]
    assert ALERT.text(3).endswith("(+3 more `order_lost:INSIDERS` alerts were held back by the rate limit)")


def test_a_held_back_notice_says_how_many_then_shows_the_last() -> None:
    first, *rest = ALERT.held_notice(3).splitlines()
    assert first == "3 `order_lost:INSIDERS` alerts were held back by the rate limit; the last of them:"
    assert rest == ALERT.text().splitlines()
    assert ALERT.held_notice(1).startswith("1 `order_lost:INSIDERS` alert was held back")


@pytest.mark.parametrize(("secret", "stamp", "body", "ok"), [
    ("s", "1", b"{}", True),
    ("other", "1", b"{}", False),
    ("s", "2", b"{}", False),  # the timestamp is signed too: a replay with another one fails
    ("s", "1", b"{ }", False),
])
def test_the_signature_covers_the_timestamp_and_the_body(secret: str, stamp: str, body: bytes, ok: bool) -> None:
    header = signature("s", "1", b"{}")
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify(secret, stamp, body, header) is ok


def test_the_outbox_is_bounded_and_drops_the_oldest() -> None:
    outbox = Outbox(maxlen=3)
    for i in range(5):
        raise_alert(AlertKind.FEED_STALLED, "feed_stalled:rtds", f"stall {i}", dedupe_id=f"s{i}", outbox=outbox)
    assert [a.dedupe_id for a in outbox.take(10)] == ["s2", "s3", "s4"] and outbox.dropped == 2


def test_raising_fills_in_an_occurrence_id_and_stringifies_fields() -> None:
    outbox = Outbox()
    alert = raise_alert(AlertKind.BREAKER_CLOSED, "breaker:insiders", "closed", severity=Severity.INFO,
                        outbox=outbox, failures=0)
    assert alert.dedupe_id == f"breaker:insiders:{alert.at_ms}" and alert.fields == {"failures": "0"}
    assert outbox.take(1) == [alert]


class _DownRedis:
    def pipeline(self, transaction: bool = False) -> Any:
        return self

    def xadd(self, *args: Any, **kwargs: Any) -> None:
        return None

    def xtrim(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def execute(self) -> None:
        raise ConnectionError("redis is down")


async def test_alerts_not_published_go_back_in_front_in_order() -> None:
    outbox = Outbox()
    for i in range(3):
        raise_alert(AlertKind.ORDER_LOST, "order_lost:PAPER", f"lost {i}", dedupe_id=f"l{i}", outbox=outbox)
    with pytest.raises(ConnectionError):
        await AlertPublisher(_DownRedis(), "executor", outbox=outbox, batch=2).publish_some()
    assert [a.dedupe_id for a in outbox.take(10)] == ["l0", "l1", "l2"]
