"""The Redis hot index: leader → active subscriptions, shared by control (writer) and ingest/router (readers).

Keys (all lower-case addresses):
- ``tt:leaders`` SET of leader proxies that have at least one ACTIVE subscription.
- ``tt:leader:{leader}`` HASH subscription id → proto3 JSON of the ``Subscription``.
- ``tt:index:version`` INCR'd on every change, so a reader that missed a message knows to reload.
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


_UPSERT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], cjson.encode({leader=ARGV[3], subscriptionId=ARGV[1], op='upsert', version=v}))
return v
"""

_REMOVE = """
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], cjson.encode({leader=ARGV[2], subscriptionId=ARGV[1], op='remove', version=v}))
return v
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


async def upsert(redis: Any, sub: subscription_pb2.Subscription) -> int:
    """Put an ACTIVE subscription in the index (or remove it if not ACTIVE); returns the new version."""
    if sub.state != subscription_pb2.SUBSCRIPTION_STATE_ACTIVE:
        return await remove(redis, sub.leader_proxy, sub.id)
    leader = sub.leader_proxy.lower()
    return int(await redis.eval(_UPSERT, 3, leader_key(leader), LEADERS_KEY, VERSION_KEY,
                                sub.id, encode(sub), leader, CHANNEL))


async def remove(redis: Any, leader: str, subscription_id: str) -> int:
    """Take a subscription out of the index; returns the new version."""
    leader = leader.lower()
    return int(await redis.eval(_REMOVE, 3, leader_key(leader), LEADERS_KEY, VERSION_KEY,
                                subscription_id, leader, CHANNEL))


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
