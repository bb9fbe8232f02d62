"""Internal use cases (gRPC only, never through Envoy): funded balances and guard's perf actions.

- RecordFunding keeps the reading with the latest ``asOf``: an older or equally old reading is ignored
  (``applied`` false). A reading more than 5 minutes in the future is rejected.
- ApplyPerfAction is idempotent by ``decisionId``: a replay changes nothing and returns ``applied`` false;
  the same id for another subscription or action is FAILED_PRECONDITION. PAUSE pauses an ACTIVE or PAUSED
  subscription: its reason becomes ``pausedReason`` (default PERF_LOSS_STOP), taking over a user's pause, and it
  raises a SUBSCRIPTION_PAUSED alert (key ``loss_stop:<subscription id>``). Guard takes a resume after a loss-stop
  as the user accepting the loss; that resume is an informed one only if the pause shows the loss-stop. SCALE sets
  ``perf.appliedMultiplier`` to ``multiplier`` (absolute, not compounded, in (0, 10]).
  A decision not applied before that names the rules it was made under (``decidedUnder``: mode and perf) is
  refused, FAILED_PRECONDITION with a message starting ``decidedUnder:``, when they are no longer the
  subscription's: made under rules the user changed meanwhile, it changes nothing (guard records the refusal
  and decides again under the current rules).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import metrics

from common.alerts import AlertKind, raise_alert
from common.decimals import fmt
from services.control import audit, internal_repo, sub_repo
from services.control import subscription_rules as rules
from services.control import validation as v
from services.control.audit import Caller
from services.control.codec import audit_subscription, short
from services.control.db import Conn, Database
from services.control.errors import FailedPrecondition, InvalidArgument, NotFound
from services.control.hotsync import IndexSync, resync_if_cancelled
from services.control.internal_repo import Funding, PerfRecord
from services.control.lifecycle import SubscriptionCommand, apply_subscription
from tradingtools.common.v1.common_pb2 import ExecutionMode
from tradingtools.control.v1 import control_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

log = logging.getLogger(__name__)
_PERF_ACTIONS = metrics.get_meter("tradingtools.control").create_counter(
    "control.perf_actions", description="Performance-rule actions applied (PAUSE: a loss-stop), by action")
MAX_FUTURE = timedelta(minutes=5)
DEFAULT_PERF_PAUSE_REASON = "PERF_LOSS_STOP"
_MULTIPLIER = v.Range(Decimal(0), False, rules.MAX_PROFIT_SCALE, True)


def _funding_json(f: Funding | None) -> dict[str, str] | None:
    if f is None:
        return None
    return {"followerWalletId": f.follower_wallet_id, "balanceUsd": fmt(f.balance_usd),
            "asOf": f.as_of.isoformat()}


PerfBasis = tuple[int, Decimal, Decimal, Decimal]  # (mode, lossStopUsd, profitScaleAtUsd, profitScaleMultiplier)


def _decided_under(req: cpb.ApplyPerfActionRequest) -> PerfBasis | None:
    """The rules the decision names as made under (None: unset, not checked)."""
    if not req.HasField("decided_under"):
        return None
    basis = req.decided_under
    v.enum("decidedUnder.mode", basis.mode, ExecutionMode.DESCRIPTOR)
    return rules.perf_rules(basis.mode, basis.perf, "decidedUnder.perf")


def _check_decided_under(then: PerfBasis | None, current: spb.Subscription, decision: str) -> None:
    """Refuse a decision made under rules that are no longer the subscription's."""
    if then is None:
        return
    now = rules.perf_rules(current.mode, current.perf)
    if then != now:
        log.info("perf decision refused: rules changed since", extra={"subscription_id": current.id,
                                                                      "decision_id": decision})
        raise FailedPrecondition(
            f"decidedUnder: the rules of subscription {current.id} changed since the decision (made under"
            f" {_rules_text(then)}, now {_rules_text(now)}); it was not applied")


def _rules_text(r: PerfBasis) -> str:
    return (f"mode {short(ExecutionMode, r[0])}, lossStopUsd {fmt(r[1])}, profitScaleAtUsd {fmt(r[2])},"
            f" profitScaleMultiplier {fmt(r[3])}")


def _ts(dt: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt)
    return out


class InternalUseCases:
    """Funding and perf actions."""

    def __init__(self, db: Database, sync: IndexSync, *, now: Callable[[], datetime]) -> None:
        self.db = db
        self.sync = sync
        self.now = now
        for name in ("PAUSE", "SCALE"):  # exported from the start: an alerting rule reads them
            _PERF_ACTIONS.add(0, {"action": name})

    async def record_funding(self, req: cpb.RecordFundingRequest, caller: Caller) -> cpb.RecordFundingResponse:
        """Record a balance reading unless a newer one is on record."""
        wallet = v.follower_id("followerWalletId", req.follower_wallet_id)
        balance = v.decimal("balanceUsd", req.balance_usd, v.USD)
        if not req.HasField("as_of"):
            raise InvalidArgument("asOf", "required")
        try:
            as_of = req.as_of.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument("asOf", "invalid timestamp") from None
        now = self.now()
        if as_of > now + MAX_FUTURE:
            raise InvalidArgument("asOf", f"is in the future ({as_of.isoformat()})")
        async with self.db.transaction() as conn:
            before = await internal_repo.get_funding(conn, wallet, for_update=True)
            applied = await internal_repo.upsert_funding(conn, Funding(wallet, balance, as_of), now)
            current = await internal_repo.get_funding(conn, wallet)
            assert current is not None
            if applied:
                await audit.write(conn, caller, entity_type="funding", entity_id=wallet,
                                  before=_funding_json(before), after=_funding_json(current), at=now)
        return cpb.RecordFundingResponse(follower_wallet_id=wallet, balance_usd=fmt(current.balance_usd),
                                         as_of=_ts(current.as_of), applied=applied)

    async def get_funding(self, follower_wallet_id: str) -> cpb.GetFundingResponse:
        """The balance on record."""
        wallet = v.identifier("followerWalletId", follower_wallet_id)
        async with self.db.read() as conn:
            current = await internal_repo.get_funding(conn, wallet)
        if current is None:
            raise NotFound(f"no funding recorded for followerWalletId {wallet}")
        return cpb.GetFundingResponse(follower_wallet_id=wallet, balance_usd=fmt(current.balance_usd),
                                      as_of=_ts(current.as_of))

    @resync_if_cancelled
    async def apply_perf_action(self, req: cpb.ApplyPerfActionRequest,
                                caller: Caller) -> cpb.ApplyPerfActionResponse:
        """Pause or scale a subscription once per decision."""
        sid = v.identifier("id", req.id)
        v.enum("action", req.action, cpb.PerfAction.DESCRIPTOR)
        action = short(cpb.PerfAction, req.action)
        decision = v.identifier("decisionId", req.decision_id)
        reason = v.text("reason", req.reason)
        multiplier: Decimal | None = None
        if req.action == cpb.PERF_ACTION_SCALE:
            multiplier = v.decimal("multiplier", req.multiplier, _MULTIPLIER)
        decided_under = _decided_under(req)
        await self.sync.ensure_redis()
        now = self.now()
        async with self.db.transaction() as conn:
            stored = await sub_repo.get(conn, sid, for_update=True)
            if stored is None:
                raise NotFound(f"subscription {sid} not found")
            current = stored.sub
            prior = await internal_repo.get_perf(conn, decision)
            if prior is not None and (prior.subscription_id, prior.action) != (sid, action):
                raise FailedPrecondition(
                    f"decisionId: {decision} was already used for {prior.action} of {prior.subscription_id}")
            if prior is None:
                _check_decided_under(decided_under, current, decision)
                changed, version = await self._apply_perf(conn, stored, req, caller, now, decision, reason, multiplier)
        if prior is not None:  # a replay, perhaps of a call cancelled after its commit: the index gets the row again
            await self.sync.subscription_changed(current, stored.version)
            return cpb.ApplyPerfActionResponse(subscription=current, applied=False)
        _PERF_ACTIONS.add(1, {"action": action})  # committed: counted and alerted before the index write, which may
        if req.action == cpb.PERF_ACTION_PAUSE:  # fail UNAVAILABLE (a retry is then a replay that alerts nothing)
            was = "" if current.state == spb.SUBSCRIPTION_STATE_ACTIVE else f" (paused before: {current.paused_reason})"
            raise_alert(AlertKind.SUBSCRIPTION_PAUSED, f"loss_stop:{sid}",
                        f"subscription {sid} paused by its performance rules: {changed.paused_reason}{was}",
                        dedupe_id=f"perf_pause:{decision}", subscription_id=sid,
                        follower_wallet_id=current.follower_wallet_id, leader=current.leader_proxy,
                        reason=changed.paused_reason)
        await self.sync.subscription_changed(changed, version)
        return cpb.ApplyPerfActionResponse(subscription=changed, applied=True)

    @staticmethod
    async def _apply_perf(conn: Conn, stored: sub_repo.Stored, req: cpb.ApplyPerfActionRequest, caller: Caller,
                          now: datetime, decision: str, reason: str,
                          multiplier: Decimal | None) -> tuple[spb.Subscription, int]:
        """Record the decision and change the subscription (in the caller's transaction); (the changed
        subscription, its row version)."""
        current, sid, action = stored.sub, stored.sub.id, short(cpb.PerfAction, req.action)
        changed = spb.Subscription()
        changed.CopyFrom(current)
        if req.action == cpb.PERF_ACTION_PAUSE:
            changed.state = apply_subscription(current.state, SubscriptionCommand.PAUSE, sid)  # type: ignore[assignment]
            changed.paused_reason = reason or DEFAULT_PERF_PAUSE_REASON  # also over a user's pause: see the module doc
        else:
            apply_subscription(current.state, SubscriptionCommand.UPDATE, sid)
            changed.perf.applied_multiplier = fmt(multiplier or Decimal(1))
        if not await internal_repo.insert_perf(conn, PerfRecord(decision, sid, action, multiplier), reason,
                                               caller.token_id, now):
            raise FailedPrecondition(f"decisionId: {decision} was just applied to another subscription")
        version = stored.version
        if changed != current:
            changed.update_time.FromDatetime(now)
            version = await sub_repo.update(conn, changed, stored.version)
        await audit.write(conn, caller, entity_type="subscription", entity_id=sid,
                          before=audit_subscription(current), after=audit_subscription(changed), at=now)
        return changed, version
