"""The sweep of ARMED triggers nobody announced reads only the newest ones, through their index: its steady cost does
not grow with the armed triggers or the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.storage import KEYED_LOOKUPS, create_pool
from services.guard.adapters.armed_reads import CREATED, RecentArmed
from tests.guard.standins import db, insert_trigger

pytestmark = pytest.mark.integration


async def test_the_sweep_reads_the_armed_triggers_created_since_its_window_through_their_index(db_url: str) -> None:
    conn = await db(db_url)
    now = datetime.now(UTC)
    await insert_trigger(conn, "t_old", "STOP_LOSS", price="0.30", size="10", created=now - timedelta(hours=1))
    await insert_trigger(conn, "t_new", "STOP_LOSS", price="0.30", size="10", created=now)
    await insert_trigger(conn, "t_gone", "STOP_LOSS", price="0.30", size="10", created=now)
    await conn.execute("UPDATE triggers SET state = 'CANCELLED' WHERE id = 't_gone'")
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, options=KEYED_LOOKUPS)
    try:
        assert await RecentArmed(pool).created(now - timedelta(seconds=30), now + timedelta(seconds=1)) == ["t_new"]
        async with pool.connection() as c:
            plan = await (await c.execute("EXPLAIN " + CREATED, (now, now))).fetchall()
        assert "triggers_armed_created" in " ".join(str(v) for r in plan for v in r.values())
    finally:
        await pool.close()
        await conn.close()
