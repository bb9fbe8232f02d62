"""The copy-exit store's statements (``adapters.exit_store``): the single-statement fast paths and the position
lock."""

LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s || '/' || %s, 0))"
OPEN_GROUP = ("SELECT 1 FROM guard_position_exits WHERE follower_wallet_id = %(w)s AND asset_id = %(a)s"
              " AND state = 'OPEN'")
PEEK = ("SELECT (SELECT exits FROM subscriptions WHERE id = %(sub)s) AS exits,"
        " EXISTS (SELECT 1 FROM subscriptions WHERE id = %(sub)s) AS has_sub,"
        " (SELECT coalesce(jsonb_array_length(exits -> 'planned'), 0) FROM guard_position_exits"
        "  WHERE follower_wallet_id = %(w)s AND asset_id = %(a)s AND state = 'OPEN' LIMIT 1) AS open_planned")
# A later fill of a position whose open group has no exits: only the group's size basis changes.
# Only a group of the position's current life (the opening time it recorded is the position's): a group of a life
# that ended is left to the full path, which closes it and registers the new life's exits. Resized, it would be
# closed by the ended life's SELL read later, and the new life would have no exits at all.
_SAME_LIFE = ("(g.exits ->> 'opened_at' IS NULL OR {p}.opened_at IS NULL"
              " OR (g.exits ->> 'opened_at')::timestamptz = {p}.opened_at)")
RESIZE_EMPTY = (
    "UPDATE guard_position_exits g SET position_size = h.held, updated_at = %(now)s"
    " FROM (SELECT coalesce(p.size, %(filled)s) AS held, p.opened_at FROM (SELECT 1) one"
    "  LEFT JOIN positions p ON p.follower_wallet_id = %(w)s AND p.asset_id = %(a)s) AS h"
    " WHERE g.follower_wallet_id = %(w)s AND g.asset_id = %(a)s AND g.state = 'OPEN' AND h.held > 0"
    " AND coalesce(jsonb_array_length(g.exits -> 'planned'), 0) = 0 AND " + _SAME_LIFE.format(p="h") +
    " RETURNING g.oco_group"
)
# The position's opening time in a group's document, as the full path records it (what tells a later event
# that the position was closed and opened again since).
_OPENED_AT_P = ("CASE WHEN p.opened_at IS NULL THEN '{}'::jsonb"
                " ELSE jsonb_build_object('opened_at', p.opened_at) END")
# The empty group of a position whose subscription has no exits (same values as the full path writes).
REGISTER_EMPTY = (
    "INSERT INTO guard_position_exits (oco_group, follower_wallet_id, asset_id, wallet, subscription_id,"
    " opening_order_id, entry_price, position_size, exits, skipped, state, created_at, updated_at)"
    " SELECT %(g)s, %(w)s, %(a)s, lower(coalesce(p.wallet, %(wallet)s)), %(sub)s, %(coid)s,"
    " coalesce(nullif(p.avg_price, 0), %(avg)s), coalesce(p.size, %(filled)s), %(doc)s::jsonb || " + _OPENED_AT_P +
    ", '[]'::jsonb, 'OPEN',"
    " %(now)s, %(now)s"
    " FROM (SELECT 1) AS one LEFT JOIN positions p ON p.follower_wallet_id = %(w)s AND p.asset_id = %(a)s"
    f" WHERE coalesce(p.size, %(filled)s) > 0 AND NOT EXISTS ({OPEN_GROUP})"
    " ON CONFLICT (oco_group) DO NOTHING RETURNING oco_group"
)

# The same two cases for a batch of positions (one row each, ``k.i`` its index), in one statement:
# every position's open group without exits is resized, and the positions not resized are peeked at.
# The positions come as one JSON array: with typed arrays, PostgreSQL planned the statement again for
# each call (~0.5 ms of its CPU per fill batch) since it sized each call's arrays exactly.
# Each position's open group is looked up by the (wallet, asset) index (``OFFSET 0``: not flattened into a join)
# and updated through its key (``= ANY``), its new size taken from a map built once: no join for the planner to
# get wrong. Joined directly, the planner (guessing 100 rows for the JSON and, on statistics not yet analyzed, one
# open group) compared every row of the batch with every open group: 0.2 s for 1,000 fills over 1,000 groups,
# growing with both.
RESIZE_OR_PEEK_MANY = (
    "WITH k AS (SELECT * FROM json_to_recordset(%(rows)s::json)"
    " AS k(i int, w text, a text, filled numeric, sub text)),"
    " t AS MATERIALIZED (SELECT k.i, g.oco_group, coalesce(p.size, k.filled) AS held FROM k"
    "  LEFT JOIN positions p ON p.follower_wallet_id = k.w AND p.asset_id = k.a"
    "  CROSS JOIN LATERAL (SELECT x.oco_group, x.exits FROM guard_position_exits x"
    "   WHERE x.follower_wallet_id = k.w AND x.asset_id = k.a AND x.state = 'OPEN' OFFSET 0) g"
    "  WHERE coalesce(p.size, k.filled) > 0 AND coalesce(jsonb_array_length(g.exits -> 'planned'), 0) = 0"
    "  AND " + _SAME_LIFE.format(p="p") + "),"
    " m AS MATERIALIZED (SELECT jsonb_object_agg(oco_group, jsonb_build_array(i, held)) AS v FROM t),"
    " resized AS (UPDATE guard_position_exits g"
    "  SET position_size = ((SELECT v FROM m) -> g.oco_group ->> 1)::numeric, updated_at = %(now)s"
    "  WHERE g.oco_group = ANY(ARRAY(SELECT oco_group FROM t)) AND g.state = 'OPEN'"
    "  RETURNING ((SELECT v FROM m) -> g.oco_group ->> 0)::int AS i)"
    " SELECT k.i, r.i IS NOT NULL AS resized, s.exits, s.id IS NOT NULL AS has_sub,"
    " CASE WHEN r.i IS NULL THEN (SELECT coalesce(jsonb_array_length(g.exits -> 'planned'), 0)"
    "  FROM guard_position_exits g WHERE g.follower_wallet_id = k.w AND g.asset_id = k.a AND g.state = 'OPEN'"
    "  LIMIT 1) END AS open_planned"
    " FROM k LEFT JOIN resized r ON r.i = k.i LEFT JOIN subscriptions s ON s.id = k.sub AND r.i IS NULL"
)
# The life before a position's current one (opened at ``opened``): the last one archived in position_history, found
# through its wallet's index (every life of a position carries the wallet its row was made for).
_PREVIOUS_LIFE = ("SELECT h.opened_at, h.closed_at FROM position_history h WHERE h.wallet = {wallet}"
                  " AND h.follower_wallet_id = {w} AND h.asset_id = {a} AND h.opened_at < {opened}"
                  " ORDER BY h.opened_at DESC LIMIT 1")


def ended_life(t: str, *, w: str, a: str, opened: str, wallet: str, proven: bool) -> str:
    """The condition that trigger ``t`` of a position (``w``, ``a``: its SQL) was made for a life that ended, the
    position's current life opened at ``opened``.

    A trigger that recorded an earlier opening time (migration 0690, both on the database's clock) is that life's:
    no clock of another process decides it (control recorded a CLOSED row's opening time before it recorded only an
    OPEN position's, so a stop set between lives before then ends with the next partial SELL: cancelled, never sold
    on). One that recorded none was set while nothing was held: it recorded the close it saw (migration 0790), and
    is an ended life's unless that close is the one of the life before the current one (the last archived: its
    close copied from the row), also when it saw no close at all (never held: an earlier life's, the first). With
    no life archived it is not taken (the life open now may be the first).

    Triggers from before 0790 recorded neither: one is an ended life's when set before the previous life closed, by
    the clock of the process that set it. With no life archived, nothing tells it from one set before the position
    first opened (the current life's): ``proven`` (the condition must prove a reopening by itself) leaves it out,
    else it is taken when set before the current life opened (the caller knows otherwise that the position was
    reopened)."""
    prev_closed = f"(SELECT v.closed_at FROM ({_PREVIOUS_LIFE.format(wallet=wallet, w=w, a=a, opened=opened)}) v)"
    unknown = "NULL" if proven else opened
    return (f"({t}.position_opened_at < {opened}"
            f" OR {t}.position_opened_at IS NULL AND {t}.position_closed_seen <> {prev_closed}"
            f" OR {t}.position_opened_at IS NULL AND {t}.position_closed_seen IS NULL"
            f" AND {t}.create_time < coalesce({prev_closed}, {unknown}))")


# The SELL that left a position nothing (its row CLOSED, or gone) ends the triggers of the life it closed: every
# ARMED one on the position but the next life's, those that recorded no life and saw the row closed by the close it
# has now (migration 0790: every close writes a new closed_at, so an earlier one is an ended life's). A trigger from
# before 0790 (neither recorded) is told by when it was set against the close, as in :func:`ended_life`. A row that
# recorded no close (or none at all) ends them all.
_CLOSED_LIFE = ("t.asset_id = %(a)s AND t.follower_wallet_id = %(w)s AND t.state = 'ARMED'"
                " AND NOT (t.position_opened_at IS NULL AND coalesce(t.position_closed_seen = c.closed_at,"
                "  t.position_closed_seen IS NULL AND t.create_time >= coalesce(c.closed_at, 'infinity')))")
# The rows are locked in key order first, as a fire and a hold take them (tests/guard/test_lock_order_exits.py).
CANCEL_CLOSED_LIFE = (
    "WITH c AS (SELECT (SELECT p.closed_at FROM positions p WHERE p.follower_wallet_id = %(w)s"
    "  AND p.asset_id = %(a)s AND p.state <> 'OPEN') AS closed_at),"
    " l AS MATERIALIZED (SELECT t.id FROM triggers t, c WHERE " + _CLOSED_LIFE + " ORDER BY t.id FOR UPDATE OF t)"
    " UPDATE triggers t SET state = 'CANCELLED', state_reason = %(reason)s, update_time = %(now)s,"
    " version = t.version + 1 FROM c, l WHERE t.id = l.id AND " + _CLOSED_LIFE + " RETURNING t.*"
)

SELL_PEEK = ("SELECT p.size, p.opened_at, g.exits -> 'opened_at' AS group_opened_at, g.oco_group IS NOT NULL"
             " AS has_group, EXISTS (SELECT 1 FROM triggers WHERE asset_id = %(a)s AND follower_wallet_id = %(w)s"
             " AND state = 'ARMED') AS has_armed,"
             # a trigger made for a life of the position that ended (exit_group_writes.cancel_ended_lives)
             " EXISTS (SELECT 1 FROM triggers t WHERE t.asset_id = %(a)s AND t.follower_wallet_id = %(w)s"
             " AND t.state = 'ARMED' AND " + ended_life("t", w="%(w)s", a="%(a)s", opened="p.opened_at",
                                                         wallet="p.wallet", proven=True) + ") AS ended_life,"
             " coalesce(jsonb_array_length(g.exits -> 'planned'), 0) > 0 AND NOT EXISTS (SELECT 1 FROM triggers t"
             "  WHERE t.oco_group = g.oco_group AND t.state IN ('ARMED', 'FIRED'))"
             " AND EXISTS (SELECT 1 FROM triggers t WHERE t.oco_group = g.oco_group"
             "  AND t.state IN ('DONE', 'FAILED') AND t.sell_fraction >= 1) AS used_up,"  # as exit_group_writes.used_up
             # the open group's ARMED exits (triggers_oco_armed), for the caller to watch
             " ARRAY(SELECT t.id FROM triggers t WHERE t.oco_group = g.oco_group AND t.state = 'ARMED'"
             "  AND t.source = 'COPY' ORDER BY t.id) AS armed"
             " FROM (SELECT 1) one"
             " LEFT JOIN positions p ON p.follower_wallet_id = %(w)s AND p.asset_id = %(a)s"
             " LEFT JOIN guard_position_exits g ON g.follower_wallet_id = %(w)s AND g.asset_id = %(a)s"
             " AND g.state = 'OPEN'")
# ``first``: the opening fill's size (the condition), ``last``: the batch's last fill of the position (the
# size basis when ``positions`` has no row: what resizing after each later fill would leave).
REGISTER_EMPTY_MANY = (
    "INSERT INTO guard_position_exits (oco_group, follower_wallet_id, asset_id, wallet, subscription_id,"
    " opening_order_id, entry_price, position_size, exits, skipped, state, created_at, updated_at)"
    " SELECT k.g, k.w, k.a, lower(coalesce(p.wallet, k.wallet)), k.sub, k.coid,"
    " coalesce(nullif(p.avg_price, 0), k.avg), coalesce(p.size, k.last), k.doc || " + _OPENED_AT_P +
    ", '[]'::jsonb, 'OPEN', %s, %s"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::numeric[],"
    " %s::numeric[], %s::numeric[], %s::jsonb[]) AS k(g, w, a, wallet, sub, coid, avg, first, last, doc)"
    " LEFT JOIN positions p ON p.follower_wallet_id = k.w AND p.asset_id = k.a"
    " WHERE coalesce(p.size, k.first) > 0 AND NOT EXISTS (SELECT 1 FROM guard_position_exits o"
    "  WHERE o.follower_wallet_id = k.w AND o.asset_id = k.a AND o.state = 'OPEN')"
    " ON CONFLICT (oco_group) DO NOTHING RETURNING oco_group"
)
