"""A position's whole run as PostgreSQL books it (fill_store, settlement_store): a BUY whose fee is taken in
shares, a second subscription's BUY, partial SELLs, a manual SELL, a close, a new life and a resolution. After each
step every subscription's stats (exposure, realized PnL) are what its parts of the positions say, and each life's
realized PnL is what its SELLs and payout brought less what its BUYs cost."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, CONDITION, make_order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

NO = "9" * 70
_n = iter(range(1, 1000))


def _fill(sub: str, buying: bool, size: str, usd: str, fee: str = "0") -> tuple[Ticket, Booking]:
    n = next(_n)
    origin = epb.ORDER_ORIGIN_COPY if sub else epb.ORDER_ORIGIN_MANUAL
    order = make_order(n, follower_wallet_id="w_1", subscription_id=sub, origin=origin,
                       side=cpb.SIDE_BUY if buying else cpb.SIDE_SELL)
    s, u = D(size), D(usd)
    return (Ticket(order, INSIDERS, None, time.time_ns()),
            Booking(f"fill_{n}", s, (u / s).quantize(D("0.00000001")), u, D(fee), True, time.time_ns() // 1_000_000))


async def _state(pool: Any) -> tuple[dict[str, Any], dict[str, tuple[D, D]], list[D]]:
    async with pool.connection() as conn:
        pos = await (await conn.execute("SELECT * FROM positions")).fetchone()
        stats = await (await conn.execute("SELECT subscription_id, exposure_usd, realized_pnl_usd "
                                          "FROM subscription_stats")).fetchall()
        lives = await (await conn.execute("SELECT realized_pnl_usd FROM position_history ORDER BY closed_at"))\
            .fetchall()
    return (dict(pos), {r["subscription_id"]: (r["exposure_usd"], r["realized_pnl_usd"]) for r in stats},
            [r["realized_pnl_usd"] for r in lives])


def _parts(pos: dict[str, Any]) -> dict[str, ss.Part]:
    kept = ss.decode(pos["subscription_shares"]) if pos["subscription_shares"] else None
    return ss.split_of(kept, pos["size"], pos["cost_usd"], pos["subscription_id"])


async def test_a_positions_run_keeps_the_stats_and_every_lifes_pnl(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    paid: dict[str, D] = {"sub_A": D(0), "sub_B": D(0)}
    got: dict[str, D] = {"sub_A": D(0), "sub_B": D(0)}

    async def book(*fills: tuple[Ticket, Booking]) -> dict[str, Any]:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            booked = await fill_store.book(cur, list(fills))
        for done in booked:
            for c in done.charges:
                if c.subscription_id:
                    got[c.subscription_id] += c.proceeds_usd
            if done.ticket.buying and done.ticket.order.subscription_id:
                paid[done.ticket.order.subscription_id] += fills[booked.index(done)][1].notional
        pos, stats, _ = await _state(pool)
        parts = _parts(pos)
        for sub in ("sub_A", "sub_B"):
            cost = parts.get(sub, ss.Part()).cost_usd
            exposure, pnl = stats.get(sub, (D(0), D(0)))
            assert exposure == cost, sub
            assert pnl == got[sub] - paid[sub] + cost, sub
        return pos

    try:
        # sub_A: $10 at 0.50 with a 2 % fee in shares → 19.6 shares that cost $10
        pos = await book(_fill("sub_A", True, "20", "10", fee="0.4"))
        assert (pos["size"], pos["cost_usd"], pos["avg_price"]) == (D("19.6"), D(10), D("0.51020408"))
        # sub_B buys 10 at 0.40; sub_A sells 9.8 at 0.60; a manual SELL of 5 at 0.70
        await book(_fill("sub_B", True, "10", "4"))
        await book(_fill("sub_A", False, "9.8", "5.88"))
        await book(_fill("", False, "5", "3.5"))
        # everything left is sold: the life closes with what its SELLs brought less what its BUYs cost
        pos, _, _ = await _state(pool)
        pos = await book(_fill("sub_B", False, str(pos["size"]), str(pos["size"] * D("0.5"))))
        assert (pos["state"], pos["size"], pos["cost_usd"]) == ("CLOSED", 0, 0)
        life1 = pos["realized_pnl_usd"]
        assert life1 == D("5.88") + D("3.5") + D("14.8") * D("0.5") - D(14)
        # a new life: a fresh average, the old life's PnL kept in its history row
        pos = await book(_fill("sub_B", True, "10", "3"))
        _, _, lives = await _state(pool)
        assert lives == [life1]
        assert (pos["state"], pos["avg_price"], pos["realized_pnl_usd"] - pos["realized_base_usd"]) == (
            "OPEN", D("0.3"), 0)
        await book(_fill("sub_B", False, "4", "2"))
        settled = await SettlementStore(pool).settle(Resolution(CONDITION, (ASSET, NO), ASSET))
        assert [s.realized_pnl_usd for s in settled.settled] == [D(6) - D("1.8")]
        pos, stats, _ = await _state(pool)
        assert pos["state"] == "RESOLVED_WON"
        assert pos["realized_pnl_usd"] - pos["realized_base_usd"] == D(2) - D("1.2") + D(6) - D("1.8")
        assert stats["sub_B"][0] == 0
    finally:
        await pool.close()
