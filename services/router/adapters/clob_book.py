"""A CLOB REST ``GET /book`` body (parsed by :func:`common.clob_rest.parse_book`) as a
:class:`common.marketstate.BookSnapshot`, and storing it in ``tt:book:{asset}`` only when Redis has no book
or an older one (by venue time).

Ingest only starts watching an asset after its first followed trade, so the router's ``/book`` fetch
is the executor's only book for that first copy (depth check, paper fills). A book the websocket
feed wrote later than the REST snapshot is never overwritten.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.clob_rest import BookMsg
from common.marketstate import BookSnapshot, Level, book_key

_ZERO = Decimal(0)
_ONE = Decimal(1)

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


def book_snapshot(asset_id: str, book: BookMsg | None, *, fallback_tick: Decimal | None,
                  now_ms: int) -> BookSnapshot | None:
    """The snapshot of ``asset_id`` from a parsed ``/book`` body (levels best-first, zero sizes dropped), or None
    when it is not a usable book of it (another asset, a level price outside (0, 1), no tick size anywhere)."""
    if book is None or book.asset_id != asset_id:
        return None
    tick = book.tick_size or fallback_tick
    if tick is None or tick <= 0:
        return None
    if any(not _ZERO < price < _ONE for price, _size in (*book.bids, *book.asks)):
        return None
    return BookSnapshot(asset_id=asset_id, condition_id=book.market, bids=_best_first(book.bids, descending=True),
                        asks=_best_first(book.asks, descending=False), tick_size=tick, venue_time_ms=book.venue_ms,
                        updated_ms=now_ms, last_trade_price=book.last_trade_price,
                        tick_known=book.tick_size is not None)


def _best_first(levels: tuple[Level, ...], *, descending: bool) -> tuple[Level, ...]:
    """The wire sends levels best-LAST; zero sizes are gone levels."""
    return tuple(sorted((lv for lv in levels if lv[1] > 0), key=lambda lv: lv[0], reverse=descending))


class BookStore:
    """Writes REST book snapshots into Redis without ever replacing a newer (websocket) one."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._script = redis.register_script(_STORE_IF_NEWER)

    async def store_if_newer(self, book: BookSnapshot) -> bool:
        """Store ``book`` when no book is stored or the stored one's venue time is older; True when stored."""
        stored = await self._script(keys=[book_key(book.asset_id)], args=[book.to_json(), str(book.venue_time_ms)])
        return bool(int(stored))
