"""The Redis hot index: leader → active subscriptions, shared by control (writer) and ingest/router (readers).

Keys (all lower-case addresses):
- ``tt:leaders`` SET of leader proxies that have at least one ACTIVE subscription.
- ``tt:leader:{leader}`` HASH subscription id → proto3 JSON of the ``Subscription``.
- ``tt:index:version`` INCR'd on every change, so a reader that missed a message knows to reload.
- ``tt:index:rowver`` HASH subscription id → the PostgreSQL row version last written for it (kept after a
  remove): a write carrying an older row version is refused, so of several writers (control replicas, a resync
  that read the row before another replica changed it) the newest version wins whatever the order of arrival.
- channel ``tt:index:changed`` carries ``{"leader", "subscriptionId", "op": "upsert"|"remove", "version"}``.

Pub/sub is fire-and-forget: a reader reloads in full whenever it (re)subscribes, and compares
``tt:index:version`` periodically as a safety net.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format

from tradingtools.control.v1 import subscription_pb2

LEADERS_KEY = "tt:leaders"
VERSION_KEY = "tt:index:version"
ROW_VERSIONS_KEY = "tt:index:rowver"
REFUSED = -1  # what upsert / remove return when the index holds a newer row version of the subscription
CHANNEL = "tt:index:changed"


def leader_key(leader: str) -> str:
    """Hash key holding one leader's active subscriptions."""
    return f"tt:leader:{leader.lower()}"


def encode(sub: subscription_pb2.Subscription) -> str:
    """Proto3 JSON of a subscription as stored in the index."""
    return json_format.MessageToJson(sub, indent=None, preserving_proto_field_name=False)


def decode(raw: str | bytes) -> subscription_pb2.Subscription:
    """A subscription read back from the index."""
    return json_format.Parse(raw, subscription_pb2.Subscription(), ignore_unknown_fields=True)


# ARGV[5] / ARGV[4]: the row version written ("" when unknown: no check, nothing recorded); ARGV[6] / ARGV[5]
# "force": written whatever row version the index holds (see ``force``)
_UPSERT = """
local rv = tonumber(ARGV[5])
if rv then
  if ARGV[6] ~= 'force' and tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0') > rv then return -1 end
  redis.call('HSET', KEYS[4], ARGV[1], rv)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], cjson.encode({leader=ARGV[3], subscriptionId=ARGV[1], op='upsert', version=v}))
return v
"""

_REMOVE = """
local rv = tonumber(ARGV[4])
if rv then
  if ARGV[5] ~= 'force' and tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0') > rv then return -1 end
  redis.call('HSET', KEYS[4], ARGV[1], rv)
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], cjson.encode({leader=ARGV[2], subscriptionId=ARGV[1], op='remove', version=v}))
return v
"""


# Drops a leader from the followed set only while its hash is empty: a resync that found none of its subscriptions
# ACTIVE in PostgreSQL may meet an entry another writer put back since (a resume), which keeps it followed.
_FORGET_LEADER = """
if redis.call('HLEN', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""


@dataclass(frozen=True)
class IndexChange:
    """One invalidation message."""

    leader: str
    subscription_id: str
    op: str
    version: int

    @classmethod
    def parse(cls, raw: str | bytes) -> IndexChange:
        """Parse a message from ``CHANNEL``; raises ValueError on garbage."""
        data: Any = orjson.loads(raw)
        return cls(str(data["leader"]), str(data["subscriptionId"]), str(data["op"]), int(data["version"]))


def upsert_keys(leader: str) -> tuple[str, str, str, str]:
    """The KEYS of the upsert and remove scripts."""
    return leader_key(leader), LEADERS_KEY, VERSION_KEY, ROW_VERSIONS_KEY


def row_version_arg(row_version: int | None) -> str:
    """The scripts' row version argument ("": not checked)."""
    return "" if row_version is None else str(row_version)


def force_arg(force: bool) -> str:
    """The scripts' force argument."""
    return "force" if force else ""


async def upsert(redis: Any, sub: subscription_pb2.Subscription, row_version: int | None = None, *,
                 force: bool = False) -> int:
    """Put an ACTIVE subscription in the index (or remove it if not ACTIVE); returns the new index version, or
    :data:`REFUSED` when the index holds a newer ``row_version`` of it. ``force``: written (and ``row_version``
    recorded) whatever the index holds: only for a writer holding the row's lock, so that no newer version can
    commit meanwhile (PostgreSQL may have lost the versions the index holds: restored, or failed over)."""
    if sub.state != subscription_pb2.SUBSCRIPTION_STATE_ACTIVE:
        return await remove(redis, sub.leader_proxy, sub.id, row_version, force=force)
    leader = sub.leader_proxy.lower()
    return int(await redis.eval(_UPSERT, 4, *upsert_keys(leader), sub.id, encode(sub), leader, CHANNEL,
                                row_version_arg(row_version), force_arg(force)))


async def remove(redis: Any, leader: str, subscription_id: str, row_version: int | None = None, *,
                 force: bool = False) -> int:
    """Take a subscription out of the index; returns the new index version, or :data:`REFUSED` when the index
    holds a newer ``row_version`` of it (``force``: as :func:`upsert`)."""
    leader = leader.lower()
    return int(await redis.eval(_REMOVE, 4, *upsert_keys(leader), subscription_id, leader, CHANNEL,
                                row_version_arg(row_version), force_arg(force)))


async def forget_leader(redis: Any, leader: str) -> bool:
    """Take ``leader`` out of the followed set if its hash holds no subscription; True when it was taken out."""
    leader = leader.lower()
    return bool(await redis.eval(_FORGET_LEADER, 2, leader_key(leader), LEADERS_KEY, leader))


async def leaders(redis: Any) -> set[str]:
    """Every followed leader."""
    return {m.decode() if isinstance(m, bytes) else m for m in await redis.smembers(LEADERS_KEY)}


async def subscriptions_of(redis: Any, leader: str) -> list[subscription_pb2.Subscription]:
    """Active subscriptions of one leader."""
    raw = await redis.hgetall(leader_key(leader))
    return [decode(v) for v in raw.values()]


async def version(redis: Any) -> int:
    """Current index version (0 when never written)."""
    return int(await redis.get(VERSION_KEY) or 0)
