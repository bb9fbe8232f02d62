"""The rate limit per alert key against a real Redis and a real local webhook: an alert that reverses what was last
sent for its key is never held, and what was held is announced once, by the key's next alert or, when none comes,
by a notice once its window is over."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from common.alerts import Alert, AlertKind, Severity, new_alert
from tests.control import test_alert_delivery
from tests.control.test_alert_delivery import FAST, Rig
from tests.helpers import eventually

pytestmark = pytest.mark.integration

rig = test_alert_delivery.rig  # the same fixture: a real Redis, a publisher and a local webhook

WINDOW_MS = 600_000  # the default rate window (TT_TUNE_CONTROL_ALERT_RATE_WINDOW_S = 600)


def _breaker(kind: AlertKind, at_ms: int, n: int) -> Alert:
    sev = Severity.CRITICAL if kind is AlertKind.BREAKER_OPENED else Severity.INFO
    a = new_alert(kind, "breaker:insiders", f"breaker insiders {kind.value} #{n}", severity=sev,
                  dedupe_id=f"breaker:insiders:{kind.value}:{n}", service="executor")
    return replace(a, at_ms=at_ms)


def _paused(i: int, at_ms: int) -> Alert:
    a = new_alert(AlertKind.SUBSCRIPTION_PAUSED, "loss_stop", f"subscription sub_{i} paused by its performance rules",
                  dedupe_id=f"perf_pause:{i}", service="control", fields={"subscription_id": f"sub_{i}"})
    return replace(a, at_ms=at_ms)


async def test_a_flapping_breaker_never_leaves_the_operator_told_closed_while_it_is_open(rig: Rig) -> None:
    """Default limit (5 per key per 10 min). The breaker opens just before a window boundary, then flaps:
    CLOSED, OPEN, CLOSED, OPEN, CLOSED (5 alerts of the new window) and finally OPENs again and stays open
    (a failed probe's re-opening raises nothing more): that last OPEN reverses the CLOSED sent, so it is sent."""
    d = rig.deliverer(replace(FAST, rate_limit=5, rate_window_s=600.0))
    now = time.time_ns() // 1_000_000
    boundary = (now // WINDOW_MS) * WINDOW_MS
    seq = [AlertKind.BREAKER_OPENED] + [AlertKind.BREAKER_CLOSED, AlertKind.BREAKER_OPENED] * 3
    ats = [boundary - 1] + [min(boundary + i, now) for i in range(1, len(seq))]
    for n, (kind, at) in enumerate(zip(seq, ats, strict=True)):
        rig.outbox.put(_breaker(kind, at, n))
    await eventually(lambda: sum(d.outcomes.values()) == len(seq), message="every entry decided")
    kinds = [r.alert["kind"] for r in rig.receiver.received]
    assert kinds == [k.value for k in seq] and d.outcomes == {"SENT": len(seq)}


async def test_what_was_held_is_announced_once_its_window_is_over(rig: Rig) -> None:
    """3 alerts of one key in a window with limit 2 (a window of 1 s): once the window is over and nothing else of
    the key comes, a notice says one was held back and carries the last one held (its subscription)."""
    d = rig.deliverer(replace(FAST, rate_limit=2, rate_window_s=1.0))
    now = time.time_ns() // 1_000_000
    for i in range(3):
        rig.outbox.put(_paused(i, now))
    await eventually(lambda: len(rig.receiver.received) == 3, timeout_s=10, message="two alerts and a notice")
    await asyncio.sleep(2.5)  # more windows go by: the notice is not repeated
    notice = rig.receiver.received[-1]
    assert [r.alert["id"] for r in rig.receiver.received[:2]] == ["perf_pause:0", "perf_pause:1"]
    assert notice.alert["held_back"] == 1 and notice.alert["fields"] == {"subscription_id": "sub_2"}
    assert "1 `loss_stop` alert was held back" in notice.text and "sub_2" in notice.text
    assert len(rig.receiver.received) == 3 and d.outcomes == {"SENT": 2, "HELD": 1, "NOTICE": 1}


async def test_a_held_alert_is_announced_once_whether_by_the_next_alert_or_a_notice(rig: Rig) -> None:
    """The key's next alert comes in the next window, around the time the held one's window ends: whichever
    announces it (the next alert's "+1 more", or a notice), it is announced exactly once."""
    rig.deliverer(replace(FAST, rate_limit=1, rate_window_s=1.0))
    now = time.time_ns() // 1_000_000
    for i in range(2):
        rig.outbox.put(_paused(i, now))
    await eventually(lambda: len(rig.receiver.received) == 1, message="the first sent")
    rig.outbox.put(_paused(2, now + 1000))
    await eventually(lambda: "perf_pause:2" in rig.receiver.ids(), timeout_s=10, message="the next one sent")
    await asyncio.sleep(2.5)
    announced = [r.alert["held_back"] for r in rig.receiver.received if r.alert["held_back"]]
    assert announced == [1], [r.text for r in rig.receiver.received]


async def test_a_window_decided_over_longer_than_two_windows_keeps_its_count(rig: Rig) -> None:
    """Limit 2 in windows of 1 s. Two alerts of a window already over are sent; the third of that same window is
    decided 2.5 s later (a deliverer slowed by a backlog): the window's count is still there, so it is held, not sent
    as if the window had had none."""
    d = rig.deliverer(replace(FAST, rate_limit=2, rate_window_s=1.0))
    at = (time.time_ns() // 1_000_000 // 1000 - 3) * 1000 + 500  # the middle of a window that ended 2 s ago
    for i in range(2):
        rig.outbox.put(_paused(i, at))
    await eventually(lambda: d.outcomes.get("SENT", 0) == 2, message="the first two sent")
    await asyncio.sleep(2.5)  # longer than two windows: the time a count used to be kept
    rig.outbox.put(_paused(2, at))
    await eventually(lambda: d.outcomes.get("HELD", 0) == 1, timeout_s=10, message="the third held")
    assert "perf_pause:2" not in rig.receiver.ids()
