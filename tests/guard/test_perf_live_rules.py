"""Perf rules end to end through real control (ApplyPerfAction, PATCH) on real PostgreSQL and Redis: the mode's
venue only, a mode or rule change starting afresh, and decisions overtaken by a PATCH refused and made again."""

from __future__ import annotations

from typing import Any

import pytest

from services.control.app import RunningControl
from services.guard.adapters.control_client import GrpcControl
from services.guard.adapters.perf_store import PerfStore
from services.guard.perf_monitor import PerfMonitor
from services.guard.ports import Control
from tests.guard.perf_support import (
    A1,
    A2,
    AUTH,
    SCALE_X2,
    add_fill,
    create,
    decisions,
    get,
    patch,
)
from tests.guard.standins import db
from tests.helpers import internal_channel
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


LIVE = spb.Subscription(mode=cpb.EXECUTION_MODE_LIVE)


async def test_a_live_loss_pauses_whatever_the_paper_venue_made(db_url: str, stubs: Any, make_monitor: Any) -> None:
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.8")  # +600 on paper
    await patch(stubs, sub.id, LIVE)
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.6", "INSIDERS")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.1", "INSIDERS")  # -500 live
    await make_monitor().evaluate_all()
    got = await get(stubs, sub.id)
    assert got.state == spb.SUBSCRIPTION_STATE_PAUSED and got.paused_reason.startswith("LOSS_STOP: pnl -500")
    await conn.close()


async def test_a_mode_change_unscales_and_only_the_new_venue_scales_again(
        db_url: str, stubs: Any, make_monitor: Any) -> None:
    sub = await create(stubs, SCALE_X2)
    conn = await db(db_url)
    monitor = make_monitor()
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.4")  # +200 on paper
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "2"
    assert (await patch(stubs, sub.id, LIVE)).perf.applied_multiplier == "1"  # in the PATCH itself
    for _ in range(2):
        await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "1"  # paper profit does not scale live sizing
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.3", "INSIDERS")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.45", "INSIDERS")  # +150 live
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "2"
    assert await decisions(conn, sub.id) == [("SCALE", True, ""), ("SCALE", True, "")]
    await conn.close()


async def test_a_resume_point_counts_only_in_the_mode_it_was_taken_in(
        db_url: str, stubs: Any, make_monitor: Any) -> None:
    """Paper loss-stopped at -400 and resumed there (its next stop at -800), paper back to -100: the live loss of
    $400 after a switch to LIVE pauses; it is not measured from the paper resume point."""
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    monitor = make_monitor()
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.6")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.2")  # -400 paper
    await monitor.evaluate_all()
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    await monitor.evaluate_all()
    assert monitor.stats.resumes == 1
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.5")  # +300 paper: -100
    await patch(stubs, sub.id, LIVE)
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5", "INSIDERS")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.1", "INSIDERS")  # -400 live
    await monitor.evaluate_all()
    got = await get(stubs, sub.id)
    assert got.state == spb.SUBSCRIPTION_STATE_PAUSED and got.paused_reason.startswith("LOSS_STOP: pnl -400")
    await conn.close()


async def _scaled_then_pnl_50(db_url: str, stubs: Any, monitor: PerfMonitor) -> tuple[Any, spb.Subscription]:
    sub = await create(stubs, SCALE_X2)
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.4")  # +200
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "2"
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.35")  # -150: +50
    return conn, sub


@pytest.mark.parametrize(("perf", "applied", "scales"), [
    (spb.Perf(profit_scale_at_usd="0"), "1", 1),  # rule off
    (spb.Perf(profit_scale_multiplier="1"), "1", 1),
    (spb.Perf(profit_scale_multiplier="3"), "1", 1),  # +50 is below the threshold: not x3
    (spb.Perf(profit_scale_at_usd="40"), "2", 2),  # +50 is above the new threshold: x2 again, a new decision
])
async def test_a_scale_follows_its_rule_when_it_changes(db_url: str, stubs: Any, make_monitor: Any,
                                                        perf: spb.Perf, applied: str, scales: int) -> None:
    monitor = make_monitor()
    conn, sub = await _scaled_then_pnl_50(db_url, stubs, monitor)
    await patch(stubs, sub.id, spb.Subscription(perf=perf))
    for _ in range(3):
        await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == applied
    assert await decisions(conn, sub.id) == [("SCALE", True, "")] * scales
    await conn.close()


class PatchedMidPass(PerfStore):
    """The user's PATCH commits after the pass read the rules and before it decides (once)."""

    body: spb.Subscription | None = None
    stubs: Any = None

    async def decisions(self, subscription_id: str) -> Any:
        body, PatchedMidPass.body = PatchedMidPass.body, None
        if body is not None:
            await patch(PatchedMidPass.stubs, subscription_id, body)
        return await super().decisions(subscription_id)


@pytest.mark.parametrize(("body", "after_more"), [
    (spb.Subscription(perf=spb.Perf(profit_scale_at_usd="0")), "1"),
    (spb.Subscription(perf=spb.Perf(profit_scale_multiplier="2")), "2"),  # x3 refused, then x2
    (spb.Subscription(mode=cpb.EXECUTION_MODE_LIVE), "1"),  # no live fill: nothing to scale
])
async def test_a_decision_overtaken_by_a_patch_is_refused_and_made_again(
        db_url: str, stubs: Any, make_monitor: Any, body: spb.Subscription, after_more: str) -> None:
    sub = await create(stubs, spb.Perf(profit_scale_at_usd="100", profit_scale_multiplier="3"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.4")  # +200
    PatchedMidPass.body, PatchedMidPass.stubs = body, stubs
    monitor = make_monitor(PatchedMidPass)
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "1"
    assert (monitor.stats.stale, monitor.stats.refused, monitor.stats.errors) == (1, 0, 0)
    for _ in range(3):  # re-evaluated under the current rules; the refused decision is never re-sent
        assert await monitor.resend_unapplied() == 0
        await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == after_more
    refused, *later = await decisions(conn, sub.id)
    assert refused[:2] == ("SCALE", False) and refused[2].startswith("FAILED_PRECONDITION: decidedUnder:")
    assert later == ([("SCALE", True, "")] if after_more == "2" else [])
    await conn.close()


class DownOnce:
    """A control that is unreachable for the first call (guard dies / times out before the answer)."""

    def __init__(self, inner: Control) -> None:
        self.inner, self.failed = inner, False

    async def apply_perf_action(self, **kw: Any) -> bool:
        if not self.failed:
            self.failed = True
            raise ConnectionError("control unreachable")
        return await self.inner.apply_perf_action(**kw)


async def test_a_restart_resends_a_decision_under_the_rules_it_was_made_with(
        db_url: str, stubs: Any, make_monitor: Any, control: RunningControl) -> None:
    sub = await create(stubs, spb.Perf(profit_scale_at_usd="100", profit_scale_multiplier="3"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.4")  # +200
    channel = internal_channel(control.port)
    first = make_monitor(stand_in=DownOnce(GrpcControl(channel, timeout_s=5.0)))
    with pytest.raises(ConnectionError):
        await first.evaluate_all()  # recorded, not applied
    await patch(stubs, sub.id, spb.Subscription(perf=spb.Perf(profit_scale_multiplier="2")))
    restarted = make_monitor()
    assert await restarted.resend_unapplied() == 1
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "1"  # the x3 is refused
    assert restarted.stats.stale == 1 and await restarted.resend_unapplied() == 0
    await restarted.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "2"
    assert [r[:2] for r in await decisions(conn, sub.id)] == [("SCALE", False), ("SCALE", True)]
    await channel.close()
    await conn.close()
