"""The router's read and emit scripts on real Redis: atomic claim + reserve + append + marker."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.reservations import USD, Reservation
from services.router.adapters.redis_state import RedisState, marker_key

pytestmark = pytest.mark.integration

STREAM = "tt:stream:routed_trades"


@pytest.fixture
async def fast(redis_url: str):  # type: ignore[no-untyped-def]
    client = FastRedis(redis_url, timeout_s=5.0)
    yield client
    client.close()


def _items(n: int, lt: str = "lt_1") -> list[Reservation]:
    return [Reservation(f"co_{lt}_{i}", f"w_{i}", USD, "0xm", 1_000_000 * (i + 1), lt) for i in range(n)]


async def test_emit_appends_once_and_reserves(r: aioredis.Redis, fast: FastRedis) -> None:
    state = RedisState(fast, STREAM, marker_ttl_s=3600, stream_maxlen=10_000)
    first = await state.emit("lt_1", b"\x00payload\xff", _items(3))
    assert first.status == "ok" and first.cursor
    again = await state.emit("lt_1", b"other", _items(3))
    assert (again.status, again.cursor) == ("dup", first.cursor)
    assert await r.xlen(STREAM) == 1
    got = await reservations.read(r, ["w_0", "w_2"], "0xm", "1")
    assert got["w_0"].total_usd_micro == 1_000_000 and got["w_2"].total_usd_micro == 3_000_000
    assert 0 < await r.ttl(marker_key("lt_1")) <= 3600


async def test_emit_payload_is_binary_safe(redis_url: str, fast: FastRedis) -> None:
    client = aioredis.from_url(redis_url, decode_responses=False)
    state = RedisState(fast, STREAM, marker_ttl_s=60, stream_maxlen=10_000)
    payload = bytes(range(256))
    assert (await state.emit("lt_b", payload, [])).status == "ok"
    [(_, fields)] = await client.xrange(STREAM)
    assert fields[b"p"] == payload
    await client.aclose()


async def test_emit_conflict_writes_nothing(r: aioredis.Redis, fast: FastRedis) -> None:
    state = RedisState(fast, STREAM, marker_ttl_s=3600, stream_maxlen=10_000)
    items = _items(3)
    await reservations.reserve(r, [items[1]])  # someone claimed the second order's id before
    result = await state.emit("lt_1", b"p", items)
    assert result.status == "conflict" and result.conflicts == (1,)
    assert await r.xlen(STREAM) == 0 and await r.get(marker_key("lt_1")) is None
    got = await reservations.read(r, ["w_0", "w_1", "w_2"], "0xm", "1")
    assert got["w_0"].total_usd_micro == 0 and got["w_2"].total_usd_micro == 0  # rolled back
    assert got["w_1"].total_usd_micro == 2_000_000  # the earlier claim is untouched
    assert await r.get(reservations.order_key(items[0].client_order_id)) is None


async def test_read_returns_marker_market_and_reservations(r: aioredis.Redis, fast: FastRedis) -> None:
    state = RedisState(fast, STREAM, marker_ttl_s=3600, stream_maxlen=10_000)
    empty = await state.read("lt_1", "123", "0xm", ["w_0"])
    assert empty.marker is None and empty.market is None and empty.reserved["w_0"].total_usd_micro == 0
    await write_market(r, MarketInfo("123", "0xc", Decimal("0.01"), Decimal("5"), updated_ms=7))
    await state.emit("lt_1", b"p", _items(1))
    view = await state.read("lt_1", "123", "0xm", ["w_0", "w_9"])
    assert view.marker is not None
    assert view.market is not None and view.market.tick_size == Decimal("0.01") and view.market.updated_ms == 7
    assert view.reserved["w_0"].market_usd_micro == 1_000_000 and view.reserved["w_0"].markets == {"0xm"}
    assert view.reserved["w_9"] == reservations.NOTHING_RESERVED
    assert (await state.read("lt_2", "123", "0xm", [])).reserved == {}
    assert view.has_book is False
    await r.set("tt:book:123", b"{}")
    assert (await state.read("lt_1", "123", "0xm", [])).has_book is True
