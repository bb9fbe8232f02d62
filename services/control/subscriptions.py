"""Subscription use cases: validate, write in one transaction with its audit row, then sync the index.

Every mutation first checks Redis (UNAVAILABLE, nothing written, when it is down), then commits the
row, the audit row (and the idempotency record) together, then updates the hot index. No-op
requests (pausing a PAUSED subscription, a PATCH that changes nothing, deleting a STOPPED one)
return the subscription as it is and write nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask

from common.ids import new_id
from services.control import audit, idempotency, pagination, sub_repo, trigger_repo, wallet_modes
from services.control import subscription_rules as rules
from services.control import validation as v
from services.control.audit import Caller
from services.control.codec import (
    audit_subscription,
    fill_from_row,
    index_json,
    short_mode,
    to_json,
    zero_stats,
)
from services.control.db import Conn, Database
from services.control.errors import AlreadyExists, NotFound
from services.control.hotsync import IndexSync, resync_if_cancelled
from services.control.lifecycle import SubscriptionCommand, apply_subscription
from services.control.sub_pages import EncodedBody, SubscriptionPages, page_query
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

DEFAULT_PAUSE_REASON = "PAUSED_BY_USER"
STOPPED_REASON = "SUBSCRIPTION_STOPPED"


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def _request_hash(raw: spb.Subscription) -> str:
    """The idempotency digest of a create request (``request_id`` left out)."""
    request = spb.Subscription()
    request.CopyFrom(raw)
    request.ClearField("request_id")
    return idempotency.request_hash(request)


class SubscriptionUseCases:
    """Create, read, change, pause, resume and stop subscriptions."""

    def __init__(self, db: Database, sync: IndexSync, *, live_enabled: bool, now: Callable[[], datetime],
                 idempotency_ttl: timedelta, page_tokens: pagination.PageTokens, list_cache_entries: int = 50_000,
                 page_cache_bytes: int = 0) -> None:
        self.db = db
        self.tokens = page_tokens
        self.pages = SubscriptionPages(db, list_cache_entries, page_cache_bytes)
        self.sync = sync
        self.live_enabled = live_enabled
        self.now = now
        self.ttl = idempotency_ttl

    @resync_if_cancelled
    async def create(self, raw: spb.Subscription, caller: Caller) -> spb.Subscription:
        """A new ACTIVE subscription (or the first response of an idempotent replay).

        The common case is one autocommit statement (row + audit row + idempotency claim with its
        response); a key seen before takes the transactional path that replays or re-claims it.
        """
        key = v.idempotency_key(caller.idempotency_key, raw.request_id if raw.HasField("request_id") else None)
        caller = replace(caller, idempotency_key=key)
        sub = rules.new_subscription(raw)
        rules.check_live_allowed(sub.mode, self.live_enabled)
        await self.sync.ensure_redis()
        now = self.now()
        sub.id = new_id("sub", _ms(now))
        sub.state = spb.SUBSCRIPTION_STATE_ACTIVE
        sub.create_time.FromDatetime(now)
        sub.update_time.FromDatetime(now)
        sub.active_time.FromDatetime(now)
        zero_stats(sub)
        doc = audit_subscription(sub)
        claim = None
        if key is not None:
            claim = sub_repo.IdempotencyClaim(key, _request_hash(raw), sub.SerializeToString())
        try:
            async with self.db.read() as conn:
                done = await sub_repo.insert_created(conn, sub, doc, token_id=caller.token_id,
                                                     method=caller.method, request_id=caller.request_id,
                                                     claim=claim)
            if not done.created:
                if claim is None:  # without a key the statement inserts, raises or finds a mode conflict
                    if done.conflict is None:
                        raise RuntimeError("create statement inserted nothing")
                    raise wallet_modes.refused(sub.follower_wallet_id, short_mode(sub.mode), done.conflict)
                # a key seen before replays; a new key was not claimed because of the conflict, found again there
                replay = await self._create_seen_key(sub, doc, caller, claim.request_hash, now)
                if replay is not None:
                    await self._index_again(replay.id)
                    return replay
        except Exception as exc:
            if sub_repo.is_duplicate_active(exc):
                raise await self._duplicate(sub) from None
            raise
        await self.sync.subscription_changed(sub, 1, index_json(doc))
        return sub

    async def _index_again(self, sid: str) -> None:
        """Write a subscription's index entry from its row as it is now (the replay of a create whose first
        call may have been cancelled between its commit and its index write)."""
        async with self.db.read() as conn:
            stored = await sub_repo.get(conn, sid)
        if stored is not None:
            await self.sync.subscription_changed(stored.sub, stored.version)

    async def _create_seen_key(self, sub: spb.Subscription, doc: dict[str, Any], caller: Caller, digest: str,
                               now: datetime) -> spb.Subscription | None:
        """A create whose key was used before: the stored response to replay, or None once ``sub`` is
        written under the re-claimed key (the first attempt failed or expired)."""
        async with self.db.transaction() as conn:
            replay = await idempotency.claim(conn, caller, digest, now, self.ttl)
            if replay is not None:
                return spb.Subscription.FromString(replay)
            await wallet_modes.check(conn, sub.follower_wallet_id, short_mode(sub.mode), sub.id)
            await sub_repo.insert(conn, sub, doc)
            await audit.write(conn, caller, entity_type="subscription", entity_id=sub.id, before=None,
                              after=doc, at=now)
            await idempotency.store(conn, caller, sub)
        return None

    async def get(self, subscription_id: str) -> spb.Subscription:
        """One subscription with live stats."""
        sid = v.path_id("subscription", subscription_id)
        async with self.db.read() as conn:
            return (await self._must_get(conn, sid)).sub

    async def list_page(self, *, follower_proxy: str, leader_proxy: str, state: int, page_size: int,
                        page_token: str) -> pb.ListSubscriptionsResponse:
        """One follower's subscriptions, oldest first (gRPC ListSubscriptions)."""
        return await self.pages.message(page_query(
            follower_proxy=follower_proxy, leader_proxy=leader_proxy, state=state, page_size=page_size,
            page_token=page_token, tokens=self.tokens))

    async def list_page_json(self, *, follower_proxy: str, leader_proxy: str, state: int, page_size: int,
                             page_token: str, gzip_ok: bool = False) -> EncodedBody:
        """The same page as the JSON body of REST ``GET /subscriptions`` (see ``list_json``), gzipped
        when ``gzip_ok`` and the page is one kept unchanged (see ``content_coding``)."""
        return await self.pages.encoded_json(page_query(
            follower_proxy=follower_proxy, leader_proxy=leader_proxy, state=state, page_size=page_size,
            page_token=page_token, tokens=self.tokens), gzip_ok=gzip_ok)

    async def fills_page(self, subscription_id: str, *, page_size: int,
                         page_token: str) -> pb.ListSubscriptionFillsResponse:
        """A subscription's fills, newest first."""
        sid = v.path_id("subscription", subscription_id)
        size = v.page_size(page_size)
        fp = pagination.fingerprint(sid)
        after = self.tokens.decode(page_token, "fills", fp)
        async with self.db.read() as conn:
            await self._must_get(conn, sid)
            rows = await sub_repo.fills_page(conn, sid, after=after, limit=size + 1)
        out = pb.ListSubscriptionFillsResponse()
        for row in rows[:size]:
            fill_from_row(row, out.fills.add())
        if len(rows) > size:
            last = rows[size - 1]
            out.next_page_token = self.tokens.encode("fills", fp, pagination.Cursor(last["fill_time"], last["id"]))
        return out

    @resync_if_cancelled
    async def update(self, subscription_id: str, patch: spb.Subscription, mask: FieldMask,
                     caller: Caller) -> spb.Subscription:
        """Change label, mode or config; identity and leader are immutable; STOPPED cannot change."""
        sid = v.path_id("subscription", subscription_id)
        await self.sync.ensure_redis()
        async with self.db.transaction() as conn:
            locked = await self._must_get(conn, sid, for_update=True)
            current = locked.sub
            apply_subscription(current.state, SubscriptionCommand.UPDATE, sid)
            merged = rules.merge_patch(current, patch, list(mask.paths))
            unchanged = rules.config_equal(merged, current)
            if not unchanged:
                if merged.mode != current.mode:
                    rules.check_live_allowed(merged.mode, self.live_enabled)
                    await wallet_modes.check(conn, current.follower_wallet_id, short_mode(merged.mode), sid)
                    if merged.state == spb.SUBSCRIPTION_STATE_ACTIVE:  # a BUY made before the switch is not copied
                        merged.active_time.FromDatetime(self.now())
                version = await self._write(conn, caller, locked, merged)
        if unchanged:  # perhaps the retry of a call cancelled after its commit: the index gets the row again
            await self.sync.subscription_changed(current, locked.version)
            return current
        await self.sync.subscription_changed(merged, version)
        return merged

    async def pause(self, subscription_id: str, reason: str, caller: Caller) -> spb.Subscription:
        """ACTIVE → PAUSED with a reason (PAUSED stays PAUSED; STOPPED is FAILED_PRECONDITION)."""
        sid = v.path_id("subscription", subscription_id)
        why = v.text("reason", reason) or DEFAULT_PAUSE_REASON
        return await self._transition(sid, SubscriptionCommand.PAUSE, caller, paused_reason=why)

    async def resume(self, subscription_id: str, caller: Caller) -> spb.Subscription:
        """PAUSED → ACTIVE unless another ACTIVE subscription copies the same leader for the wallet."""
        sid = v.path_id("subscription", subscription_id)
        return await self._transition(sid, SubscriptionCommand.RESUME, caller, paused_reason="")

    @resync_if_cancelled
    async def stop(self, subscription_id: str, caller: Caller) -> None:
        """→ STOPPED; its ARMED triggers are CANCELLED (SUBSCRIPTION_STOPPED) in the same transaction, and
        announced (again when it was STOPPED already: perhaps the retry of a call cancelled after its commit)."""
        sid = v.path_id("subscription", subscription_id)
        await self.sync.ensure_redis()
        now = self.now()
        async with self.sync.announcing("remove") as announced, self.db.transaction() as conn:
            locked = await self._must_get(conn, sid, for_update=True)
            current = locked.sub
            if current.state == spb.SUBSCRIPTION_STATE_STOPPED:
                announced.extend(await trigger_repo.cancelled_by_stop(conn, current, STOPPED_REASON))
            else:
                changed = spb.Subscription()
                changed.CopyFrom(current)
                changed.state = apply_subscription(current.state, SubscriptionCommand.STOP, sid)  # type: ignore[assignment]
                changed.paused_reason = ""  # not paused any more: stopped
                version = await self._write(conn, caller, locked, changed)
                cancelled = await trigger_repo.cancel_armed_of_subscription(conn, sid, STOPPED_REASON, now)
                announced.extend(t.id for t in cancelled)
                for t in cancelled:
                    after = tpb.Trigger()
                    after.CopyFrom(t)
                    after.state = tpb.TRIGGER_STATE_CANCELLED
                    after.state_reason = STOPPED_REASON
                    after.update_time.FromDatetime(now)
                    await audit.write(conn, caller, entity_type="trigger", entity_id=t.id, before=to_json(t),
                                      after=to_json(after), at=now)
        if current.state == spb.SUBSCRIPTION_STATE_STOPPED:
            # perhaps the retry of a call cancelled after its commit: the index gets the row again
            await self.sync.subscription_changed(current, locked.version)
            return
        await self.sync.subscription_changed(changed, version)

    @resync_if_cancelled
    async def _transition(self, sid: str, command: SubscriptionCommand, caller: Caller, *,
                          paused_reason: str) -> spb.Subscription:
        await self.sync.ensure_redis()
        try:
            async with self.db.transaction() as conn:
                locked = await self._must_get(conn, sid, for_update=True)
                current = locked.sub
                state = apply_subscription(current.state, command, sid)
                if state != current.state:
                    changed = spb.Subscription()
                    changed.CopyFrom(current)
                    if state == spb.SUBSCRIPTION_STATE_ACTIVE:
                        rules.check_live_allowed(current.mode, self.live_enabled)
                        changed.active_time.FromDatetime(self.now())  # the leader's BUYs from here are copied
                    changed.state = state  # type: ignore[assignment]
                    changed.paused_reason = paused_reason
                    version = await self._write(conn, caller, locked, changed)
        except Exception as exc:
            if sub_repo.is_duplicate_active(exc):
                raise await self._duplicate(current) from None
            raise
        if state == current.state:  # perhaps the retry of a call cancelled after its commit: the index gets it again
            await self.sync.subscription_changed(current, locked.version)
            return current
        await self.sync.subscription_changed(changed, version)
        return changed

    async def _write(self, conn: Conn, caller: Caller, locked: sub_repo.Stored,
                     changed: spb.Subscription) -> int:
        """Write ``changed`` (update time set here) with its audit row; returns the new row version."""
        now = self.now()
        changed.update_time.FromDatetime(now)
        version = await sub_repo.update(conn, changed, locked.version)
        await audit.write(conn, caller, entity_type="subscription", entity_id=changed.id,
                          before=audit_subscription(locked.sub), after=audit_subscription(changed), at=now)
        return version

    async def _duplicate(self, sub: spb.Subscription) -> AlreadyExists:
        """The 409, naming the ACTIVE subscription in the way when it can still be read."""
        existing = None
        with contextlib.suppress(Exception):
            async with self.db.read() as conn:
                existing = await sub_repo.active_id(conn, sub.follower_wallet_id, sub.leader_proxy)
        return sub_repo.duplicate_active(sub.follower_wallet_id, sub.leader_proxy, existing)

    @staticmethod
    async def _must_get(conn: Conn, sid: str, *, for_update: bool = False) -> sub_repo.Stored:
        stored = await sub_repo.get(conn, sid, for_update=for_update)
        if stored is None:
            raise NotFound(f"subscription {sid} not found")
        return stored
