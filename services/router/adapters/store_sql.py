"""The router's SQL text, and the helpers that pack a batch's values into the few parameters it takes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from common.lost_sells import lost_of, unseen
from common.storage import compact_sql

PLANNER_OPTIONS = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off"

# The states an order never leaves (the executor's order_lifecycle.TERMINAL).
TERMINAL_STATES = "('FILLED', 'CANCELLED', 'REJECTED', 'LOST', 'FAILED')"

# The form of the client order ids of the router's copies (domain.decide.client_order_id: "co_" + 32 hex digits), a
# POSIX regular expression as PostgreSQL reads it. A copy of another id was not sent by the router and claims nothing
# in Redis: the executor's re-sized SELLs (resizing.RESIZED_PREFIX "co_rs_" + 30 hex digits), a COPY given to
# SubmitOrder. The executor marks the SELLs of another form when it inserts them (its order_sql.ROUTER_COPY_ID, the
# same expression), and LOAD reads those marked.
ROUTER_COPY_ID = "^co_[0-9a-f]{32}$"
# Of an order_pending row ``x``: open, and one LOAD counts: a SELL the executor marked (unclaimed_sell), or one whose id
# is not of the router's form (a BUY: an unmarked SELL is one of the router's copies). The predicate of the index
# order_pending_unclaimed (migration 0800) as written there: PostgreSQL uses the index when LOAD's WHERE has it. The
# form is tested as ROUTER_COPY_ID matches (35 bytes: "co_", then 32 of the hex digits rtrim strips) without a
# regular expression: evaluated on every open row the executor inserts, the expression costs 1.1 ms a 1,000-order
# intent insert (20 ms), the regular expression 2.4 ms.
UNCLAIMED = ("x.terminal_at IS NULL AND (x.unclaimed_sell OR octet_length(x.client_order_id) <> 35"
             " OR rtrim(x.client_order_id, '0123456789abcdef') <> 'co_')")

EXISTING = "SELECT payload, appended_cursor FROM routed_trades WHERE leader_trade_id = %s"

# Everything a batch of leader trades needs, in ONE statement (one round trip, no pipeline bookkeeping).
# Lists arrive as one SEP-joined string split server-side (string_to_array); per-wallet rows come back
# as compact JSON text with decimals as strings (parsed with orjson, then Decimal).
# Every table is reached by key, one LATERAL lookup per input value (OFFSET 0 keeps PostgreSQL from
# flattening it into a join): a plan the connection caches while a table is still small (a fresh
# database) would otherwise hash-join it, reading the whole table on every call as it grows.
# A wallet's positions are aggregated inside its own lookup, one JSON row per wallet: its cost held in all
# markets and their list, its costs in the batch's markets (a market repeats when both its outcomes are held:
# the reader adds them up), its shares of the batch's assets (for an asset a SELL of the batch trades whose
# position keeps a split, with its cost and the split: a copied SELL is then sized on its subscription's part; and
# the subscription whose copy opened it, when one did: a SELL in a market a subscription's lists cannot rule out is
# mirrored only when its copies bought shares of the position, filters.market_lists; "" for a position bought by hand,
# origin MANUAL: with no split kept it is no subscription's, holdings.by_hand; none for an EXTERNAL one, which may hold
# the fill of a copy BUY that ended LOST: sized on the wallet's shares, as before)
# and its realized PnL of the day at its lowest (the daily loss limit's input): the lowest point the executor kept
# for the wallet's day (wallet_day_pnl, one probe by its key), or the positions' net of the day when that is lower (a
# booking of an executor older than migration 0780, which keeps no low). Grouping all wallets' positions after the
# lookups instead (a hash table of every wallet, three GROUP BYs) took 56 ms for 10,000 followers holding one
# position each, against 38 ms; a DISTINCT in such an aggregate had made PostgreSQL sort every position of the batch
# first, 47 of the statement's 88 ms. Only the positions held are read (every writer keeps a position OPEN while it
# holds shares: an ended life's row has none), through positions_wallet_open (migration 0840): a wallet keeps every
# life it ended in the table, and reading them all for each follower grew with its history. The ended ones are read
# too only for the day's realized PnL (a BUY batch with a daily loss limit), since pnl_day, which every booking
# writes, may not be indexed (a booking's update must stay HOT: tests/test_foundation.py).
# With them, for each SELL's asset held, when the wallet's position opened (Unix ms: positions.opened_at, set anew when
# a position opens again; null in a batch of BUYs): a leader's exit made before a subscription became active does not
# sell a position opened since (filters.exit_before_active).
# The SELLs in flight the router did not send may still sell some of the shares a SELL of the batch sizes copies on:
# guard's exits (origin TRIGGER), manual SELLs (MANUAL) and copies (COPY) whose client order id is not of the router's
# form (ROUTER_COPY_ID: a copy SELL the venue refused for lack of shares, sent again re-sized by the executor's
# reconciliation under a new id) reserve nothing in Redis, where the router sees only its own copies. They are counted
# as the executor counts SELLs under way (services/executor/adapters/order_sql.py, _SELLING): open in order_pending,
# neither NEW nor terminal, each its size less its fills booked (written with the position they reduce, in one
# transaction), by subscription as the executor's SELLABLE_PART groups them: a copy's (the re-sized one keeps its
# original's) under its subscription, set aside from its own part; the others (and a copy of no subscription) under
# null, held back from every part. The router's copies (origin COPY, an id of its form) are left out: the Redis read
# counts them, by subscription; every one of them claimed its id there when it was emitted, so none is counted twice
# (whether the SELL index lists it or not).
# The executor marks those SELLs when it inserts them (order_pending.unclaimed_sell, order_sql.UNCLAIMED_SELL:
# migration 0730, which marked those open then; the executor is upgraded first, see there).
# The BUYs in flight the router did not send (manual BUYs; a COPY given to SubmitOrder) reserve nothing in Redis
# either, and would take a copy past the follower's exposure caps: what each may still spend (its amount_usd less the
# notional its fills booked, written with the position it grows in one transaction; a GTC sized in shares: the shares
# left at its limit) counts as in flight in its market (the condition id its intent carries, read from its proto in
# PostgreSQL: orders has no column of it; order_condition_field and proto_text, migration 0800), the wallet's total
# and its open markets (store._buying_rows). Not NEW only: a BUY is never sized later, and one not posted yet is about
# to be.
# Both are read in one set (np): each wallet's open rows of the index order_pending_unclaimed (migration 0800,
# predicate UNCLAIMED: the marked SELLs, and the rows whose id is not of the router's form), the SELLs kept to the
# batch's SELL assets, then each one's order by key (LATERAL, OFFSET 0); the router's own copies are not in the index:
# neither their order_pending rows nor their orders are read (the id test is the index's predicate: LOAD does not
# run it). The SELLs are summed by (wallet, asset, subscription) (the ``unclaimed`` column; the reader keeps those of
# the positions held, store._read_wallets), the BUYs listed with their condition id (``buying``).
# The SELLs ended LOST that may have sold (common.lost_sells: their claims are released) are summed with them, for
# the batch's SELL assets (``lost``: each wallet's rows of lost_sells, a probe of its index with none, apart from the
# join: common.lost_sells.lost_of; none at all for a batch of BUYs).
# On a 10,000-follower BUY, each follower holding one position: 75 ms with nothing in flight (70 before the BUYs were
# read: a probe of the empty index a wallet), as much with one of the router's copies in flight each (95-111 ms when
# every open row was walked through order_pending_open to drop the copies), 125 ms with a manual BUY more each (its
# order row read by key; 149 ms, and 27-69 ms of decoding in Python, when its proto was shipped in base64).
# On 1,000 followers holding 6 positions each, 3,200 orders open (3,000 of the router's copies), the BUYs' lookup
# through order_pending_open had added 5,600 pages to the 10,000 of a BUY batch. The SELLs alone had been looked up by
# asset through their own partial index (order_pending_unclaimed_sells); looked up per position held, a
# 10,000-follower SELL of 6 positions each had read 100,002 pages instead of 80,002 with nothing in flight, and
# 140,002 with the router's previous copies in flight.
LOAD = compact_sql("""
WITH w AS (SELECT DISTINCT unnest(string_to_array(%(wallets)s, %(sep)s)) AS id),
k AS (SELECT string_to_array(%(markets)s, %(sep)s) AS ms, string_to_array(%(assets)s, %(sep)s) AS az,
      string_to_array(%(sell_assets)s, %(sep)s) AS sa),
agg AS (
    SELECT w.id AS w, x.*
    FROM w CROSS JOIN k CROSS JOIN LATERAL (
        SELECT sum(q.cost_usd) FILTER (WHERE q.held) AS total_cost,
               string_agg(q.m, ',') FILTER (WHERE q.held) AS markets,
               json_agg(json_build_array(q.m, q.cost_usd::text)) FILTER (WHERE q.held AND q.m = ANY(k.ms)) AS mc,
               json_agg(CASE WHEN NOT q.a = ANY(k.sa) OR q.shares IS NULL AND q.opener IS NULL
                                 THEN json_build_array(q.a, q.size::text)
                             WHEN q.shares IS NULL THEN json_build_array(q.a, q.size::text, q.opener)
                             ELSE json_build_array(q.a, q.size::text, q.cost_usd::text, q.shares, q.opener) END)
                   FILTER (WHERE q.held AND q.a = ANY(k.az)) AS sz,
               json_agg(json_build_array(q.a, q.opened_ms)) FILTER (WHERE q.held AND q.a = ANY(k.sa)) AS op,
               least(sum(q.pnl_day_realized_usd) FILTER (WHERE %(want_pnl)s AND q.pnl_day = %(day)s),
                     (SELECT d.low_usd FROM wallet_day_pnl d WHERE %(want_pnl)s AND d.follower_wallet_id = w.id
                      AND d.day = %(day)s)) AS realized
        FROM (SELECT coalesce(nullif(x.condition_id, ''), x.asset_id) AS m, x.asset_id AS a, x.cost_usd, x.size,
                     x.pnl_day, x.pnl_day_realized_usd, x.size >= %(min_held)s AS held,
                     x.subscription_shares AS shares, (extract(epoch FROM x.opened_at) * 1000)::bigint AS opened_ms,
                     CASE WHEN x.origin = 'COPY' THEN nullif(x.subscription_id, '')
                          WHEN x.origin = 'MANUAL' THEN '' END AS opener
              FROM (SELECT * FROM positions x WHERE x.follower_wallet_id = w.id AND x.state = 'OPEN'
                    UNION ALL
                    SELECT * FROM positions x WHERE %(want_pnl)s AND x.follower_wallet_id = w.id AND x.state <> 'OPEN'
                    ) x OFFSET 0) q
    ) x
),
ex AS (
    SELECT r.leader_trade_id, r.payload, r.appended_cursor
    FROM unnest(string_to_array(%(lts)s, %(sep)s)) AS q(lt)
    CROSS JOIN LATERAL (SELECT * FROM routed_trades x WHERE x.leader_trade_id = q.lt OFFSET 0) r
),
np AS MATERIALIZED (
    SELECT p.follower_wallet_id AS w, p.asset_id AS a, o.*
    FROM w CROSS JOIN k CROSS JOIN LATERAL (
        SELECT x.client_order_id, x.follower_wallet_id, x.asset_id, x.unclaimed_sell FROM order_pending x
        WHERE x.follower_wallet_id = w.id AND """ + UNCLAIMED + """ AND (NOT x.unclaimed_sell OR x.asset_id = ANY(k.sa))
        OFFSET 0) p
    CROSS JOIN LATERAL (
        SELECT CASE WHEN o.origin = 'COPY' THEN nullif(o.subscription_id, '') END AS sub,
               CASE WHEN p.unclaimed_sell THEN greatest(o.size - o.filled_size, 0) END AS n,
               CASE WHEN NOT p.unclaimed_sell THEN greatest(coalesce(o.amount_usd - o.filled_notional,
                                                                    (o.size - o.filled_size) * o.limit_price), 0) END
                   AS usd,
               CASE WHEN NOT p.unclaimed_sell THEN order_condition_field(o.order_proto, o.asset_id) END AS cond
        FROM orders o
        WHERE o.client_order_id = p.client_order_id AND o.state NOT IN """ + TERMINAL_STATES + """
          AND CASE WHEN p.unclaimed_sell THEN o.size IS NOT NULL AND o.state <> 'NEW' ELSE o.side = 'BUY' END
        OFFSET 0) o
),
lost AS MATERIALIZED (
    SELECT w.id AS w, o.*
    FROM w CROSS JOIN k CROSS JOIN LATERAL (
        SELECT l.asset_id AS a, CASE WHEN o.origin = 'COPY' THEN nullif(o.subscription_id, '') END AS sub,
               greatest(o.size - o.filled_size, 0) AS n
        FROM """ + lost_of("w.id", "= ANY(k.sa)") + """
        JOIN positions x ON x.follower_wallet_id = l.follower_wallet_id AND x.asset_id = l.asset_id
        WHERE """ + unseen("x") + """
        OFFSET 0) o
    WHERE cardinality(k.sa) > 0
)
SELECT (SELECT array_agg(leader_trade_id) FROM ex) AS ex_ids, (SELECT array_agg(payload) FROM ex) AS ex_payloads,
    (SELECT array_agg(appended_cursor) FROM ex) AS ex_cursors,
    (SELECT json_agg(json_build_array(l.leader_wallet, l.asset_id, l.size::text))::text
        FROM unnest(string_to_array(%(lp_leaders)s, %(sep)s), string_to_array(%(lp_assets)s, %(sep)s)) AS q(l, a)
        CROSS JOIN LATERAL (SELECT * FROM leader_positions x
                            WHERE x.leader_wallet = q.l AND x.asset_id = q.a OFFSET 0) l) AS leaders,
    (SELECT json_agg(json_build_array(w, total_cost::text, markets, mc, sz, realized::text, op))::text
        FROM agg WHERE total_cost IS NOT NULL OR realized IS NOT NULL) AS wallets,
    (SELECT json_agg(json_build_array(g.follower_wallet_id, g.balance_usd::text))::text
        FROM unnest(string_to_array(%(funding)s, %(sep)s)) AS f(id)
        CROSS JOIN LATERAL (SELECT * FROM funding x WHERE x.follower_wallet_id = f.id OFFSET 0) g) AS funding,
    (SELECT json_agg(json_build_array(q.id, f.sold::text))::text
        FROM unnest(string_to_array(%(sell_orders)s, %(sep)s)) AS q(id)
        CROSS JOIN LATERAL (SELECT sum(x.size) AS sold FROM fills x
                            WHERE x.order_id = q.id AND x.side = 'SELL' OFFSET 0) f
        WHERE f.sold IS NOT NULL) AS sold,
    (SELECT json_agg(json_build_array(g.w, g.a, g.sub, g.n::text))::text FROM (
        SELECT w, a, sub, sum(n) AS n FROM (SELECT w, a, sub, n FROM np WHERE n IS NOT NULL
                                            UNION ALL SELECT w, a, sub, n FROM lost) u
        GROUP BY 1, 2, 3 HAVING sum(n) > 0) g) AS unclaimed,
    (SELECT json_agg(json_build_array(w, a, usd::text, proto_text(cond)))::text FROM np WHERE usd > 0) AS buying
""")

# One statement, one implicit transaction, for a batch of decisions: a trade's skips and leader position change
# are written only when its trade row is new (the row gates everything); its orders are in its payload. The leader's
# position is floored at 0 after each trade; for several trades of one (leader, asset) that is
# max(before + S_n, S_n - min_k S_k) over the prefix sums S_k of the new trades' changes, in batch order.
# The payloads travel as one bytea cut server-side (psycopg's text dump of a bytea[] escapes every byte
# in Python: ~6 ms for a 1,000-follower RoutedTrade). A leader with no row yet gets one only by buying:
# sells of a position never seen bought leave it unknown. The skip counts take their subscription_stats rows in key
# order, as the executor's fill booking does (a GROUP BY's order deadlocked with it).
PERSIST = compact_sql("""
WITH inp AS (
    SELECT * FROM unnest(string_to_array(%(lts)s, %(sep)s), string_to_array(%(leaders)s, %(sep)s),
                         string_to_array(%(assets)s, %(sep)s), string_to_array(%(conds)s, %(sep)s),
                         string_to_array(%(sides)s, %(sep)s), string_to_array(%(n_orders)s, %(sep)s)::int[],
                         string_to_array(%(n_skips)s, %(sep)s)::int[],
                         string_to_array(%(p_starts)s, %(sep)s)::int[], string_to_array(%(p_lens)s, %(sep)s)::int[],
                         string_to_array(%(cursors)s, %(sep)s, 'N'),
                         string_to_array(%(deltas)s, %(sep)s, 'N')::numeric[])
        WITH ORDINALITY AS u(lt, leader, asset, cond, side, n_orders, n_skips, p_start, p_len, cursor, delta, seq)
), t AS (
    INSERT INTO routed_trades (leader_trade_id, leader_wallet, asset_id, side, orders, skips, payload,
                               appended_cursor, appended_at)
    SELECT lt, leader, asset, side, n_orders, n_skips, substring(%(payloads)s::bytea FROM p_start FOR p_len), cursor,
           CASE WHEN cursor IS NULL THEN NULL ELSE now() END
    FROM inp ORDER BY seq
    ON CONFLICT (leader_trade_id) DO NOTHING
    RETURNING leader_trade_id
), s AS (
    INSERT INTO copy_skips (subscription_id, leader_trade_id, follower_wallet_id, reason, detail)
    SELECT u.sub, u.lt, u.wallet, u.reason, u.detail
    FROM unnest(string_to_array(%(s_lts)s, %(sep)s), string_to_array(%(s_subs)s, %(sep)s),
                string_to_array(%(s_wallets)s, %(sep)s), string_to_array(%(s_reasons)s, %(sep)s),
                string_to_array(%(s_details)s, %(sep)s))
         AS u(lt, sub, wallet, reason, detail)
    JOIN t ON t.leader_trade_id = u.lt
    ON CONFLICT (leader_trade_id, subscription_id) DO NOTHING
    RETURNING subscription_id
), st AS (
    INSERT INTO subscription_stats (subscription_id, skipped, updated_at)
    SELECT subscription_id, count(*), now() FROM s GROUP BY subscription_id ORDER BY subscription_id
    ON CONFLICT (subscription_id) DO UPDATE
        SET skipped = subscription_stats.skipped + EXCLUDED.skipped, updated_at = now()
), lpd AS (
    SELECT i.leader, i.asset, i.lt, i.seq, i.delta,
           sum(i.delta) OVER (PARTITION BY i.leader, i.asset ORDER BY i.seq) AS sk
    FROM inp i JOIN t ON t.leader_trade_id = i.lt
    WHERE i.delta IS NOT NULL
), lpa AS (
    SELECT leader, asset, sum(delta) AS s, sum(delta) - min(sk) AS m, (array_agg(lt ORDER BY seq DESC))[1] AS last,
           bool_or(delta > 0) AS bought
    FROM lpd GROUP BY leader, asset
), lp AS (
    INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)
    SELECT leader, asset, greatest(m, s), last FROM lpa a
    WHERE a.bought
       OR EXISTS (SELECT 1 FROM leader_positions x WHERE x.leader_wallet = a.leader AND x.asset_id = a.asset)
    ON CONFLICT (leader_wallet, asset_id) DO UPDATE
        SET size = (SELECT greatest(a.m, leader_positions.size + a.s) FROM lpa a
                    WHERE a.leader = EXCLUDED.leader_wallet AND a.asset = EXCLUDED.asset_id),
            last_trade_id = EXCLUDED.last_trade_id, updated_at = now()
)
SELECT (SELECT array_agg(leader_trade_id) FROM t) AS inserted
""")
MARK_APPENDED = """
UPDATE routed_trades r SET appended_cursor = u.cursor, appended_at = now()
FROM unnest(%s::text[], %s::text[]) AS u(lt, cursor)
WHERE r.leader_trade_id = u.lt AND r.appended_cursor IS NULL
"""
UNAPPENDED = """
SELECT leader_trade_id, payload FROM routed_trades
WHERE appended_cursor IS NULL AND routed_at < now() - make_interval(secs => %s)
ORDER BY routed_at LIMIT %s
"""


# Arrays travel as one string split server-side (string_to_array): psycopg's per-element array
# dumping costs ~1 ms per thousand elements, the split a few microseconds.
SEP = "\x1f"


def join_text(values: Sequence[str]) -> str:
    """Text values as one separated string (an empty value as a space, which the SQL trims)."""
    return SEP.join(v.replace(SEP, " ") or " " for v in values)


def join_numbers(values: Sequence[Decimal | None]) -> str:
    """Decimals as one separated string (``N`` for none)."""
    return SEP.join("N" if v is None else str(v) for v in values)


def part_starts(lengths: Sequence[int]) -> list[int]:
    """1-based offsets of consecutive parts of the given lengths (SQL ``substring`` positions)."""
    out, at = [], 1
    for n in lengths:
        out.append(at)
        at += n
    return out


def utc_day(ms: int) -> date:
    """The UTC date of ``ms`` (epoch milliseconds)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# The parameter types psycopg gives these values (a str as unknown, typed by its use in the statement), so a
# statement prepared here is planned as psycopg prepared it.
_UNKNOWN, _BOOL, _BYTEA, _DATE, _NUMERIC = 0, 16, 17, 1082, 1700


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement of ``%(name)s`` placeholders as a bare prepared statement: its name, text with ``$n`` in their
    place (a name used twice is one parameter) and the names in ``$n`` order."""

    name: bytes
    sql: bytes
    names: tuple[str, ...]

    @classmethod
    def of(cls, name: str, sql: str) -> Prepared:
        """``sql`` (no ``%`` but its placeholders) prepared under ``name``."""
        names = tuple(dict.fromkeys(_PLACEHOLDER.findall(sql)))
        text = _PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", sql)
        if "%" in text:
            raise ValueError(f"{name}: a % that is not a named placeholder")
        return cls(name.encode(), text.encode(), names)

    def encode(self, params: Mapping[str, Any]) -> tuple[list[bytes], list[int], list[int]]:
        """The values of ``params`` in ``$n`` order: each one's bytes (a bytea in binary format, the others as
        text), type OIDs and formats."""
        values: list[bytes] = []
        types: list[int] = []
        formats: list[int] = []
        for n in self.names:
            v = params[n]
            if isinstance(v, str):
                values.append(v.encode())
                types.append(_UNKNOWN)
            elif isinstance(v, bool):
                values.append(b"t" if v else b"f")
                types.append(_BOOL)
            elif isinstance(v, bytes):
                values.append(v)
                types.append(_BYTEA)
            elif isinstance(v, Decimal):
                values.append(str(v).encode())
                types.append(_NUMERIC)
            elif isinstance(v, date) and not isinstance(v, datetime):
                values.append(v.isoformat().encode())
                types.append(_DATE)
            else:
                raise TypeError(f"parameter {n}: {type(v).__name__} is not supported")
            formats.append(1 if type(v) is bytes else 0)
        return values, types, formats


LOAD_PREPARED = Prepared.of("tt_router_load", LOAD)
PERSIST_PREPARED = Prepared.of("tt_router_persist", PERSIST)
