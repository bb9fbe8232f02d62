"""The trigger store's statements (``adapters.trigger_store``): a fire's locks, reads and record, settling an
order event, holding triggers on a stale book."""

from common.lost_sells import WINDOW_S, lost_of, unseen

# The SELLs sent under the trigger's own client order ids (a parameter: services.guard.domain.lost_refires) that ended
# LOST with no fill known, however long ago (their ids stay taken); ``selling``: still counted as being sold (as
# in_flight counts them, common.lost_sells: only within its window); ``sold_since``: the venue's count of the position
# corrected down since it ended.
LOST = (
    "SELECT array_agg(o.client_order_id) AS ids,"
    " array_agg(coalesce(l.terminal_at > now() - make_interval(secs => " + str(WINDOW_S) + ")"
    "  AND p.state = 'OPEN' AND p.id IS NOT NULL AND (" + unseen("p") + "), false)) AS selling,"
    " array_agg(coalesce((SELECT sum(f.size) FROM fills f WHERE f.order_id = 'reconcile_' || p.id AND f.side = 'SELL'"
    "  AND f.fill_time >= date_trunc('second', o.terminal_at) AND p.state = 'OPEN'), 0)) AS sold_since"
    " FROM orders o LEFT JOIN lost_sells l ON l.client_order_id = o.client_order_id"
    " WHERE o.client_order_id = ANY(%s) AND o.state = 'LOST' AND o.filled_size = 0"
    " AND o.follower_wallet_id = t.follower_wallet_id AND o.asset_id = t.asset_id")

# The position is the wallet's positions row in the asset whatever its origin (copied, manual, or external:
# created by reconciliation), while it is OPEN; its size is the venue's count once reconciled. A trigger
# without a subscription takes the wallet's user from its subscriptions and the mode from the position's venue.
# SELLs in flight (sent, not yet out of the position) are counted where they are:
# - every SELL of the wallet's token the executor took and has not ended (copies, manual SELLs, exits, a SELL
#   whose fire guard failed to record), less what it filled, as the executor counts them (order_sql.SELLABLE: a
#   NEW SELL is sized later, against these); the trigger's own is left out: firing it again sends that very
#   order again (same client order id);
# - a FIRED trigger's SELL the executor has no order of yet (on its way), less its fills;
# - a SELL ended LOST that may have sold, until the venue's count was read after it (common.lost_sells).
# Orders, their fills and positions are written in one transaction: this statement sees them at one moment.
FACTS = (
    "SELECT CASE WHEN p.state = 'OPEN' THEN p.size ELSE 0 END AS held, p.condition_id AS cond,"
    " p.state IN ('RESOLVED_WON', 'RESOLVED_LOST', 'REDEEMED') AS resolved,"
    " COALESCE(s.follower_user_id, (SELECT w.follower_user_id FROM subscriptions w"
    "  WHERE w.follower_wallet_id = t.follower_wallet_id ORDER BY w.update_time DESC LIMIT 1)) AS user_id,"
    " COALESCE(s.mode, p.venue) AS mode,"
    " (SELECT COALESCE(SUM(GREATEST(o.size - o.filled_size, 0)), 0)"
    "   FROM order_pending q JOIN orders o ON o.client_order_id = q.client_order_id"
    "   WHERE q.follower_wallet_id = t.follower_wallet_id AND q.asset_id = t.asset_id AND q.terminal_at IS NULL"
    "   AND o.side = 'SELL' AND o.size IS NOT NULL AND o.state NOT IN ('NEW', 'FILLED', 'CANCELLED', 'REJECTED',"
    "   'LOST', 'FAILED') AND o.trigger_id <> t.id)"
    " + (SELECT COALESCE(SUM(GREATEST(f.fire_size - COALESCE("
    "     (SELECT SUM(x.size) FROM fills x WHERE x.order_id = f.order_id AND x.side = 'SELL'), 0), 0)), 0)"
    "   FROM triggers f WHERE f.follower_wallet_id = t.follower_wallet_id AND f.asset_id = t.asset_id"
    "   AND f.state = 'FIRED' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_order_id = f.order_id))"
    " + (SELECT COALESCE(SUM(GREATEST(o.size - o.filled_size, 0)), 0)"
    "   FROM " + lost_of("t.follower_wallet_id", "= t.asset_id") + " WHERE " + unseen("p") + ")"
    " AS in_flight, x.ids AS lost_ids, x.selling AS lost_selling, x.sold_since AS lost_sold_since"
    " FROM triggers t"
    " LEFT JOIN positions p ON p.follower_wallet_id = t.follower_wallet_id AND p.asset_id = t.asset_id"
    " LEFT JOIN subscriptions s ON s.id = t.subscription_id"
    " CROSS JOIN LATERAL (" + LOST + ") x"
    " WHERE t.id = %s")


# A fire's statements, prepared at their first run on a connection (psycopg's default waits for the fifth); the
# reads before the SELL already as the pool opens the connection (:func:`warm_fire_reads`).
LOCK_POSITION = ("SELECT pg_advisory_xact_lock(hashtextextended(follower_wallet_id || '/' || asset_id, 0))"
                 " FROM triggers WHERE id = %s")
# The OCO group's lock, control's (services.control.trigger_repo.armed_elsewhere_in_group): a create joining the
# group commits before the rows are locked (and is cancelled with them) or waits for the fire's commit. Taken after
# the position's lock and before any row's: control takes it holding no trigger row.
LOCK_GROUP = ("SELECT pg_advisory_xact_lock(hashtextextended('trigger-oco/' || oco_group, 0))"
              " FROM triggers WHERE id = %s AND oco_group <> ''")
# The trigger, the siblings the engine passed, and every ARMED member of its OCO group on its position (the same
# wallet, follower wallet and asset: a same-named trigger on another position is no sibling), which the engine
# may not know yet.
LOCK_ROWS = ("SELECT * FROM triggers WHERE id = ANY(%s) OR (state = 'ARMED' AND (oco_group, asset_id,"
             " follower_wallet_id, wallet) = (SELECT oco_group, asset_id, follower_wallet_id, wallet FROM triggers"
             " WHERE id = %s AND oco_group <> '')) ORDER BY id FOR UPDATE")
# Several triggers locked in the database's order of their ids (its collation's: Python's sort of ids that differ in
# case, a manual trigger's upper-case ULID against an exit's lower-case hex, may not be it under en_US).
LOCK_IDS = "SELECT 1 FROM triggers WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
CANCEL_SIBLINGS = ("UPDATE triggers SET state = 'CANCELLED', state_reason = %s, update_time = %s,"
                   " version = version + 1 WHERE id = ANY(%s) AND state = 'ARMED' RETURNING *")
RECORD_FIRE = ("UPDATE triggers SET state = %(state)s, state_reason = %(reason)s,"
               " fire_count = fire_count + %(inc)s, order_id = %(order_id)s, fired_time = %(now)s,"
               " fire_price = %(price)s, fire_size = %(size)s, fire_held = %(held)s, fire_order = %(order)s,"
               " high_water_mark = GREATEST(high_water_mark, %(mark)s), update_time = %(now)s,"
               " version = version + 1 WHERE id = %(id)s")

FILLED_SO_FAR = ("UPDATE triggers SET filled_size = GREATEST(filled_size, %s), avg_fill_price = %s"
                 " WHERE id = %s AND order_id = %s AND state = 'FIRED'")
# An event about the order means the executor has it: submitted_at is set here too, so the batched
# "acknowledged" mark of a SELL settled at once need not be written.
SETTLE = ("UPDATE triggers SET state = %s, state_reason = %s, filled_size = GREATEST(filled_size, %s),"
          " avg_fill_price = %s, done_time = %s, update_time = %s, submitted_at = COALESCE(submitted_at, %s),"
          " version = version + 1 WHERE id = %s AND order_id = %s AND state = 'FIRED' RETURNING *")
# Writes of several triggers lock them in key order first, as a fire locks its trigger and its OCO siblings
# (LOCK_ROWS): a plan's own order (by asset and wallet, a bitmap, a join) is their order on disk, and a write taking
# a sibling before the fired trigger deadlocked with that fire (tests/guard/test_lock_order_triggers.py).
HOLD = ("WITH l AS MATERIALIZED (SELECT id FROM triggers WHERE id = ANY(%s) AND state = 'ARMED'"
        " AND state_reason <> 'BOOK_STALE' ORDER BY id FOR UPDATE)"
        " UPDATE triggers t SET state_reason = 'BOOK_STALE', update_time = %s, version = t.version + 1 FROM l"
        " WHERE t.id = l.id AND t.state = 'ARMED' AND t.state_reason <> 'BOOK_STALE' RETURNING t.*")
RELEASE = ("WITH l AS MATERIALIZED (SELECT id FROM triggers WHERE id = ANY(%s) AND state = 'ARMED'"
           " AND state_reason = 'BOOK_STALE' ORDER BY id FOR UPDATE)"
           " UPDATE triggers t SET state_reason = '', update_time = %s, version = t.version + 1 FROM l"
           " WHERE t.id = l.id AND t.state = 'ARMED' AND t.state_reason = 'BOOK_STALE' RETURNING t.*")
CANCEL = ("WITH l AS MATERIALIZED (SELECT id FROM triggers WHERE id = ANY(%s) AND state = 'ARMED'"
          " ORDER BY id FOR UPDATE)"
          " UPDATE triggers t SET state = 'CANCELLED', state_reason = %s, update_time = %s, version = t.version + 1"
          " FROM l WHERE t.id = l.id AND t.state = 'ARMED' RETURNING t.*")
# Only the rows whose mark rises are locked (and written).
MARKS = ("WITH v AS (SELECT * FROM unnest(%s::text[], %s::numeric[]) AS v(id, mark)),"
         " l AS MATERIALIZED (SELECT t.id, v.mark FROM triggers t JOIN v ON t.id = v.id WHERE t.state = 'ARMED'"
         " AND t.high_water_mark < v.mark AND t.activation_price <= v.mark ORDER BY t.id FOR UPDATE OF t)"
         " UPDATE triggers t SET high_water_mark = l.mark FROM l WHERE t.id = l.id AND t.state = 'ARMED'"
         " AND t.high_water_mark < l.mark AND t.activation_price <= l.mark")

SUBMITTED = ("WITH s AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS s(id, order_id)),"
             " l AS MATERIALIZED (SELECT t.id, t.order_id FROM triggers t JOIN s ON t.id = s.id"
             " AND t.order_id = s.order_id WHERE t.submitted_at IS NULL ORDER BY t.id FOR UPDATE OF t)"
             " UPDATE triggers t SET submitted_at = %s FROM l WHERE t.id = l.id AND t.order_id = l.order_id"
             " AND t.submitted_at IS NULL")

# The client order ids of the executor's orders among these (a SELL is counted from its order row on).
ORDERED = "SELECT client_order_id FROM orders WHERE client_order_id = ANY(%s)"
