"""Trigger use cases. Each change commits with its audit row, then is announced on ``tt:triggers:changed``
so guard reloads that trigger from PostgreSQL. A call that finds its change made already (a create's replay, a
PATCH that changes nothing, cancelling a CANCELLED trigger) announces the trigger again: it may be the retry of
a call cancelled after its commit, before its announcement (which the resync loop then sends as well).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from common.ids import new_id
from services.control import audit, idempotency, pagination, sub_repo, trigger_repo
from services.control import trigger_rules as rules
from services.control import validation as v
from services.control.audit import Caller
from services.control.codec import short, to_json, trigger_from_row
from services.control.db import Conn, Database
from services.control.errors import FailedPrecondition, InvalidArgument, NotFound
from services.control.hotsync import IndexSync
from services.control.lifecycle import TriggerCommand, apply_trigger
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

CANCELLED_BY_USER = "CANCELLED_BY_USER"


class TriggerUseCases:
    """Create, change, cancel and read triggers."""

    def __init__(self, db: Database, sync: IndexSync, *, now: Callable[[], datetime],
                 idempotency_ttl: timedelta, page_tokens: pagination.PageTokens) -> None:
        self.db = db
        self.tokens = page_tokens
        self.sync = sync
        self.now = now
        self.ttl = idempotency_ttl

    async def create(self, raw: tpb.Trigger, caller: Caller) -> tpb.Trigger:
        """A new ARMED trigger (or the first response of an idempotent replay)."""
        key = v.idempotency_key(caller.idempotency_key, raw.request_id if raw.HasField("request_id") else None)
        caller = replace(caller, idempotency_key=key)
        trigger = rules.new_trigger(raw)
        await self.sync.ensure_redis()
        now = self.now()
        async with self.sync.announcing("upsert") as announced, self.db.transaction() as conn:
            if key is not None:
                request = tpb.Trigger()
                request.CopyFrom(raw)
                request.ClearField("request_id")
                replay = await idempotency.claim(conn, caller, idempotency.request_hash(request), now, self.ttl)
                if replay is not None:
                    replayed = tpb.Trigger.FromString(replay)
                    announced.append(replayed.id)
                    return replayed
            await self._check_subscription(conn, trigger)
            await self._check_position(conn, trigger)
            if trigger.oco_group:
                refusal = rules.oco_refusal(trigger, await trigger_repo.armed_elsewhere_in_group(conn, trigger))
                if refusal is not None:
                    raise refusal
            trigger.id = new_id("trg", int(now.timestamp() * 1000))
            trigger.state = tpb.TRIGGER_STATE_ARMED
            trigger.create_time.FromDatetime(now)
            trigger.update_time.FromDatetime(now)
            await trigger_repo.insert(conn, trigger)
            announced.append(trigger.id)
            await audit.write(conn, caller, entity_type="trigger", entity_id=trigger.id, before=None,
                              after=to_json(trigger), at=now)
            if key is not None:
                await idempotency.store(conn, caller, trigger)
        return trigger

    async def update(self, trigger_id: str, patch: tpb.Trigger, caller: Caller) -> tpb.Trigger:
        """Change price, trail, activation, size or fraction of an ARMED trigger."""
        tid = v.path_id("trigger", trigger_id)
        await self.sync.ensure_redis()
        now = self.now()
        async with self.sync.announcing("upsert") as announced, self.db.transaction() as conn:
            current = await self._must_get(conn, tid, for_update=True)
            apply_trigger(current.state, TriggerCommand.UPDATE, tid)
            merged = rules.merge_trigger_patch(current, patch)
            if rules.values_equal(merged, current):
                announced.append(tid)
                return current
            if merged.sell_fraction != "0" and current.sell_fraction == "0":
                await self._check_position(conn, merged)
            merged.update_time.FromDatetime(now)
            announced.append(tid)
            await self._write(conn, caller, current, merged, now)
        return merged

    async def cancel(self, trigger_id: str, caller: Caller) -> None:
        """ARMED → CANCELLED (CANCELLED_BY_USER); cancelling a CANCELLED trigger changes nothing."""
        tid = v.path_id("trigger", trigger_id)
        await self.sync.ensure_redis()
        now = self.now()
        async with self.sync.announcing("remove") as announced, self.db.transaction() as conn:
            current = await self._must_get(conn, tid, for_update=True)
            state = apply_trigger(current.state, TriggerCommand.CANCEL, tid)
            announced.append(tid)
            if state == current.state:
                return
            changed = tpb.Trigger()
            changed.CopyFrom(current)
            changed.state = state  # type: ignore[assignment]
            changed.state_reason = CANCELLED_BY_USER
            changed.update_time.FromDatetime(now)
            await self._write(conn, caller, current, changed, now)

    async def get(self, trigger_id: str) -> tpb.Trigger:
        """One trigger."""
        tid = v.path_id("trigger", trigger_id)
        async with self.db.read() as conn:
            return await self._must_get(conn, tid)

    async def list_page(self, *, wallet: str, state: int, page_size: int,
                        page_token: str) -> pb.ListTriggersResponse:
        """One wallet's triggers, oldest first."""
        addr = v.address("wallet", wallet)
        v.enum("state", state, tpb.TriggerState.DESCRIPTOR, required=False)
        stored_state = short(tpb.TriggerState, state) if state else ""
        size = v.page_size(page_size)
        fp = pagination.fingerprint(addr, stored_state)
        after = self.tokens.decode(page_token, "triggers", fp)
        async with self.db.read() as conn:
            rows = await trigger_repo.list_page(conn, wallet=addr, state=stored_state, after=after,
                                                limit=size + 1)
        out = pb.ListTriggersResponse()
        for row in rows[:size]:
            trigger_from_row(row, out.triggers.add())
        if len(rows) > size:
            last = rows[size - 1]
            out.next_page_token = self.tokens.encode("triggers", fp, pagination.Cursor(last["create_time"], last["id"]))
        return out

    @staticmethod
    async def _write(conn: Conn, caller: Caller, before: tpb.Trigger, changed: tpb.Trigger,
                     now: datetime) -> None:
        await trigger_repo.update(conn, changed)
        await audit.write(conn, caller, entity_type="trigger", entity_id=changed.id, before=to_json(before),
                          after=to_json(changed), at=now)

    @staticmethod
    async def _check_subscription(conn: Conn, trigger: tpb.Trigger) -> None:
        if not trigger.subscription_id:
            return
        # locked: a DELETE of the subscription (which cancels its ARMED triggers under the same lock) runs wholly
        # before or after this create, so it never misses the new trigger
        stored = await sub_repo.get(conn, trigger.subscription_id, for_update=True)
        if stored is None:
            raise InvalidArgument("subscriptionId", f"no subscription {trigger.subscription_id}")
        sub = stored.sub
        if sub.follower_wallet_id != trigger.follower_wallet_id:
            raise InvalidArgument("followerWalletId", f"does not match subscription {sub.id}")
        if sub.follower_proxy != trigger.wallet:
            raise InvalidArgument("wallet", f"does not match the followerProxy of subscription {sub.id}")
        if sub.state == spb.SUBSCRIPTION_STATE_STOPPED:
            raise FailedPrecondition(f"subscriptionId: subscription {sub.id} is SUBSCRIPTION_STATE_STOPPED")

    @staticmethod
    async def _check_position(conn: Conn, trigger: tpb.Trigger) -> None:
        refusal = rules.position_refusal(
            trigger, await trigger_repo.position_of(conn, trigger.follower_wallet_id, trigger.asset_id))
        if refusal is not None:
            raise refusal

    @staticmethod
    async def _must_get(conn: Conn, tid: str, *, for_update: bool = False) -> tpb.Trigger:
        trigger = await trigger_repo.get(conn, tid, for_update=for_update)
        if trigger is None:
            raise NotFound(f"trigger {tid} not found")
        return trigger
