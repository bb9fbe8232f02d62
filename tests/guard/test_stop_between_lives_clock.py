"""Which life a stop set through control belongs to is told on the database's clock alone: a stop control set while
nothing was held (the row CLOSED) is the next life's, whatever control's clock read against the database's when it
set it; one set before the position was ever held is its first life's and ends with it. (Control's clock, read
before its transaction, was compared with the close's time: 50 ms behind, the next life's stop was cancelled by the
late-read SELL of the life before; ahead, a first life's stop outlived it and would sell the next.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from common.config import Secret
from services.control.app import start as start_control
from services.guard.adapters.exit_store import ExitStore
from tests.control.conftest import make_settings
from tests.guard.standins import ASSET, TOKEN, WALLET, WALLET_ID, db, set_position, trigger_row
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SetStop = Callable[[str], Awaitable[str]]


@pytest.fixture
async def stop_with_clock(db_url: str, redis_url: str) -> AsyncIterator[Callable[[timedelta], SetStop]]:
    """Control whose clock reads the wall clock plus a skew (one control a skew): sets a 50-share stop at a price."""
    running: list[Any] = []

    def skewed(skew: timedelta) -> SetStop:
        async def stop(price: str) -> str:
            if not running:
                control = await start_control(make_settings(db_url, redis_url, tokens=(Secret(TOKEN),)),
                                              now=lambda: datetime.now(UTC) + skew)
                running.extend((control, grpc.aio.insecure_channel(f"127.0.0.1:{control.port}")))
            made = await pb_grpc.TriggerServiceStub(running[1]).CreateTrigger(pb.CreateTriggerRequest(
                trigger=tpb.Trigger(wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET,
                                    kind=tpb.TRIGGER_KIND_STOP_LOSS, trigger_price=price, size="50")),
                metadata=AUTH)
            return made.id
        return stop

    yield skewed
    if running:
        await running[1].close()
        await running[0].stop()


async def _close(conn: Any) -> None:
    """The executor books the SELL that sells the life to zero: the row kept, CLOSED, at the database's now()."""
    await conn.execute("UPDATE positions SET size = 0, cost_usd = 0, state = 'CLOSED', closed_at = now()"
                       " WHERE follower_wallet_id = %s AND asset_id = %s", (WALLET_ID, ASSET))


async def _reopen(conn: Any, life: int) -> None:
    """The executor books the BUY that opens life ``life``: the ended life archived (its close copied), the row
    OPEN again."""
    await conn.execute(
        "INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state, origin, venue,"
        " size, avg_price, cost_usd, realized_pnl_usd, opened_at, closed_at, updated_at)"
        " SELECT %s, follower_wallet_id, asset_id, condition_id, wallet, state, origin, venue, size, avg_price,"
        " cost_usd, 0, opened_at, coalesce(closed_at, now()), updated_at FROM positions"
        " WHERE follower_wallet_id = %s AND asset_id = %s", (f"pos_life{life - 1}", WALLET_ID, ASSET))
    await conn.execute("UPDATE positions SET size = 50, cost_usd = 14, avg_price = 0.28, state = 'OPEN',"
                       " closed_at = NULL, opened_at = clock_timestamp() WHERE follower_wallet_id = %s"
                       " AND asset_id = %s", (WALLET_ID, ASSET))


async def _states(conn: Any, *ids: str) -> list[str]:
    return [(await trigger_row(conn, i))["state"] for i in ids]


@pytest.mark.parametrize("behind_ms", [50, 1500])
async def test_a_stop_set_between_lives_survives_the_late_closing_sell_when_controls_clock_is_behind(
        db_url: str, exit_store: ExitStore, stop_with_clock: Callable[[timedelta], SetStop], behind_ms: int) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await _close(conn)
    new = await stop_with_clock(-timedelta(milliseconds=behind_ms))("0.20")
    change = await exit_store.on_sell_fill(WALLET_ID, ASSET)  # guard reads life 1's closing SELL only now
    again = await exit_store.on_sell_fill(WALLET_ID, ASSET)  # read again (a restart): still nothing to end
    row = await trigger_row(conn, new)
    await conn.close()
    assert row["position_opened_at"] is None  # set while nothing was held
    assert (row["state"], row["state_reason"]) == ("ARMED", "")
    assert (change.cancelled, again.cancelled) == ((), ())


async def test_a_stop_set_between_lives_is_the_reopened_lifes_when_controls_clock_is_behind(
        db_url: str, exit_store: ExitStore, stop_with_clock: Callable[[timedelta], SetStop]) -> None:
    """Life 2 is bought before guard reads life 1's closing SELL: the stop is life 2's, not the ended life's."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await _close(conn)
    new = await stop_with_clock(-timedelta(milliseconds=1500))("0.20")
    await _reopen(conn, 2)
    change = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    states = await _states(conn, new)
    await conn.close()
    assert (states, change.cancelled) == (["ARMED"], ())


async def test_a_stop_set_before_the_position_was_ever_held_ends_with_its_first_life_when_controls_clock_is_ahead(
        db_url: str, exit_store: ExitStore, stop_with_clock: Callable[[timedelta], SetStop]) -> None:
    """Left armed, the first life's stop would sell the next life's shares."""
    conn = await db(db_url)
    first = await stop_with_clock(timedelta(minutes=10))("0.20")
    await set_position(conn, "100", "0.40")
    await _close(conn)
    change = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    states = await _states(conn, first)
    await conn.close()
    assert (states, [t.id for t in change.cancelled]) == (["CANCELLED"], [first])


async def test_the_closing_sell_of_a_second_life_ends_the_stop_set_before_it_and_keeps_the_one_set_after(
        db_url: str, exit_store: ExitStore, stop_with_clock: Callable[[timedelta], SetStop]) -> None:
    """Three lives: a stop set between lives 1 and 2 is life 2's and ends with it; one set after life 2 closed is
    life 3's. Guard reads both closing SELLs only after life 2 closed."""
    conn = await db(db_url)
    stop = stop_with_clock(-timedelta(milliseconds=1500))
    await set_position(conn, "100", "0.40")
    await _close(conn)
    second = await stop("0.20")
    await _reopen(conn, 2)
    await _close(conn)
    third = await stop("0.15")
    first_read = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    second_read = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    states = await _states(conn, second, third)
    await conn.close()
    assert states == ["CANCELLED", "ARMED"]
    assert ([t.id for t in first_read.cancelled], second_read.cancelled) == ([second], ())
