"""A loss-stop that lands on a subscription its user paused meanwhile: the user must still be told, so that their
resume is the informed acceptance of the loss that moves the loss-stop's baseline. Real PostgreSQL and Redis, the
real control in process, guard's PerfMonitor."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.guard.domain.perf_rules import Basis
from tests.guard.perf_support import A1, AUTH, add_fill, create, decisions, get, put_book
from tests.guard.standins import db
from tests.helpers import alerts_raised, eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


class Unreachable:
    """Control while it cannot be reached: every call fails (guard re-sends the decision later)."""

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str, decided_under: Basis | None = None) -> bool:
        raise ConnectionError("control unreachable")


async def test_a_loss_stop_on_a_subscription_the_user_paused_is_shown_before_the_resume_accepts_it(
        db_url: str, redis_url: str, stubs: Any, make_monitor: Any, rds: Any) -> None:
    """Guard decides the loss-stop at -400 while control is unreachable; the user pauses the subscription; the
    decision lands when control is back. The pause must now read LOSS_STOP and raise the loss-stop alert: the
    user's resume then accepts the loss and the next loss-stop counts from there. Before the fix control changed
    nothing (pausedReason kept the user's "vacation", no alert) yet answered applied, and the resume silently
    moved the baseline: the user kept copying past a limit they never saw reached."""
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.6")
    await add_fill(conn, sub.id, A1, "SELL", "500", "0.3")  # realized -150
    await put_book(rds, A1, "0.09", "0.11")  # 500 x 0.10 - 300 = -250: -400 in all
    with pytest.raises(ConnectionError):
        await make_monitor(stand_in=Unreachable()).evaluate_all()  # the loss-stop is recorded, not applied
    assert [a for a, _, _ in await decisions(conn, sub.id)] == ["PAUSE"]
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id, reason="vacation"), metadata=AUTH)

    monitor = make_monitor()  # control is back: the decision is re-sent
    assert await monitor.resend_unapplied() == 1
    paused = await get(stubs, sub.id)
    assert paused.state == spb.SUBSCRIPTION_STATE_PAUSED
    assert paused.paused_reason.startswith("LOSS_STOP: pnl -400"), paused.paused_reason
    [alert] = await eventually(lambda: [a for a in alerts_raised(redis_url, "SUBSCRIPTION_PAUSED")
                                        if a.key == f"loss_stop:{sub.id}"], message="the loss-stop alert")
    assert alert.fields["reason"] == paused.paused_reason

    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    await monitor.evaluate_all()  # the informed resume: the next loss-stop counts from -400
    assert [(r.action, Decimal(r.pnl_usd)) for r in await monitor.store.decisions(sub.id)] == [
        ("PAUSE", Decimal(-400)), ("RESUMED", Decimal(-400))]
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_ACTIVE
    await conn.close()
