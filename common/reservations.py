"""In-flight exposure reservations in Redis, shared by the router (reserves) and the executor (releases).

Every copy order the router emits claims its client order id and reserves what it may consume
until the executor reports it terminal:
- a BUY reserves its ``amount_usd`` against the follower wallet and the market (condition id);
- a SELL reserves its ``size`` in shares against the follower wallet and the asset, so a second
  leader exit does not sell shares an in-flight SELL already sells.
Amounts are integer micro-units (1e-6 USD or share), never floats.

Keys:
- ``tt:order:{client_order_id}`` STRING claim + reservation record ``wallet|field|micro|owner``;
  SET NX, so a client order id is claimed once. On release it becomes ``-`` + record with a TTL
  (``keep_s``), so the claim still dedupes for a while after the order ended. An unreleased claim
  never expires: a leaked reservation stays visible instead of silently vanishing.
- ``tt:resv:{wallet_id}`` HASH ``usd:{condition_id}`` → micro-USD and ``sh:{asset_id}`` → micro-shares
  reserved by the wallet's in-flight orders.
- ``tt:router:sells:{wallet_id}|{asset_id}`` SET: the router's SELL index (``services.router.adapters.redis_state``
  reads and writes it; its key and TTL are defined here, as :func:`restore_many` adds to it too).
Ids must not contain ``|``, ``,``, tabs or newlines (they are the record separators): a follower wallet id
is one of :data:`WALLET_ID`.

The executor calls :func:`release` once an order is terminal (filled, cancelled, rejected, failed,
lost, or dropped before submission); it is idempotent and a no-op for unknown ids. The scripts
build keys from ids inside Lua, so they assume one Redis node (not Redis Cluster).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

# The follower wallet ids a reservation record can carry (control refuses others, the router skips them).
WALLET_ID = re.compile(r"[A-Za-z0-9_.:-]+")
ORDER_PREFIX = "tt:order:"
WALLET_PREFIX = "tt:resv:"
USD = "usd"
SHARES = "sh"
MICRO = Decimal(1_000_000)
DEFAULT_KEEP_S = 7 * 86_400
SELLS_PREFIX = "tt:router:sells:"
SELLS_TTL_S = 7 * 86_400  # an index entry outliving this only stops the router from subtracting its fills

# Lua functions for scripts that claim orders or read reservations in bulk (prepend to the script).
# Records travel as one ARGV string (lines of tab-separated fields, see ``Reservation.line``) so a
# fan-out to a thousand followers packs a few arguments instead of thousands.
#   tt_claim_line(line) -> 1 claimed and reserved | 0 already claimed
#   tt_unclaim_line(line) undoes a claim made by this same script call
#   tt_summary(wallet_id, market, asset) -> "totalUsd\tmarketUsd\tassetShares\tmarket1,market2"
LUA_FUNCTIONS = """
local TT_ORDER_PREFIX = '""" + ORDER_PREFIX + """'
local TT_WALLET_PREFIX = '""" + WALLET_PREFIX + """'
local function tt_split(line)
  return string.match(line, '^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$')
end
local function tt_claim_line(line)
  local coid, wallet, fld, micro, owner = tt_split(line)
  local record = wallet .. '|' .. fld .. '|' .. micro .. '|' .. owner
  if not redis.call('SET', TT_ORDER_PREFIX .. coid, record, 'NX') then return 0 end
  if micro ~= '0' then redis.call('HINCRBY', TT_WALLET_PREFIX .. wallet, fld, micro) end
  return 1
end
local function tt_unclaim_line(line)
  local coid, wallet, fld, micro, owner = tt_split(line)
  redis.call('DEL', TT_ORDER_PREFIX .. coid)
  if micro == '0' then return end
  local left = redis.call('HINCRBY', TT_WALLET_PREFIX .. wallet, fld, '-' .. micro)
  if left <= 0 then redis.call('HDEL', TT_WALLET_PREFIX .. wallet, fld) end
end
local function tt_summary(wallet, market, asset)
  local h = redis.call('HGETALL', TT_WALLET_PREFIX .. wallet)
  local total, here, shares, markets = 0, 0, 0, {}
  for i = 1, #h, 2 do
    local f, v = h[i], tonumber(h[i + 1])
    if v > 0 then
      if string.sub(f, 1, 4) == 'usd:' then
        total = total + v
        markets[#markets + 1] = string.sub(f, 5)
        if f == 'usd:' .. market then here = v end
      elseif f == 'sh:' .. asset then
        shares = v
      end
    end
  end
  return string.format('%d\\t%d\\t%d\\t', total, here, shares) .. table.concat(markets, ',')
end
"""

_RESERVE = LUA_FUNCTIONS + """
local out = {}
for line in string.gmatch(ARGV[1], '[^\\n]+') do out[#out + 1] = tt_claim_line(line) end
return out
"""

# ARGV: wallet key prefix, keep seconds, then one client order id per argument. Returns released micros.
_RELEASE_MANY = """
local out = {}
for i = 3, #ARGV do
  local okey = '""" + ORDER_PREFIX + """' .. ARGV[i]
  local v = redis.call('GET', okey)
  out[#out + 1] = '0'
  if v and string.sub(v, 1, 1) ~= '-' then
    local wallet, fld, micro = string.match(v, '^([^|]*)|([^|]*)|(%d+)|')
    if wallet then
      local wkey = ARGV[1] .. wallet
      if micro ~= '0' then
        local left = redis.call('HINCRBY', wkey, fld, '-' .. micro)
        if left <= 0 then redis.call('HDEL', wkey, fld) end
      end
      redis.call('SET', okey, '-' .. v, 'EX', ARGV[2])
      out[#out] = micro
    else
      out[#out] = '-1'
    end
  end
end
return out
"""

_READ = LUA_FUNCTIONS + """
local out = {}
for w in string.gmatch(ARGV[3], '[^\\n]+') do out[#out + 1] = tt_summary(w, ARGV[1], ARGV[2]) end
return table.concat(out, '\\n')
"""


def order_key(client_order_id: str) -> str:
    """Claim / reservation record of one client order id."""
    return ORDER_PREFIX + client_order_id


def wallet_key(wallet_id: str) -> str:
    """Reserved amounts of one follower wallet."""
    return WALLET_PREFIX + wallet_id


def to_micro(value: Decimal) -> int:
    """Integer micro-units, rounded up (a reservation never under-counts)."""
    return int((value * MICRO).to_integral_value(rounding=ROUND_CEILING))


def from_micro(micro: int) -> Decimal:
    """Decimal units from micro-units."""
    return Decimal(micro) / MICRO


_ID_OK = re.compile(r"[^|,\t\n]+\Z").match


def _check_id(value: str, name: str) -> str:
    if not _ID_OK(value):
        raise ValueError(f"{name} must be non-empty and contain no '|', ',', tab or newline: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one order reserves: ``kind`` USD against a market, or SHARES against an asset."""

    client_order_id: str
    wallet_id: str
    kind: str  # USD or SHARES
    key: str  # condition id (USD) or asset id (SHARES)
    micro: int  # 0: the order claims its id and reserves nothing (a SELL the executor sizes later)
    owner: str = ""  # who claimed it (the router puts the leader trade id)

    def __post_init__(self) -> None:
        if self.kind not in (USD, SHARES):
            raise ValueError(f"kind must be {USD!r} or {SHARES!r}, got {self.kind!r}")
        if self.micro < 0:
            raise ValueError(f"micro must be >= 0, got {self.micro}")
        _check_id(self.wallet_id, "wallet_id")
        _check_id(self.key, "key")
        _check_id(self.client_order_id, "client_order_id")

    @property
    def field(self) -> str:
        """Field of the wallet hash this reservation adds to."""
        return f"{self.kind}:{self.key}"

    def line(self) -> str:
        """The record as ``tt_claim_line`` reads it: client order id, wallet, field, micro, owner."""
        return f"{self.client_order_id}\t{self.wallet_id}\t{self.kind}:{self.key}\t{self.micro}\t{self.owner}"


def lines(items: Iterable[Reservation]) -> str:
    """Several records as one script argument."""
    return "\n".join(r.line() for r in items)


def lines_for(kind: str, key: str, owner: str, orders: Iterable[tuple[str, str, int]]) -> str:
    """Records of many orders sharing ``kind``, ``key`` and ``owner`` (client order id, wallet id, micro per
    order) as one script argument: what :func:`lines` of the matching :class:`Reservation` values gives,
    validated the same way, without building an object per order (a fan-out emits a thousand)."""
    if kind not in (USD, SHARES):
        raise ValueError(f"kind must be {USD!r} or {SHARES!r}, got {kind!r}")
    _check_id(key, "key")
    fld = f"{kind}:{key}"
    out = []
    for client_order_id, wallet_id, micro in orders:
        if micro < 0:
            raise ValueError(f"micro must be >= 0, got {micro}")
        if not _ID_OK(wallet_id):
            _check_id(wallet_id, "wallet_id")
        if not _ID_OK(client_order_id):
            _check_id(client_order_id, "client_order_id")
        out.append(f"{client_order_id}\t{wallet_id}\t{fld}\t{micro}\t{owner}")
    return "\n".join(out)

@dataclass(frozen=True, slots=True)
class WalletReserved:
    """A wallet's in-flight reservations for one trade's market and asset, in micro-units."""

    total_usd_micro: int = 0
    market_usd_micro: int = 0
    asset_shares_micro: int = 0
    markets: frozenset[str] = frozenset()


NOTHING_RESERVED = WalletReserved()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def parse_summary(line: str) -> WalletReserved:
    """Parse one ``tt_summary`` line."""
    if line.startswith("0\t0\t0\t") and len(line) == 6:
        return NOTHING_RESERVED
    total, here, shares, markets = line.split("\t", 3)
    return WalletReserved(int(total), int(here), int(shares), frozenset(markets.split(",")) if markets else frozenset())


async def reserve(redis: Any, items: Sequence[Reservation]) -> list[bool]:
    """Claim and reserve several orders in one Lua call; False for ids already claimed (nothing reserved)."""
    if not items:
        return []
    result = await redis.eval(_RESERVE, 0, lines(items))
    return [int(x) == 1 for x in result]


async def release(redis: Any, client_order_id: str, *, keep_s: int = DEFAULT_KEEP_S) -> int:
    """Release an order's reservation once it is terminal; returns the micro-units released (0 if none).

    Idempotent: a second call, or a call for an id never reserved, releases nothing.
    """
    [released] = await release_many(redis, [client_order_id], keep_s=keep_s)
    if released < 0:
        raise ValueError(f"bad reservation record for {client_order_id}")
    return released


# ARGV: wallet key prefix, then per order its client order id and its subscription ("" when not known). Returns the
# micro-units reserved again per id. A SELL restored is listed in the router's SELL index again (a read of the index
# while it was released dropped it), as the router's emit lists it: ``coid|sub``, or a bare ``coid``.
_RESTORE_MANY = """
local out = {}
for i = 2, #ARGV, 2 do
  local coid, sub = ARGV[i], ARGV[i + 1]
  local okey = '""" + ORDER_PREFIX + """' .. coid
  local v = redis.call('GET', okey)
  out[#out + 1] = '0'
  if v and string.sub(v, 1, 1) == '-' then
    local record = string.sub(v, 2)
    local wallet, fld, micro = string.match(record, '^([^|]*)|([^|]*)|(%d+)|')
    if wallet then
      redis.call('SET', okey, record)
      if micro ~= '0' then redis.call('HINCRBY', ARGV[1] .. wallet, fld, micro) end
      if string.sub(fld, 1, 3) == 'sh:' then
        local ikey = '""" + SELLS_PREFIX + """' .. wallet .. '|' .. string.sub(fld, 4)
        redis.call('SADD', ikey, sub == '' and coid or coid .. '|' .. sub)
        redis.call('EXPIRE', ikey, """ + str(SELLS_TTL_S) + """)
      end
      out[#out] = micro
    end
  end
end
return out
"""


async def restore_many(redis: Any, client_order_ids: Sequence[str],
                       subscriptions: Mapping[str, str] | None = None) -> list[int]:
    """Undo the release of orders that run after all: claimed and reserved again as the router left them (the
    orphans of a dead-lettered routed trade the executor was handed again), a SELL listed in the router's SELL index
    again with its subscription from ``subscriptions`` (client order id -> subscription; the claim does not keep it:
    without it, listed by its id alone). Only for orders whose release nothing else made (they had no order row, and
    have not run); a claim not released is left as it is. Micro-units reserved again per id."""
    if not client_order_ids:
        return []
    subs = subscriptions or {}
    args = [x for c in client_order_ids for x in (c, subs.get(c, ""))]
    reply = await redis.eval(_RESTORE_MANY, 0, WALLET_PREFIX, *args)
    return [int(_s(x)) for x in reply]


async def release_many(redis: Any, client_order_ids: Sequence[str], *, keep_s: int = DEFAULT_KEEP_S) -> list[int]:
    """:func:`release` for several orders in one Lua call; micro-units released per id, in order (-1 for an
    unreadable record: nothing released, the record stays for an operator)."""
    if not client_order_ids:
        return []
    reply = await redis.eval(_RELEASE_MANY, 0, WALLET_PREFIX, str(keep_s), *client_order_ids)
    return [int(_s(x)) for x in reply]


# KEYS: the order's claim. ARGV: wallet key prefix, micro-units. The claim of an order not released yet now
# reserves ARGV[2] (the wallet's hash moves by the difference); a released or unknown claim is left as it is.
_SIZE_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) == '-' then return 0 end
local wallet, fld, micro, owner = string.match(v, '^([^|]*)|([^|]*)|(%d+)|(.*)$')
if not wallet then return 0 end
local delta = tonumber(ARGV[2]) - tonumber(micro)
redis.call('SET', KEYS[1], wallet .. '|' .. fld .. '|' .. ARGV[2] .. '|' .. owner)
if delta ~= 0 then
  local left = redis.call('HINCRBY', ARGV[1] .. wallet, fld, delta)
  if left <= 0 then redis.call('HDEL', ARGV[1] .. wallet, fld) end
end
return 1
"""


async def size_claim(redis: Any, client_order_id: str, micro: int) -> bool:
    """Make an order's claim reserve ``micro`` units: a SELL the executor sized once its turn came (claimed
    with none, or sized again after a restart), so the router's next SELL of the position does not count
    those shares again; released like any other. False when the claim is gone or released."""
    if micro < 0:
        raise ValueError(f"micro must be >= 0, got {micro}")
    return int(await redis.eval(_SIZE_CLAIM, 1, ORDER_PREFIX + client_order_id, WALLET_PREFIX, str(micro))) == 1


async def read(redis: Any, wallet_ids: Iterable[str], market: str = "",
               asset_id: str = "") -> dict[str, WalletReserved]:
    """In-flight reservations of several wallets in one Lua call: USD total and markets, plus the USD
    reserved in ``market`` and the shares reserved in ``asset_id`` when given."""
    ids = list(dict.fromkeys(wallet_ids))
    if not ids:
        return {}
    reply = _s(await redis.eval(_READ, 0, market, asset_id, "\n".join(ids)))
    return {w: parse_summary(line) for w, line in zip(ids, reply.split("\n"), strict=True)}
