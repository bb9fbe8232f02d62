"""The executor's alerts: an order LOST, a redemption FAILED or overdue (retried on), an order resting on a
resolved market whose cancel the venue refused, a venue answer reporting a fill its order cannot have made or an
order answered only with status words the contract does not list, a position settled without the venue's count (the
breaker's are raised by its gate, a reconciliation's failure by the reconciler)."""

from __future__ import annotations

from common.alerts import AlertKind, Severity, raise_alert
from common.decimals import fmt
from services.executor.adapters.order_store import Change
from services.executor.adapters.redemption_store import RedemptionRow
from services.executor.adapters.settlement_store import RestingOrder
from services.executor.domain import venue_orders as v
from services.executor.domain.redemption import Redemption
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import Ticket


def order_lost(c: Change) -> None:
    """ORDER_LOST (key ``order_lost:<venue>``): the venue never confirmed the order and it is no longer looked for."""
    t, o = c.ticket, c.ticket.order
    raise_alert(AlertKind.ORDER_LOST, f"order_lost:{t.venue}",
                f"order {t.client_order_id} LOST at {t.venue} ({c.life.reason or 'no reason'}): "
                f"{t.side} of {o.follower_wallet_id or 'a follower'}; check the venue by hand",
                dedupe_id=f"order_lost:{t.client_order_id}", severity=Severity.CRITICAL,
                client_order_id=t.client_order_id, venue=t.venue, origin=t.origin, side=t.side,
                subscription_id=o.subscription_id, follower_wallet_id=o.follower_wallet_id,
                asset_id=o.asset_id, leader_trade_id=o.leader_trade_id, reason=c.life.reason,
                detail=c.life.detail[:300])


def redemption_failed(row: RedemptionRow, r: Redemption) -> None:
    """REDEMPTION_FAILED (key ``redemption_failed:<wallet id>``): a winning position's payout was refused for good."""
    raise_alert(AlertKind.REDEMPTION_FAILED, f"redemption_failed:{row.follower_wallet_id}",
                f"redemption of {fmt(row.shares)} winning shares of wallet {row.follower_wallet_id} FAILED "
                f"({r.reason}): the payout is not in the wallet", dedupe_id=f"redemption_failed:{r.key}",
                severity=Severity.CRITICAL, redemption_key=r.key, wallet_id=row.follower_wallet_id,
                condition_id=row.condition_id, attempts=r.attempts, reason=r.reason, detail=r.detail[:300])


def redemption_overdue(row: RedemptionRow, r: Redemption, call: str, every_s: float) -> None:
    """REDEMPTION_OVERDUE (key ``redemption_overdue:<wallet id>``), raised once per run of failures: a redemption's
    calls kept failing (the venue down, or answering what cannot be read) past their bound, and it is still retried,
    every ``every_s``: ``call`` is the one failing, ``redeem`` (the POST: the payout is not in the wallet yet) or
    ``status`` (the venue took it, its end is not known yet); or, ``status`` with no failure, once per submitted
    redemption the venue still answers not final past the bound (the winnings may never arrive)."""
    taken = f"the venue took it (redeemId {r.redeem_id[:80]})"
    if call == "status" and not r.failures:  # its wait: the venue answers, never a final status
        what = (f"{taken} but still answers it is not final: the payout may never arrive; still asked about every "
                f"{every_s:g} s; check the redemption at the venue (txHash {r.tx_hash[:80] or 'none'})")
    else:
        what = (f"{taken} but its status queries keep failing: its end is not known" if call == "status"
                else "its POST keeps failing: the payout is not in the wallet")
        what += (f"; still retried every {every_s:g} s under its Idempotency-Key (it redeems once the venue "
                 f"answers); check the venue's health")
    raise_alert(AlertKind.REDEMPTION_OVERDUE, f"redemption_overdue:{row.follower_wallet_id}",
                f"redemption of {fmt(row.shares)} winning shares of wallet {row.follower_wallet_id} is overdue: "
                f"{what} and the executor's log ({r.detail[:200]})",
                dedupe_id=f"redemption_overdue:{r.key}:{r.failing_since_ms}", severity=Severity.CRITICAL,
                redemption_key=r.key, wallet_id=row.follower_wallet_id, condition_id=row.condition_id,
                attempts=r.attempts, failures=r.failures, call=call, redeem_id=r.redeem_id, reason=r.reason,
                detail=r.detail[:300])


def order_cancel_refused(o: RestingOrder) -> None:
    """ORDER_CANCEL_REFUSED (key ``order_cancel_refused:<venue>``): an order resting on a resolved market still rests
    after the venue refused to cancel it, holding its position back from settlement until someone acts."""
    raise_alert(AlertKind.ORDER_CANCEL_REFUSED, f"order_cancel_refused:{o.venue}",
                f"order {o.client_order_id} still rests at {o.venue} on resolved market {o.condition_id[:12]}.. "
                f"after the venue refused to cancel it: the position of wallet {o.follower_wallet_id} is not settled "
                f"until the order is cancelled by hand", dedupe_id=f"order_cancel_refused:{o.client_order_id}",
                severity=Severity.WARNING, client_order_id=o.client_order_id, venue=o.venue,
                venue_order_id=o.venue_order_id, follower_wallet_id=o.follower_wallet_id, asset_id=o.asset_id,
                condition_id=o.condition_id)


def venue_answer_implausible(t: Ticket, answer: v.VenueOrder, call: str, why: str) -> None:
    """VENUE_ANSWER_IMPLAUSIBLE (key ``venue_answer_implausible:<venue>``): a venue answer reported a fill the order
    cannot have made; it is not booked, and the order waits UNKNOWN (asked again, holding its reservation) until the
    venue answers plausibly or an operator ends it (:mod:`services.executor.operator_end`)."""
    o = t.order
    raise_alert(AlertKind.VENUE_ANSWER_IMPLAUSIBLE, f"venue_answer_implausible:{t.venue}",
                f"order {t.client_order_id} at {t.venue}: the venue reports a fill it cannot have made ({why}); not "
                f"booked: the order waits UNKNOWN, asked again and holding its reservation, until the venue answers "
                f"plausibly or an operator ends it by hand (EndOrder, docs/operations.md); check it at the venue",
                dedupe_id=f"venue_answer_implausible:{t.client_order_id}",
                severity=Severity.CRITICAL, client_order_id=t.client_order_id, venue=t.venue,
                venue_order_id=answer.order_id, call=call, status=answer.status, side=t.side,
                subscription_id=o.subscription_id, follower_wallet_id=o.follower_wallet_id, asset_id=o.asset_id,
                detail=why[:300])


def venue_status_unlisted(t: Ticket, answer: v.VenueOrder, call: str, waited_s: int) -> None:
    """VENUE_ANSWER_IMPLAUSIBLE (key ``venue_answer_implausible:<venue>``, once per order): the venue has answered an
    order only with status words the contract does not list for ``waited_s``; nothing of it is read, and the order stays
    placed (asked again, holding its reservation) until the venue answers a listed word or an operator ends it by hand
    (:mod:`services.executor.operator_end`)."""
    o = t.order
    word = answer.status[:100]
    raise_alert(AlertKind.VENUE_ANSWER_IMPLAUSIBLE, f"venue_answer_implausible:{t.venue}",
                f"order {t.client_order_id} at {t.venue}: the venue has answered only the status {word!r}, which the "
                f"contract does not list, for {waited_s} s (filledSize {fmt(answer.filled_size)}); nothing of it is "
                f"booked: the order stays placed, asked again and holding its reservation, until the venue answers a "
                f"listed status or an operator ends it by hand (EndOrder, docs/operations.md); check it at the venue",
                dedupe_id=f"venue_status_unlisted:{t.client_order_id}", severity=Severity.CRITICAL,
                client_order_id=t.client_order_id, venue=t.venue, venue_order_id=answer.order_id, call=call,
                status=word, filled_size=fmt(answer.filled_size), waited_s=waited_s, side=t.side,
                subscription_id=o.subscription_id, follower_wallet_id=o.follower_wallet_id, asset_id=o.asset_id)


def settled_without_count(resolution: Resolution, wallet: str, asset: str, position_id: str) -> None:
    """SETTLED_WITHOUT_COUNT (key ``settled_without_count:<wallet>``, once per position): a position settled on its
    booked shares while a SELL of it that ended LOST may have sold, the venue's count never read after it."""
    raise_alert(AlertKind.SETTLED_WITHOUT_COUNT, f"settled_without_count:{wallet}",
                f"position {position_id} of wallet {wallet} settled on market {resolution.condition_id[:12]}.. from "
                f"its booked shares while a SELL of it that ended LOST may have sold (the venue's count was never read "
                f"after it): its payout, PnL and redemption may count shares sold; check the position at the venue",
                dedupe_id=f"settled_without_count:{position_id}", severity=Severity.CRITICAL,
                position_id=position_id, follower_wallet_id=wallet, asset_id=asset,
                condition_id=resolution.condition_id, winning_asset_id=resolution.winning_asset_id)
