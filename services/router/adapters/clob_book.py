"""A CLOB REST ``GET /book`` body (docs/polymarket-formats.md) as a :class:`common.marketstate.BookSnapshot`, and
storing it in ``tt:book:{asset}`` only when Redis has no book or an older one (by venue time).

Ingest only starts watching an asset after its first followed trade, so the router's ``/book`` fetch
is the executor's only book for that first copy (depth check, paper fills). A book the websocket
feed wrote later than the REST snapshot is never overwritten.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.decimals import parse_decimal
from common.marketstate import BookSnapshot, Level, book_key

# KEYS: book. ARGV: snapshot JSON, its venue time ms. Returns 1 when stored, 0 when a newer book is there.
_STORE_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' and (tonumber(d['venueTimeMs']) or 0) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def _levels(raw: Any, *, descending: bool) -> tuple[Level, ...]:
    """Levels sorted best-first (the wire sends them best-LAST); zero sizes dropped. Raises ValueError."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("levels are not a list")
    levels: list[Level] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("level is not an object")
        price, size = parse_decimal(item.get("price")), parse_decimal(item.get("size"))
        if not Decimal(0) < price < Decimal(1) or size < 0:
            raise ValueError(f"level out of range: {price} x {size}")
        if size > 0:
            levels.append((price, size))
    return tuple(sorted(levels, key=lambda lv: lv[0], reverse=descending))


def parse_book(asset_id: str, body: dict[str, Any] | None, *, fallback_tick: Decimal | None,
               now_ms: int) -> BookSnapshot | None:
    """The snapshot of ``asset_id`` in a ``/book`` body, or None when the body is not a usable book of it
    (another asset, a malformed level, no tick size anywhere)."""
    if not body or str(body.get("asset_id") or asset_id) != asset_id:
        return None
    try:
        bids = _levels(body.get("bids"), descending=True)
        asks = _levels(body.get("asks"), descending=False)
        tick = parse_decimal(body["tick_size"]) if body.get("tick_size") else fallback_tick
        venue_ms = int(str(body.get("timestamp") or "0"))
        last = parse_decimal(body["last_trade_price"]) if body.get("last_trade_price") else None
    except (ValueError, TypeError, ArithmeticError):
        return None
    if tick is None or tick <= 0:
        return None
    return BookSnapshot(asset_id=asset_id, condition_id=str(body.get("market") or "").lower(), bids=bids,
                        asks=asks, tick_size=tick, venue_time_ms=venue_ms, updated_ms=now_ms,
                        last_trade_price=last)


class BookStore:
    """Writes REST book snapshots into Redis without ever replacing a newer (websocket) one."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._script = redis.register_script(_STORE_IF_NEWER)

    async def store_if_newer(self, book: BookSnapshot) -> bool:
        """Store ``book`` when no book is stored or the stored one's venue time is older; True when stored."""
        stored = await self._script(keys=[book_key(book.asset_id)], args=[book.to_json(), str(book.venue_time_ms)])
        return bool(int(stored))
