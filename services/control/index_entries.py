"""One hot-index entry as control writes and checks it: the stored copy, its digest, the upsert of an encoded copy."""

from __future__ import annotations

import hashlib

from common import hotindex
from common.fastredis import FastRedis, Script
from tradingtools.control.v1 import subscription_pb2 as spb


def index_copy(sub: spb.Subscription) -> spb.Subscription:
    """The subscription as stored in the hot index (no live stats)."""
    copy = spb.Subscription()
    copy.CopyFrom(sub)
    copy.ClearField("stats")
    return copy


def digest(encoded: str) -> str:
    """SHA1 (hex) of an index string, as Redis's ``redis.sha1hex`` computes it in :data:`DIGESTS`."""
    return hashlib.sha1(encoded.encode(), usedforsecurity=False).hexdigest()


# Per leader hash in KEYS: its fields, each followed by the SHA1 of its value. A resync compares these
# with the digests it expects, so the index strings (about 1 KB each) are not sent and decoded.
DIGESTS = """
local out = {}
for i, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  local row = {}
  for j = 1, #flat, 2 do
    row[#row + 1] = flat[j]
    row[#row + 1] = redis.sha1hex(flat[j + 1])
  end
  out[i] = row
end
return out
"""


_UPSERT = Script(hotindex._UPSERT)


async def upsert_encoded(hot: FastRedis, sub: spb.Subscription, encoded: str, row_version: int,
                         force: bool = False) -> int:
    """``hotindex.upsert`` of an ACTIVE subscription already encoded (same script, no second encode)."""
    leader = sub.leader_proxy.lower()
    return int(await hot.run_script(_UPSERT, hotindex.upsert_keys(leader), (
        sub.id, encoded, leader, hotindex.CHANNEL, hotindex.row_version_arg(row_version), hotindex.force_arg(force))))
