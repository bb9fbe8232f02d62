"""One execution mode per follower wallet at a time.

Positions are kept per (follower wallet, asset), whatever the venue that filled them. Shares bought in
PAPER and in LIVE on one wallet would land in one position: LIVE SELLs would be sized on paper shares,
and paper exposure would count against LIVE risk caps. So a subscription may take a mode (create, or a
PATCH of ``mode``) only while nothing of the wallet is in the other one:

- no other subscription of the wallet that is not STOPPED has the other mode;
- no open position of the wallet is booked in the other venue (reconciliation's EXTERNAL ones are the venue's
  shares), nor holds shares filled there since it opened;
- no order of the wallet in the other venue is still in flight.

Writers take the wallet's advisory lock (:data:`LOCK`) in their transaction first, so two concurrent
requests cannot both pass the check with different modes. The executor takes it too (shared) as it inserts an
order's intent, and refuses an order whose mode is no longer the wallet's (``MODE_CHANGED``: routed before the
change, or by a router that had not seen it yet; migration 0770): so a change either waits for that insert and
then sees the order in flight, or commits first and the executor sees the new mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.control.db import Conn
from services.control.errors import FailedPrecondition

# Transaction-scoped, on the wallet's bucket of 64 (migration 0770's mode_lock_bucket: the executor's intent inserts
# take the buckets of their wallets shared, a fan-out at most 64 locks); a two-key lock, distinct from the position
# locks ("wallet/asset") of the executor and guard.
LOCK = "SELECT pg_advisory_xact_lock(7011, mode_lock_bucket(%(follower_wallet_id)s))"

_VENUE = "CASE %(mode)s WHEN 'PAPER' THEN 'PAPER' ELSE 'INSIDERS' END"
_TERMINAL = "('FILLED', 'CANCELLED', 'REJECTED', 'LOST', 'FAILED')"

# At most one row (kind, ref) naming what is in the other mode. Parameters: follower_wallet_id, mode
# ('LIVE' / 'PAPER'), id (the subscription taking the mode; '' for a create).
CONFLICT = f"""
SELECT u.kind, u.ref FROM (
  SELECT 'SUBSCRIPTION' AS kind, o.id AS ref FROM subscriptions o
   WHERE o.follower_wallet_id = %(follower_wallet_id)s AND o.state <> 'STOPPED' AND o.mode <> %(mode)s
     AND o.id <> %(id)s
  UNION ALL
  SELECT 'POSITION', p.asset_id FROM positions p
   WHERE p.follower_wallet_id = %(follower_wallet_id)s AND p.size > 0
     AND (p.venue <> {_VENUE}
          OR EXISTS (SELECT 1 FROM subscriptions o JOIN fills f ON f.subscription_id = o.id
                      WHERE o.follower_wallet_id = p.follower_wallet_id AND f.asset_id = p.asset_id
                        AND f.venue <> {_VENUE} AND f.created_at >= p.opened_at))
  UNION ALL
  SELECT 'ORDER', q.client_order_id FROM order_pending p JOIN orders q ON q.client_order_id = p.client_order_id
   WHERE p.follower_wallet_id = %(follower_wallet_id)s AND p.terminal_at IS NULL AND q.venue <> {_VENUE}
     AND q.state NOT IN {_TERMINAL}
) u LIMIT 1
"""

_OTHER = {"LIVE": "EXECUTION_MODE_PAPER", "PAPER": "EXECUTION_MODE_LIVE"}


@dataclass(frozen=True, slots=True)
class Conflict:
    """What keeps a wallet in the other mode: a SUBSCRIPTION, POSITION (asset id) or ORDER (client order id)."""

    kind: str
    ref: str


def params(follower_wallet_id: str, mode: str, subscription_id: str = "") -> dict[str, str]:
    """Parameters of :data:`LOCK` and :data:`CONFLICT` (``mode`` as stored: 'LIVE' / 'PAPER')."""
    return {"follower_wallet_id": follower_wallet_id, "mode": mode, "id": subscription_id}


async def check(conn: Conn, follower_wallet_id: str, mode: str, subscription_id: str = "") -> None:
    """In the caller's transaction: take the wallet's lock, then raise :func:`refused` if ``mode`` conflicts."""
    p = params(follower_wallet_id, mode, subscription_id)
    await conn.execute(LOCK, p)
    row = await (await conn.execute(CONFLICT, p)).fetchone()
    if row is not None:
        raise refused(follower_wallet_id, mode, Conflict(str(row["kind"]), str(row["ref"])))


def refused(follower_wallet_id: str, mode: str, conflict: Conflict) -> FailedPrecondition:
    """The error (400) naming the ``mode`` field and what holds the wallet in the other mode."""
    other = _OTHER.get(mode, "the other mode")
    what = {
        "SUBSCRIPTION": f"has subscription {conflict.ref} in {other}",
        "POSITION": f"holds a position in asset {conflict.ref} in {other}; close it first",
        "ORDER": f"has order {conflict.ref} in {other} still in flight; retry once it has settled",
    }.get(conflict.kind, f"is in {other}")
    return FailedPrecondition(
        f"mode: followerWalletId {follower_wallet_id} {what} (a follower wallet copies in one execution "
        "mode at a time: positions are kept per wallet and asset)")
