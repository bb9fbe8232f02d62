"""Market info from CLOB REST written into ``tt:market:{asset}`` (:mod:`common.marketstate`) without undoing what was
written while the answer was on its way: ingest's market sync and the router's refresh both write through
:func:`write_rest_market`."""

from __future__ import annotations

from typing import Any

from common.marketstate import MarketInfo, market_key

# A CLOB REST market answer asked for at ARGV[1] (Unix ms), ARGV[2..]: its fields and values. A closed market stays
# closed (REST lags the socket's market_resolved). When the entry was written since the answer was asked for
# (``updated_ms`` >= ARGV[1]: the socket's tick_size_change, a close), the fields those writes keep (tick size, closed,
# accepting orders, updated_ms) stay as they are; the rest, which only REST knows, is written. Returns how many kept.
_WRITE_REST_MARKET = """
local h = redis.call('HMGET', KEYS[1], 'updated_ms', 'closed')
local written = tonumber(h[1] or '')
local newer = written ~= nil and written >= tonumber(ARGV[1])
local closed = h[2] == '1'
local kept = 0
for i = 2, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  if closed and f == 'closed' then v = '1' elseif closed and f == 'accepting_orders' then v = '0' end
  if newer and (f == 'tick_size' or f == 'closed' or f == 'accepting_orders' or f == 'updated_ms')
      and redis.call('HEXISTS', KEYS[1], f) == 1 then
    kept = kept + 1
  else
    redis.call('HSET', KEYS[1], f, v)
  end
end
return kept
"""


async def write_rest_market(redis: Any, info: MarketInfo, asked_ms: int) -> int:
    """Store a CLOB REST market answer asked for at ``asked_ms`` (Unix ms) without undoing what was written since or a
    close (:data:`_WRITE_REST_MARKET`; ingest's market sync and the router's refresh alike); returns how many fields
    were kept."""
    args = [str(asked_ms)]
    for name, value in info.to_hash().items():
        args += [name, value]
    return int(await redis.eval(_WRITE_REST_MARKET, 1, market_key(info.asset_id), *args))
