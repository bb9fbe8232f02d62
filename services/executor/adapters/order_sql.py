"""The executor's SQL statements on its tables: order intents and state changes (with ``order_pending``), the event
outbox and history, copies declined as skips, and the reads of open orders (:mod:`.order_store` runs them)."""

from __future__ import annotations

from common.lost_sells import lost_of, unseen
from services.executor.domain.order_lifecycle import TERMINAL

TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in TERMINAL) + ")"

# The outbox's events older than the given age, oldest first (order_events_outbox_age: the young rows, the bulk of the
# outbox, are never visited), each looked up by its key: the cost follows what the read returns. Events of one
# order are written by transactions one after the other, so the age order keeps their emission order.
UNPUBLISHED_SQL = ("SELECT e.seq, o.event_id, e.payload FROM order_events_outbox o JOIN order_events e ON e.seq = o.seq"
                   " WHERE o.created_at <= now() - make_interval(secs => %s) ORDER BY o.created_at, o.seq LIMIT %s")
# The outbox rows of given events (held ones appended again after a Redis server change), in emission order.
OUTBOX_EVENTS = ("SELECT e.seq, o.event_id, e.payload FROM order_events_outbox o JOIN order_events e ON e.seq = o.seq"
                 " WHERE o.event_id = ANY(%s) ORDER BY o.seq")

# Ended orders whose reservation release is not recorded yet, oldest first (index order_pending_unreleased).
UNRELEASED = ("SELECT client_order_id FROM order_pending WHERE terminal_at IS NOT NULL"
              " AND terminal_at <= now() - make_interval(secs => %s) ORDER BY terminal_at LIMIT %s")

# The event that ends an order is named after its final state (order_events.EVENT_TYPES) and written in the
# transaction that sets orders.terminal_at: its created_at is that time. Migration 0710's index names this list.
TERMINAL_EVENTS_SQL = "(" + ", ".join(sorted(f"'ORDER_EVENT_TYPE_{s.value}'" for s in TERMINAL)) + ")"
# The last order end at or before %(before)s, and the orders that ended in the %(window)s seconds up to it whose
# release is recorded (no order_pending row: an open order has one, so does an ended one the sweep still releases);
# one probe and one range of order_events_ended (migration 0710). A row with a NULL order: none in the window; no
# row: no order ever ended (an order has one terminal event: a final state has no transition).
LAST_ENDED = f"""
WITH last AS (SELECT max(created_at) AS at FROM order_events
              WHERE type IN {TERMINAL_EVENTS_SQL} AND created_at <= %(before)s)
SELECT last.at, e.client_order_id FROM last
LEFT JOIN order_events e ON e.type IN {TERMINAL_EVENTS_SQL}
    AND e.created_at >= last.at - make_interval(secs => %(window)s) AND e.created_at <= last.at
    AND NOT EXISTS (SELECT 1 FROM order_pending p WHERE p.client_order_id = e.client_order_id)
WHERE last.at IS NOT NULL
"""

# The client order ids of the router's copies ("co_" + 32 hex digits: the router's store_sql.ROUTER_COPY_ID, a POSIX
# regular expression as PostgreSQL reads it). Each claimed its id in Redis when the router emitted it, and the router
# counts it there. The SELLs it cannot count there (they reserve nothing in Redis) are the others: exits (TRIGGER),
# manual SELLs (MANUAL) and copies of another id (the SELLs reconciliation sent again re-sized, "co_rs_...", a COPY
# given to SubmitOrder). Their order_pending rows are marked (unclaimed_sell, migration 0730, which marked those open
# then) so that the router's batch read finds them through a small index of their own, without fetching the order
# of every SELL in flight. An order's side, origin and id never change: the mark is written once, with the row.
ROUTER_COPY_ID = "^co_[0-9a-f]{32}$"
# Of an ``orders`` row (its columns named bare): whether it is such a SELL.
UNCLAIMED_SELL = f"(side = 'SELL' AND (origin <> 'COPY' OR client_order_id !~ '{ROUTER_COPY_ID}'))"

# Bulk statements take one JSON array parameter (orjson on our side, C on PostgreSQL's): for a
# 1,000-order fan-out this costs a third of the CPU of array parameters or executemany.
def _intent_rows(rows_from: str, where: str = "") -> str:
    """The INSERT of order rows read from the JSON array ``rows_from`` (only those matching ``where``)."""
    return f"""
INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id, follower_proxy,
                    asset_id, side, order_type, amount_usd, size, limit_price, attempts, reason, detail,
                    leader_trade_id, trigger_id, order_proto, terminal_at, arrival_ns)
SELECT r.coid, r.state, r.venue, r.origin, NULLIF(r.sub, ''), r.wallet, r.proxy, r.asset, r.side, r.otype,
       r.amount, r.size, r.lp, r.att, r.reason, r.detail, r.lt, r.trg, decode(r.proto, 'base64'),
       CASE WHEN r.state IN {TERMINAL_SQL} THEN now() END, r.arr
FROM json_to_recordset({rows_from}) AS r(coid text, state text, venue text, origin text, sub text, wallet text,
     proxy text, asset text, side text, otype text, amount numeric, size numeric, lp numeric, att int, reason text,
     detail text, lt text, trg text, proto text, arr bigint){where}
ON CONFLICT (client_order_id) DO NOTHING
RETURNING client_order_id, follower_wallet_id, asset_id, terminal_at, {UNCLAIMED_SELL} AS unclaimed_sell
"""


INTENT_ROWS = _intent_rows("%s::json")
# Every order inserted is pending (order_pending, migration 0560): open, or ended with its reservation's release
# still to record, marked when it is a SELL the router counts from here (unclaimed_sell, migration 0730).
_PENDING = """p AS (INSERT INTO order_pending
        (client_order_id, follower_wallet_id, asset_id, terminal_at, unclaimed_sell)
      SELECT client_order_id, follower_wallet_id, asset_id, terminal_at, unclaimed_sell FROM ins
      ON CONFLICT (client_order_id) DO NOTHING)"""
# The statement returns the client order ids inserted now.
INSERT_INTENTS = f"""
WITH ins AS ({INTENT_ROWS.strip()}),
{_PENDING}
SELECT client_order_id FROM ins
"""
_NOT_REFUSED = "\nWHERE NOT EXISTS (SELECT 1 FROM x WHERE x.coid = r.coid)"
# INSERT_INTENTS for orders about to be sent: those ``order_admission_refusals`` refuses (migration 0770: the
# wallet copies in the other execution mode now, or holds the token in the other venue) are not inserted but returned
# with their reason and detail; the ones inserted now with none. Its shared lock of the wallet's mode is held to the
# commit, so a mode change of the wallet either waits for this insert and sees its order, or was seen by it.
ADMIT_INTENTS = f"""
WITH j AS MATERIALIZED (SELECT %s::json AS v),
x AS MATERIALIZED (SELECT f.coid, f.reason, f.detail FROM j CROSS JOIN LATERAL order_admission_refusals(j.v) f),
ins AS ({_intent_rows("(SELECT v FROM j)", _NOT_REFUSED).strip()}),
{_PENDING}
SELECT client_order_id, NULL AS reason, NULL AS detail FROM ins
UNION ALL SELECT coid, reason, detail FROM x
"""

# post_uncertain (migration 0630) is never cleared: once a POST of the order had no definite answer it stays so.
ORDER_ROWS = """
UPDATE orders o SET state = r.state, venue_order_id = r.vid, venue_status = r.vst,
    limit_price = COALESCE(r.lp, o.limit_price), attempts = r.att, not_found = r.nf, maybe_unsent = r.mu,
    post_uncertain = o.post_uncertain OR r.pu,
    filled_size = r.fs, avg_price = r.ap, fee_shares = r.fee, filled_notional = r.fn, reason = r.reason,
    detail = r.detail, post_sent_ns = COALESCE(o.post_sent_ns, r.ps), updated_at = now(),
    terminal_at = CASE WHEN r.terminal THEN COALESCE(o.terminal_at, now()) END
FROM json_to_recordset(%s::json) AS r(coid text, state text, vid text, vst text, lp numeric, att int, nf int,
     mu boolean, pu boolean, fs numeric, ap numeric, fee numeric, fn numeric, reason text, detail text, ps bigint,
     terminal boolean)
WHERE o.client_order_id = r.coid
RETURNING o.client_order_id, o.terminal_at
"""
# An order that ended now awaits its reservation's release (a released one has no pending row: nothing to redo).
ENDED = """
UPDATE order_pending p SET terminal_at = u.terminal_at FROM u
WHERE p.client_order_id = u.client_order_id AND p.terminal_at IS NULL AND u.terminal_at IS NOT NULL
"""
UPDATE_ORDERS = f"WITH u AS ({ORDER_ROWS.strip()})\n{ENDED.strip()}"

# Events go into the history (order_events, never updated) and, the new ones, into the outbox of those
# not yet appended to the stream (order_events_outbox: a row deleted once its event is appended).
EVENT_ROWS = """
INSERT INTO order_events (event_id, client_order_id, type, payload)
SELECT e.doc->>'id', e.doc->>'coid', e.doc->>'type', decode(e.doc->>'p', 'base64')
FROM json_array_elements(%s::json) WITH ORDINALITY AS e(doc, n)
ORDER BY e.n
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, seq
"""
TO_OUTBOX = "INSERT INTO order_events_outbox (event_id, seq) SELECT event_id, seq FROM ev"
INSERT_EVENTS = f"WITH ev AS ({EVENT_ROWS.strip()})\n{TO_OUTBOX}"

# The fills of a journal batch, those inserted now returned (``fill_store`` books them).
INSERT_FILLS = """
INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, leader_trade_id, leader_tx_hash, asset_id,
                   condition_id, outcome, side, size, price, notional_usd, venue, fill_time, leader_trade_time,
                   copy_latency_ms, fee_shares)
SELECT r.id, NULLIF(r.sub, ''), r.wallet, r.coid, r.lt, r.tx, r.asset, r.cond, r.outcome, r.side, r.size, r.price,
       r.notional, r.venue, to_timestamp(r.fill_ms / 1000.0),
       CASE WHEN r.lt_ms > 0 THEN to_timestamp(r.lt_ms / 1000.0) END, r.latency, r.fee
FROM json_to_recordset(%s::json) AS r(id text, sub text, wallet text, coid text, lt text, tx text, asset text,
     cond text, outcome text, side text, size numeric, price numeric, notional numeric, venue text, fill_ms bigint,
     lt_ms bigint, latency numeric, fee numeric)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

# The common journal write in one statement: order updates, their events and their fills (the fills
# inserted now are returned; positions follow in the same transaction). Without fills it is the whole
# write, atomic on its own, so it needs no BEGIN / COMMIT.
APPLY_CHANGES = f"""
WITH u AS ({ORDER_ROWS.strip()}),
ended AS ({ENDED.strip()}),
ev AS ({EVENT_ROWS.strip()}),
evo AS ({TO_OUTBOX})
{INSERT_FILLS.strip()}
"""

# Copies declined as skips (:mod:`services.executor.domain.copy_skips`) are counted with the router's: a copy_skips
# row each (``k``: one per leader trade and subscription, so a replay counts nothing) and the subscription's
# ``skipped``, in the upsert of the batch's fill stats (``fill_store``: the positions first, then every stats row
# in key order, in one statement, as every writer of several takes them). Its parameters: the skips, the stats.
SKIPS = """k AS (
    INSERT INTO copy_skips (subscription_id, leader_trade_id, follower_wallet_id, reason, detail)
    SELECT r.sub, r.lt, r.wallet, r.reason, r.detail
    FROM json_to_recordset(%s::json) AS r(sub text, lt text, wallet text, reason text, detail text)
    ON CONFLICT (leader_trade_id, subscription_id) DO NOTHING
    RETURNING subscription_id
)"""
UPSERT_COUNTS = """
INSERT INTO subscription_stats (subscription_id, copied, skipped, exposure_usd, realized_pnl_usd, updated_at,
                                fills_version)
SELECT d.sub, sum(d.copied), sum(d.skipped), sum(d.exposure), sum(d.pnl), now(), max(d.v)
FROM (SELECT r.sub, r.copied, 0 AS skipped, r.exposure, r.pnl, 1 AS v
      FROM json_to_recordset(%s::json) AS r(sub text, copied bigint, exposure numeric, pnl numeric)
      UNION ALL SELECT k.subscription_id, 0, 1, 0, 0, 0 FROM k) d
GROUP BY d.sub ORDER BY d.sub
ON CONFLICT (subscription_id) DO UPDATE SET copied = subscription_stats.copied + EXCLUDED.copied,
    skipped = subscription_stats.skipped + EXCLUDED.skipped,
    exposure_usd = GREATEST(0, subscription_stats.exposure_usd + EXCLUDED.exposure_usd),
    realized_pnl_usd = subscription_stats.realized_pnl_usd + EXCLUDED.realized_pnl_usd, updated_at = now(),
    fills_version = subscription_stats.fills_version + EXCLUDED.fills_version
"""
# The same alone: skips without fills booked (or stats no positions statement carried).
RECORD_COUNTS = f"WITH {SKIPS}\n{UPSERT_COUNTS.strip()}\n"


# Appended events leave the outbox (by its key; an event the sweep appended first is simply gone), and orders
# whose reservation is released stop being pending.
MARK_DONE = """
WITH p AS (DELETE FROM order_events_outbox WHERE event_id = ANY(%s::text[]))
DELETE FROM order_pending WHERE client_order_id = ANY(%s::text[]) AND terminal_at IS NOT NULL
"""

# Every order not yet terminal, in the order they arrived (the state is checked too: it is the lifecycle's truth);
# OPEN_AMONG: those among the given client order ids (orders given up on, taken up again: given_up.py).
_OPEN = f"""
SELECT o.* FROM order_pending p JOIN orders o ON o.client_order_id = p.client_order_id
WHERE p.terminal_at IS NULL AND o.state NOT IN {TERMINAL_SQL}{{among}}
ORDER BY o.arrival_ns NULLS FIRST, o.created_at
"""
OPEN_ORDERS = _OPEN.format(among="")
OPEN_AMONG = _OPEN.format(among=" AND p.client_order_id = ANY(%s::text[])")


# The SELLs under way, and those ended LOST that may have sold (common.lost_sells).
_SELLING = f"""
FROM (SELECT o.size, o.filled_size, o.origin, o.subscription_id
      FROM order_pending p JOIN orders o ON o.client_order_id = p.client_order_id
      WHERE p.follower_wallet_id = %(w)s AND p.asset_id = %(a)s AND p.terminal_at IS NULL
        AND o.side = 'SELL' AND o.size IS NOT NULL AND o.state NOT IN {TERMINAL_SQL} AND o.state <> 'NEW'
      UNION ALL
      SELECT o.size, o.filled_size, o.origin, o.subscription_id
      FROM {lost_of("%(w)s", "= %(a)s")}
      JOIN positions x ON x.follower_wallet_id = l.follower_wallet_id AND x.asset_id = l.asset_id
      WHERE {unseen("x")}) o"""

SELLABLE = f"""
SELECT coalesce((SELECT size FROM positions WHERE follower_wallet_id = %(w)s AND asset_id = %(a)s), 0)
     - coalesce((SELECT sum(greatest(o.size - o.filled_size, 0)) {_SELLING}), 0) AS sellable
"""
# A copy's: the position with its split (NULL: none kept), what the SELLs under way may still sell, and of that what
# each other subscription's copies may, as {subscription: "shares"} (one statement, as SELLABLE). A SELL takes its
# own subscription's shares first and the rest from every other part: only copies (origin COPY) of a subscription
# are set aside from the part sized on, each up to its own part (common.parts.others_own); exits (TRIGGER, of a
# trigger's subscription) and manual SELLs are the wallet's, held back from every part.
SELLABLE_PART = f"""
SELECT x.size, x.cost_usd, x.subscription_shares::text AS shares, x.origin, s.selling, s.copies::text AS copies
FROM (SELECT coalesce(sum(g.n), 0) AS selling,
             json_object_agg(g.sub, g.n::text) FILTER (WHERE g.sub IS NOT NULL AND g.sub <> %(s)s) AS copies
      FROM (SELECT CASE WHEN o.origin = 'COPY' THEN o.subscription_id END AS sub,
                   sum(greatest(o.size - o.filled_size, 0)) AS n
            {_SELLING.strip()}
            GROUP BY 1) g) s
LEFT JOIN positions x ON x.follower_wallet_id = %(w)s AND x.asset_id = %(a)s
"""
