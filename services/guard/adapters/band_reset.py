"""The bands' invalidation a guard process does at start, before it takes its tick-log cursor
(``common.band_reset``): ingest's gates stop trusting the previous process's bands, narrowed by prices that process
logged and never read, and that this one never reads either (they are before its cursor).

Every tick a gate admits after its acknowledgement goes out until this process's first bands land (they carry its
cursor's ``through_ns``); the cursor is taken after the acknowledgements, so no tick after it is filtered with the
old process's state. A feed that does not acknowledge (an older ingest, a broken connection) is waited for until the
old meta's lease has run out since the delete, plus a margin: from then on its gate trusts nothing of the old
process anyway (unless that process is still writing: a rollout, where the old process's next write brings its
whole set of bands back, the hash being kept, as before the invalidation existed).
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.band_reset import ACK_CHANNEL, invalidate_message, parse_ack
from common.bands import BANDS_CHANNEL, BANDS_META_KEY, parse_meta
from common.pubsub import confirmed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What :func:`invalidate_bands` saw: the band feeds the message reached, those that acknowledged, how long it
    waited, and whether it stopped at the bound instead."""

    token: str
    subscribers: int
    acks: int
    waited_s: float
    timed_out: bool


async def invalidate_bands(redis: Any, *, lease_s: float, margin_s: float = 1.0,
                           clock: Callable[[], float] = time.monotonic) -> Invalidation:
    """Delete the bands' meta and publish an invalidation (one MULTI), then wait until every band feed it reached
    has acknowledged it, at most the old meta's lease (``lease_s`` without one) plus ``margin_s`` (and ``margin_s``
    before, for the acknowledgements' subscription to be confirmed). Any other subscriber of the channel (a pattern
    one too) never acknowledges: it makes the wait run to the bound."""
    token = secrets.token_hex(8)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(ACK_CHANNEL)
        # no acknowledgement may come before it
        await confirmed(pubsub, poll_s=0.5, deadline=clock() + margin_s, clock=clock)
        pipe = redis.pipeline(transaction=True)
        pipe.get(BANDS_META_KEY)  # its lease bounds the wait: the old bands' trust ends at most that long after
        pipe.delete(BANDS_META_KEY)  # not the hash: a rollout's old guard writes its changes onto its whole set
        pipe.publish(BANDS_CHANNEL, invalidate_message(token))
        raw_meta, _deleted, reached = await pipe.execute()
        started = clock()
        old = parse_meta(raw_meta)
        lease = old.lease_s if old is not None and math.isfinite(old.lease_s) and old.lease_s >= 0 else lease_s
        subscribers = int(reached)
        acked: set[str] = set()
        deadline = started + lease + margin_s
        while len(acked) < subscribers and (left := deadline - clock()) > 0:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 0.5))
            ack = parse_ack(msg["data"]) if msg is not None else None
            if ack is not None and ack[0] == token:
                acked.add(ack[1])
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection
            await pubsub.aclose()
    waited = clock() - started
    timed_out = len(acked) < subscribers
    log.info("bands invalidated before the tick cursor",
             extra={"subscribers": subscribers, "acks": len(acked), "waited_s": round(waited, 3),
                    "timed_out": timed_out, "old_epoch": old.epoch if old is not None else ""})
    return Invalidation(token, subscribers, len(acked), waited, timed_out)
