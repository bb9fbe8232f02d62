"""Publishes the engine's price bands for ingest (``common.bands``): the hash ``tt:guard:bands``, its meta and a
message per change, in one MULTI each, on a pipelined connection of its own (:class:`common.fastredis.FastRedis`:
a redis-py transaction pipeline cost about a tenth of guard's CPU at 10,000 ticks/s, a write after every tick
evaluated).

The first write of a process (and the first after a failed write) rewrites the hash under a new epoch and asks
readers to read it again; later writes carry the bands that changed. A write that finds the hash was not last
written by this process's previous write (a rollout's other guard wrote since, or the meta expired) is followed at
once by a whole rewrite: a change written onto another process's hash would leave that process's bands of the
assets this one did not change (missing a trigger it had not loaded yet) in force. Every ``beat_s`` a write goes
out whether or not a band changed: it renews the lease and tells ingest how far guard has read the tick log
(``through_ns``), so ingest can drop what it narrowed on its own meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from common.band_reset import invalidate_message
from common.bands import BANDS_CHANNEL, BANDS_KEY, BANDS_META_KEY, BandMessage, BandMeta, encode, parse_meta
from common.fastredis import FastRedis
from common.resp import Arg
from services.guard.domain.price_bands import band_changes
from services.guard.domain.trigger_index import Engine
from services.guard.loops import reraise_if_cancelled

log = logging.getLogger(__name__)
_CHUNK = 1000
OFF = b"off"  # published when bands are switched off: readers find no meta and forward every tick
# The meta deleted and an invalidation published only when the meta is still the given epoch's (-1: it is not)
_STAND_DOWN = """
local raw = redis.call('GET', KEYS[1])
if not raw then return -1 end
local ok, meta = pcall(cjson.decode, raw)
if not ok or type(meta) ~= 'table' or meta['epoch'] ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])
"""


class BandPublisher:
    """Keeps ``tt:guard:bands`` equal to the engine's published bands (a ``Kickable``: kicked on engine changes)."""

    def __init__(self, redis: FastRedis, engine: Callable[[], Engine], through_ns: Callable[[], int], *,
                 beat_s: float = 1.0, lease_s: float = 5.0, min_interval_s: float = 0.002,
                 yield_to: Callable[[], Awaitable[None]] | None = None) -> None:
        self.redis = redis
        self.engine = engine
        self.through_ns = through_ns
        self.beat_s = beat_s
        self.lease_s = lease_s
        self.min_interval_s = min_interval_s
        self.yield_to = yield_to  # awaited before each run of run() (FireWindow.yield_to_fires)
        self.epoch = secrets.token_hex(8)  # this process: a reader drops bands another process wrote
        self.seq = 0
        self.published: dict[str, str] | None = None  # None: the next write rewrites the hash
        self.writes = 0
        self.foreign = 0  # writes that found another process's (or no) meta: each followed by a whole rewrite
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Bands may have changed: write soon."""
        self._wake.set()

    async def step(self, *, beat: bool = True) -> int:
        """Write what changed (everything on the first run); without ``beat``, nothing when nothing changed.
        Returns the number of bands written."""
        engine = self.engine()
        self._pending |= engine.take_band_changes()
        through = self.through_ns()  # the bands computed below reflect every tick evaluated so far
        if self.published is None:
            self._pending.clear()
            wanted = {}
            for asset_id in engine.assets():
                band = engine.published_band(asset_id)
                if band is not None:
                    wanted[asset_id] = encode(band)
            await self._write(wanted, through, reset=True)
            self.published = wanted
            return len(wanted)
        changed = band_changes(self._pending, engine.published_band, self.published)
        if not changed and not beat:
            self._pending.clear()
            return 0
        try:
            ours = await self._write(changed, through)
        except BaseException:
            self.published = None  # not known whether it was applied: rewrite everything next time
            raise
        self._pending.clear()
        if not ours:
            self.published = None
            self.kick()
            return len(changed)
        for asset_id, text in changed.items():
            if text:
                self.published[asset_id] = text
            else:
                self.published.pop(asset_id, None)
        return len(changed)

    async def _write(self, bands: dict[str, str], through: int, *, reset: bool = False) -> bool:
        """Write ``bands`` (all of them with ``reset``); False when a change landed on a hash this process's previous
        write did not leave (another process's, or none)."""
        self.seq += 1
        meta = BandMeta(self.epoch, self.seq, through, self.lease_s)
        commands: list[tuple[Arg, ...]] = [("GET", BANDS_META_KEY)]  # whose hash this write lands on
        if reset:
            commands.append(("DEL", BANDS_KEY))
        items = [(a, t) for a, t in bands.items() if t]
        for start in range(0, len(items), _CHUNK):
            commands.append(("HSET", BANDS_KEY, *[x for item in items[start:start + _CHUNK] for x in item]))
        gone = [a for a, t in bands.items() if not t]
        if gone:
            commands.append(("HDEL", BANDS_KEY, *gone))
        commands.append(("SET", BANDS_META_KEY, meta.to_json(), "PX", int(self.lease_s * 1000)))
        commands.append(("PUBLISH", BANDS_CHANNEL, BandMessage(meta, {} if reset else bands, reset).to_json()))
        before = parse_meta((await self.redis.transaction(commands))[0])
        self.writes += 1
        if reset or (before is not None and before.epoch == self.epoch and before.seq == self.seq - 1):
            return True
        self.foreign += 1
        log.info("bands written onto a hash this process did not write last: rewriting it whole",
                 extra={"found_epoch": before.epoch if before else "", "epoch": self.epoch})
        return False

    async def stand_down(self) -> bool:
        """At a stop, once :meth:`run` ended: when the bands' meta is still this process's, delete it and publish an
        invalidation (one script), so ingest's gates trust no band until the next process's land, rather than this
        one's, frozen (a rollout's new guard reads ticks they would leave out). True when it did; bands a newer
        process wrote are left alone."""
        reached = await self.redis.eval(_STAND_DOWN, 1, BANDS_META_KEY, self.epoch, BANDS_CHANNEL,
                                        invalidate_message(secrets.token_hex(8)))
        return int(reached) >= 0

    async def run(self) -> None:
        """Write on kicks (at most every ``min_interval_s``, each run after ``yield_to``) and every ``beat_s``,
        until cancelled."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            # kicked after every tick evaluated: a deadline on this task, not wait_for's task per wait
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_beat):
                    await self._wake.wait()
            if self.yield_to is not None:
                await self.yield_to()
            self._wake.clear()
            beat = loop.time() >= next_beat or self.published is None
            try:
                await self.step(beat=beat)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis outage: ingest's lease runs out, it forwards everything
                reraise_if_cancelled()
                log.warning("band publish failed; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(min(self.beat_s, 0.5))
                continue
            if beat:
                next_beat = loop.time() + self.beat_s
            if self.min_interval_s > 0:
                await asyncio.sleep(self.min_interval_s)


async def switch_off(redis: FastRedis) -> None:
    """Bands off (guard's setting): remove them, so ingest forwards every tick at once."""
    await redis.transaction([("DEL", BANDS_KEY, BANDS_META_KEY), ("PUBLISH", BANDS_CHANNEL, OFF)])
