"""The bands' invalidation a guard process does at start, before it takes its tick-log cursor
(``common.band_reset``): ingest's gates stop trusting the previous process's bands, narrowed by prices that process
logged and never read, and that this one never reads either (they are before its cursor).

Every tick a gate admits after its acknowledgement goes out until this process's first bands land (they carry its
cursor's ``through_ns``); the cursor is taken after the acknowledgements, so no tick after it is filtered with the
old process's state. A feed that does not acknowledge (an older ingest, a broken connection) is waited for until the
old meta's lease has run out since the delete, plus a margin: from then on its gate trusts nothing of the old
process anyway (unless that process is still writing: a rollout, where the old process's next write brings its
bands back until it stops, as before).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.band_reset import ack_key, invalidate_message
from common.bands import BANDS_CHANNEL, BANDS_KEY, BANDS_META_KEY, parse_meta

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


async def invalidate_bands(redis: Any, *, lease_s: float, margin_s: float = 1.0, poll_s: float = 0.005,
                           clock: Callable[[], float] = time.monotonic) -> Invalidation:
    """Delete the bands and their meta and publish an invalidation (one MULTI), then wait until every band feed
    it reached has acknowledged it, at most the old meta's lease (``lease_s`` without one) plus ``margin_s``."""
    token = secrets.token_hex(8)
    pipe = redis.pipeline(transaction=True)
    pipe.get(BANDS_META_KEY)  # its lease bounds the wait: the old bands' trust ends at most that long after
    pipe.delete(BANDS_KEY, BANDS_META_KEY)
    pipe.publish(BANDS_CHANNEL, invalidate_message(token))
    raw_meta, _deleted, reached = await pipe.execute()
    started = clock()
    old = parse_meta(raw_meta)
    lease = old.lease_s if old is not None and math.isfinite(old.lease_s) and old.lease_s >= 0 else lease_s
    subscribers = int(reached)
    acks = 0
    timed_out = False
    if subscribers > 0:
        key = ack_key(token)
        deadline = started + lease + margin_s
        while True:
            acks = int(await redis.scard(key))
            if acks >= subscribers:
                break
            if clock() >= deadline:
                timed_out = True
                break
            await asyncio.sleep(poll_s)
    waited = clock() - started
    log.info("bands invalidated before the tick cursor",
             extra={"subscribers": subscribers, "acks": acks, "waited_s": round(waited, 3), "timed_out": timed_out,
                    "old_epoch": old.epoch if old is not None else ""})
    return Invalidation(token, subscribers, acks, waited, timed_out)
