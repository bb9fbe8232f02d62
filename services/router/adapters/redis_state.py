"""The router's Redis round trips per batch of leader trades: one read script and one emit script,
on the pipelined :class:`~common.fastredis.FastRedis` connection.

- read: the routed marker of every trade, each asset's cached market info and whether its book is
  stored, and follower wallets' in-flight reservations (summed in Lua: one short line per wallet,
  market and asset asked for), in one Lua call. For each wallet of an asset a SELL of the batch trades it also
  returns the router's SELLs in flight (from the SELL index below): those holding shares by client order id with
  each one's reservation and subscription, so the PostgreSQL read that follows can tell how much of them already
  filled, and a copied SELL which of them sell its own subscription's part; and those still reserving none, SELLs
  sent with a fraction that the executor has not sized yet (``admission.size_later`` sizes the claim in their
  turn). Their shares are not known yet: a SELL routed meanwhile goes out as a fraction too, sized by the executor
  after them (``domain.sells.size_sell``).
- SELL index ``tt:router:sells:{wallet}|{asset}``: a SET of the router's SELL copies, each as its client order
  id and subscription (``coid|sub``; a bare ``coid`` from before subscriptions were kept), written by the emit,
  with a TTL of :data:`SELLS_TTL_S` renewed on every add. The executor releases reservations without knowing
  it: the read drops the ids whose claim is released or gone (``reservations.restore_many`` lists a SELL whose
  release the executor undoes again). It only ever narrows what the router subtracts: a
  SELL missing from it (expired, or reserved by anything else) keeps its whole reservation counted, against
  every subscription's part of the position, as does a bare ``coid`` (its fills come off, its subscription is
  not known). Guard's exits, manual SELLs and the copies the executor sent again re-sized reserve nothing here: the
  PostgreSQL read counts them (from the executor's open orders, ``store_sql.LOAD``). Across an upgrade or a
  rollback: this code reads the bare members the router wrote before; a router before subscriptions were kept reads
  a ``coid|sub`` member as a claim gone and drops it, so that SELL's whole reservation stays counted (it holds back
  more shares, never fewer).
- emit: for each RoutedTrade in order, all-or-nothing — claim every order's client order id (SET
  NX), reserve its USD / shares, append the RoutedTrade to the durable log (as consecutive parts when it
  is too big for one message: ``outbound.split_routed``) and set the trade's routed marker to the cursor
  of its first entry. The script stops at the first trade whose marker exists ("dup") or one of whose client
  order ids is already claimed ("conflict"; nothing of that trade is written), so what follows it is
  never appended ahead of it. A SELL trade's orders are added to the SELL index. A trade whose marker
  exists is not appended again: a re-emit after a crash is harmless.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common import reservations
from common.fastredis import FastRedis, Script
from common.marketstate import MarketInfo, book_key, market_key
from common.reservations import SELLS_PREFIX as SELLS_PREFIX  # the index's key and TTL (restore_many adds to it)
from common.reservations import SELLS_TTL_S as SELLS_TTL_S
from common.reservations import WalletReserved

MARKER_PREFIX = "tt:router:routed:"

# Lua functions of the SELL index (prepended to the scripts after reservations.LUA_FUNCTIONS).
#   tt_index_sells(lines, subs) adds the SELL lines' client order ids, each with its subscription (the line's in
#     ``subs``, one per line), to their (wallet, asset) index
#   tt_sells(wallet, asset) -> "coid|micro|sub,coid|micro|sub" of the indexed SELLs still claimed for the asset
#     (sub "" when not known; micro 0: sent with a fraction, not sized yet; claims released or gone are dropped from
#     the index)
_SELLS_LUA = """
local TT_SELLS_PREFIX = '""" + SELLS_PREFIX + """'
local function tt_index_sells(lines, subs)
  local owners = {}
  for s in string.gmatch(subs .. '\\n', '([^\\n]*)\\n') do owners[#owners + 1] = s end
  local i = 0
  for line in string.gmatch(lines, '[^\\n]+') do
    i = i + 1
    local coid, wallet, fld = string.match(line, '^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t')
    if coid and string.sub(fld, 1, 3) == 'sh:' then
      local ikey, sub = TT_SELLS_PREFIX .. wallet .. '|' .. string.sub(fld, 4), owners[i] or ''
      redis.call('SADD', ikey, sub == '' and coid or coid .. '|' .. sub)
      redis.call('EXPIRE', ikey, """ + str(SELLS_TTL_S) + """)
    end
  end
end
local function tt_sells(wallet, asset)
  local ikey = TT_SELLS_PREFIX .. wallet .. '|' .. asset
  local out, want = {}, 'sh:' .. asset
  for _, member in ipairs(redis.call('SMEMBERS', ikey)) do
    local coid, sub = member, ''
    local bar = string.find(member, '|', 1, true)
    if bar then coid, sub = string.sub(member, 1, bar - 1), string.sub(member, bar + 1) end
    local v, micro = redis.call('GET', TT_ORDER_PREFIX .. coid), nil
    if v and string.sub(v, 1, 1) ~= '-' then
      local w, fld, m = string.match(v, '^([^|]*)|([^|]*)|(%d+)|')
      if w == wallet and fld == want then micro = m end
    end
    if micro == nil then
      redis.call('SREM', ikey, member)
    else
      out[#out + 1] = coid .. '|' .. micro .. '|' .. sub
    end
  end
  return table.concat(out, ',')
end
"""

# KEYS: n_trades markers, then n_assets market-info keys, then n_assets book keys.
# ARGV: n_trades, n_assets, then per (market, asset) group: market, asset, wallet ids (one per line), and
# '1' when its SELLs are wanted (a SELL trade of the asset is in the batch), else '0'.
# Returns {markers, infos, books, per group: summary lines, SELLs: "wallet\tasset\tcoid|micro|sub,..." for each
# wallet of a group wanting them with indexed SELLs claimed for the asset}. Every wallet of such a group is looked up
# in the index, whatever it reserves: a SELL not sized yet reserves nothing (one SMEMBERS of a key that mostly does
# not exist).
_READ = Script(reservations.LUA_FUNCTIONS + _SELLS_LUA + """
local nt, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local markers, infos, books, groups, sells = {}, {}, {}, {}, {}
for i = 1, nt do markers[i] = redis.call('GET', KEYS[i]) or '' end
for i = 1, na do
  infos[i] = redis.call('HGETALL', KEYS[nt + i])
  books[i] = redis.call('EXISTS', KEYS[nt + na + i])
end
for g = 3, #ARGV, 4 do
  local out, market, asset, want = {}, ARGV[g], ARGV[g + 1], ARGV[g + 3] == '1'
  for w in string.gmatch(ARGV[g + 2], '[^\\n]+') do
    local line = tt_summary(w, market, asset)
    out[#out + 1] = line
    if want then
      local s = tt_sells(w, asset)
      if s ~= '' then sells[#sells + 1] = w .. '\\t' .. asset .. '\\t' .. s end
    end
  end
  groups[#groups + 1] = table.concat(out, '\\n')
end
return {markers, infos, books, groups, sells}
""")

# KEYS: the stream. ARGV: marker ttl s, stream maxlen, then per trade: marker key, reservation lines, the
# subscription of each line (one per line; "" when none are given), the number of parts n, then the n payloads.
# Returns {appended cursors in order (every part of every trade appended), status of the trade it stopped at
# ('' = none), its detail}.
_EMIT = Script(reservations.LUA_FUNCTIONS + _SELLS_LUA + """
local ids = {}
local t = 3
while t <= #ARGV do
  local mkey, text, subs, n = ARGV[t], ARGV[t + 1], ARGV[t + 2], tonumber(ARGV[t + 3])
  local m = redis.call('GET', mkey)
  if m then return {ids, 'dup', m} end
  local lines, taken, got = {}, {}, {}
  for line in string.gmatch(text, '[^\\n]+') do lines[#lines + 1] = line end
  for i, line in ipairs(lines) do
    if tt_claim_line(line) == 0 then taken[#taken + 1] = i else got[#got + 1] = i end
  end
  if #taken > 0 then
    for _, i in ipairs(got) do tt_unclaim_line(lines[i]) end
    return {ids, 'conflict', taken}
  end
  if string.find(text, '\\tsh:', 1, true) then tt_index_sells(text, subs) end
  local first
  for k = 1, n do
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'p', ARGV[t + 3 + k])
    first = first or id
    ids[#ids + 1] = id
  end
  redis.call('SET', mkey, first, 'EX', ARGV[1])
  t = t + 4 + n
end
return {ids, '', ''}
""")


def marker_key(leader_trade_id: str) -> str:
    """Set (to the log cursor) once a leader trade's RoutedTrade is appended."""
    return MARKER_PREFIX + leader_trade_id


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _market_info(flat: list[Any]) -> MarketInfo | None:
    if not flat:
        return None
    h = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    try:
        return MarketInfo.from_hash(h)
    except (KeyError, ValueError, ArithmeticError):
        return None  # unusable cache entry: refetched


def _sells(lines: list[Any]) -> tuple[dict[tuple[str, str], tuple[InFlightSell, ...]], dict[str, str],
                                      dict[tuple[str, str], tuple[str, ...]]]:
    """The read script's SELL lines, ``wallet\tasset\tcoid|micro|sub,coid|micro|sub``: the SELLs reserving shares
    by (wallet, asset), each once (a bare member and a ``coid|sub`` one of the same claim are one SELL), the
    subscription of each whose subscription is known (``sub`` "": a bare member, written before subscriptions were
    kept), and by (wallet, asset) the client order ids of those reserving none yet (sent with a fraction, not
    sized yet)."""
    out: dict[tuple[str, str], tuple[InFlightSell, ...]] = {}
    subs: dict[str, str] = {}
    unsized: dict[tuple[str, str], tuple[str, ...]] = {}
    for raw in lines:
        wallet, asset, orders = _s(raw).split("\t", 2)
        key = (wallet, asset)
        if key in out or key in unsized:  # asked twice (two markets of one asset): the same answer
            continue
        listed: dict[str, int] = {}  # one claim, however many members name it: its fills come off once
        waiting: dict[str, None] = {}
        for item in orders.split(","):
            coid, micro, sub = item.split("|", 2)
            if micro == "0":
                waiting[coid] = None
                continue
            listed[coid] = int(micro)
            if sub:
                subs[coid] = sub
        if listed:
            out[key] = tuple(listed.items())
        if waiting:
            unsized[key] = tuple(waiting)
    return out, subs, unsized


@dataclass(frozen=True, slots=True)
class RedisView:
    """What Redis knows about a leader trade before routing it."""

    marker: str | None
    market: MarketInfo | None
    reserved: dict[str, WalletReserved] = field(default_factory=dict)
    has_book: bool = True


Query = tuple[str, str, str]  # (wallet, market, asset)
InFlightSell = tuple[str, int]  # (client order id, micro-shares it reserves)


@dataclass(frozen=True, slots=True)
class BatchView:
    """What Redis knows about a batch of leader trades before routing them."""

    markers: dict[str, str]  # leader trade id -> cursor, for trades appended before
    markets: dict[str, MarketInfo | None]  # asset -> cached market info
    has_book: dict[str, bool]  # asset -> book stored
    reserved: dict[Query, WalletReserved]
    # (wallet, asset) -> the router's SELLs counted in ``reserved``'s shares, known by id (a part of them at
    # most: see the SELL index); only for wallets with shares reserved in the asset, of the assets SELLs were asked
    # for
    sells: dict[tuple[str, str], tuple[InFlightSell, ...]] = field(default_factory=dict)
    sell_subscriptions: dict[str, str] = field(default_factory=dict)  # client order id -> subscription, when known
    # (wallet, asset) -> the router's SELLs in flight still reserving no shares: sent with a fraction, not sized by
    # the executor yet (what they will sell is not known); only for the assets SELLs were asked for
    unsized: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def sell_order_ids(self) -> list[str]:
        """Client order ids of every SELL in :attr:`sells`."""
        return [coid for orders in self.sells.values() for coid, _ in orders]


@dataclass(frozen=True, slots=True)
class EmitResult:
    """``status`` "ok" (appended now), "dup" (appended before) or "conflict" (``conflicts`` = 0-based
    indexes of orders whose client order id was already claimed; nothing was written)."""

    status: str
    cursor: str = ""
    conflicts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchEmitResult:
    """The cursors of the trades appended now (a prefix of the batch; a trade's cursor is its first entry's),
    the cursors of every entry each of them appended (its parts, in order), and, when the script stopped early,
    how the next trade ended (``stopped.status`` "dup" or "conflict")."""

    cursors: list[str]
    stopped: EmitResult | None
    entries: list[list[str]] = field(default_factory=list)


Payload = bytes | Sequence[bytes]  # one log entry, or the parts of one split RoutedTrade


def _parts(payload: Payload) -> Sequence[bytes]:
    return (payload,) if isinstance(payload, bytes) else payload


class RedisState:
    """The router's per-batch Redis scripts."""

    def __init__(self, redis: FastRedis, stream: str, *, marker_ttl_s: int, stream_maxlen: int) -> None:
        self.redis = redis
        self.stream = stream
        self.marker_ttl_s = marker_ttl_s
        self.stream_maxlen = stream_maxlen

    async def read_batch(self, leader_trade_ids: Sequence[str], assets: Sequence[str],
                         queries: Mapping[tuple[str, str], Sequence[str]], *,
                         sell_assets: Collection[str] | None = None) -> BatchView:
        """Markers, market info and book presence per asset, and the reservations of the wallets of each
        (market, asset) in ``queries``, in one round trip; the indexed SELLs behind the reserved shares, and those
        not sized yet, only for the assets in ``sell_assets`` (all when None: only a SELL is sized on them). Ids
        must not contain tabs or newlines."""
        keys: list[str | bytes | int] = [marker_key(lt) for lt in leader_trade_ids]
        keys += [market_key(a) for a in assets]
        keys += [book_key(a) for a in assets]
        args: list[str | bytes | int] = [len(leader_trade_ids), len(assets)]
        for (market, asset), wallets in queries.items():
            args += [market, asset, "\n".join(wallets), "1" if sell_assets is None or asset in sell_assets else "0"]
        reply = await self.redis.run_script(_READ, keys, args)
        markers = {lt: _s(m) for lt, m in zip(leader_trade_ids, reply[0], strict=True) if m}
        markets = {a: _market_info(flat) for a, flat in zip(assets, reply[1], strict=True)}
        books = {a: bool(int(b)) for a, b in zip(assets, reply[2], strict=True)}
        reserved: dict[Query, WalletReserved] = {}
        parse = reservations.parse_summary
        for ((market, asset), wallets), text in zip(queries.items(), reply[3], strict=True):
            if wallets:
                for w, line in zip(wallets, _s(text).split("\n"), strict=True):
                    reserved[(w, market, asset)] = parse(line)
        sells, subs, unsized = _sells(reply[4])
        return BatchView(markets=markets, markers=markers, has_book=books, reserved=reserved, sells=sells,
                         sell_subscriptions=subs, unsized=unsized)

    async def read(self, leader_trade_id: str, asset_id: str, market: str,
                   wallet_ids: Sequence[str]) -> RedisView:
        """Marker, market info and the wallets' reservations (for ``market`` and the asset) in one round trip."""
        view = await self.read_batch([leader_trade_id], [asset_id], {(market, asset_id): list(wallet_ids)})
        return RedisView(view.markers.get(leader_trade_id), view.markets[asset_id],
                         {w: view.reserved[(w, market, asset_id)] for w in wallet_ids}, view.has_book[asset_id])

    async def emit_batch(self, items: Sequence[tuple[str, Payload, str]],
                         subscriptions: Sequence[str] | None = None) -> BatchEmitResult:
        """Claim, reserve, append and mark each ``(leader trade id, payload or its parts, reservation lines)`` in
        order, in one atomic script that stops at the first trade it cannot append. ``subscriptions``: for each
        trade, the subscription of each of its lines, one per line (the SELL index keeps them)."""
        if not items:
            return BatchEmitResult([], None)
        args: list[str | bytes | int] = [self.marker_ttl_s, self.stream_maxlen]
        counts: list[int] = []
        for i, (lt, payload, lines) in enumerate(items):
            parts = _parts(payload)
            counts.append(len(parts))
            args += [marker_key(lt), lines, subscriptions[i] if subscriptions else "", len(parts), *parts]
        ids, status, detail = await self.redis.run_script(_EMIT, [self.stream], args)
        flat = [_s(c) for c in ids]
        entries: list[list[str]] = []
        at = 0
        for n in counts:
            if at >= len(flat):
                break
            entries.append(flat[at:at + n])
            at += n
        cursors = [e[0] for e in entries]
        status = _s(status)
        if status == "dup":
            return BatchEmitResult(cursors, EmitResult("dup", cursor=_s(detail)), entries)
        if status == "conflict":
            return BatchEmitResult(cursors, EmitResult("conflict", conflicts=tuple(int(i) - 1 for i in detail)),
                                   entries)
        return BatchEmitResult(cursors, None, entries)

    async def emit(self, leader_trade_id: str, payload: Payload,
                   items: Sequence[reservations.Reservation] | str, subscriptions: str = "") -> EmitResult:
        """Claim, reserve, append and mark one trade (``items`` may come as ``reservations.lines``; see
        :meth:`emit_batch` for ``subscriptions``)."""
        lines = items if isinstance(items, str) else reservations.lines(items)
        done = await self.emit_batch([(leader_trade_id, payload, lines)], [subscriptions])
        if done.stopped is not None:
            return done.stopped
        return EmitResult("ok", cursor=done.cursors[0])
