"""The router's Redis round trips per leader trade: one read script and one emit script.

- read: the routed marker of the trade, the asset's cached market info, whether its book is stored,
  and every follower wallet's in-flight reservations (summed in Lua: one short line per wallet), in one Lua call.
- emit: all-or-nothing in one Lua call — claim every order's client order id (SET NX), reserve its
  USD / shares, append the RoutedTrade to the durable log and set the trade's routed marker. A
  trade whose marker exists is not appended again, so a re-emit after a crash is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common import reservations
from common.marketstate import MarketInfo, book_key, market_key
from common.reservations import WalletReserved

MARKER_PREFIX = "tt:router:routed:"

# KEYS: marker, market info, book. ARGV: market, asset, wallet ids (one per line).
_READ = reservations.LUA_FUNCTIONS + """
local out = {}
for w in string.gmatch(ARGV[3], '[^\\n]+') do out[#out + 1] = tt_summary(w, ARGV[1], ARGV[2]) end
return {redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[2]), table.concat(out, '\\n'),
        redis.call('EXISTS', KEYS[3])}
"""

# KEYS: marker, stream. ARGV: payload, marker ttl s, stream maxlen, reservation lines.
_EMIT = reservations.LUA_FUNCTIONS + """
local m = redis.call('GET', KEYS[1])
if m then return {'dup', m} end
local lines, taken, got = {}, {}, {}
for line in string.gmatch(ARGV[4], '[^\\n]+') do lines[#lines + 1] = line end
for i, line in ipairs(lines) do
  if tt_claim_line(line) == 0 then taken[#taken + 1] = i else got[#got + 1] = i end
end
if #taken > 0 then
  for _, i in ipairs(got) do tt_unclaim_line(lines[i]) end
  return {'conflict', taken}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[1])
redis.call('SET', KEYS[1], id, 'EX', ARGV[2])
return {'ok', id}
"""


def marker_key(leader_trade_id: str) -> str:
    """Set (to the log cursor) once a leader trade's RoutedTrade is appended."""
    return MARKER_PREFIX + leader_trade_id


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class RedisView:
    """What Redis knows about a leader trade before routing it."""

    marker: str | None
    market: MarketInfo | None
    reserved: dict[str, WalletReserved] = field(default_factory=dict)
    has_book: bool = True


@dataclass(frozen=True, slots=True)
class EmitResult:
    """``status`` "ok" (appended now), "dup" (appended before) or "conflict" (``conflicts`` = 0-based
    indexes of orders whose client order id was already claimed; nothing was written)."""

    status: str
    cursor: str = ""
    conflicts: tuple[int, ...] = ()


class RedisState:
    """The router's per-trade Redis scripts."""

    def __init__(self, redis: Any, stream: str, *, marker_ttl_s: int, stream_maxlen: int) -> None:
        self.redis = redis
        self.stream = stream
        self.marker_ttl_s = marker_ttl_s
        self.stream_maxlen = stream_maxlen
        self._read = redis.register_script(_READ)
        self._emit = redis.register_script(_EMIT)

    async def read(self, leader_trade_id: str, asset_id: str, market: str,
                   wallet_ids: Sequence[str]) -> RedisView:
        """Marker, market info and the wallets' reservations (for ``market`` and the asset) in one round trip."""
        reply = await self._read(keys=[marker_key(leader_trade_id), market_key(asset_id), book_key(asset_id)],
                                 args=[market, asset_id, "\n".join(wallet_ids)])
        marker = _s(reply[0]) or None
        flat = reply[1]
        info = None
        if flat:
            h = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
            try:
                info = MarketInfo.from_hash(h)
            except (KeyError, ValueError, ArithmeticError):
                info = None  # unusable cache entry: refetched
        summaries = _s(reply[2]).split("\n") if wallet_ids else []
        reserved = {w: reservations.parse_summary(line) for w, line in zip(wallet_ids, summaries, strict=True)}
        return RedisView(marker, info, reserved, has_book=bool(int(reply[3])))

    async def emit(self, leader_trade_id: str, payload: bytes,
                   items: Sequence[reservations.Reservation] | str) -> EmitResult:
        """Claim, reserve, append and mark in one atomic script (``items`` may come as ``reservations.lines``)."""
        lines = items if isinstance(items, str) else reservations.lines(items)
        reply = await self._emit(keys=[marker_key(leader_trade_id), self.stream],
                                 args=[payload, str(self.marker_ttl_s), str(self.stream_maxlen), lines])
        status = _s(reply[0])
        if status == "conflict":
            return EmitResult(status, conflicts=tuple(int(i) - 1 for i in reply[1]))
        return EmitResult(status, cursor=_s(reply[1]))
