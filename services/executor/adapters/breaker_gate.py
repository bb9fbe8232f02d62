"""The circuit breaker of one venue at run time: the pure machine in memory, mirrored to Redis.

Decisions are taken in memory (no round trip on the hot path); every change of the breaker is
written to ``tt:breaker:{venue}`` (a hash: state, failures, opened_at_ms, probe_out, updated_ms) so
control's ``/ready`` can show it, and read back at start-up so a restart does not close an open breaker.
Each change of position is counted (``executor.breaker_transitions``, ``executor.breaker_state``) and its opening
and closing raise the BREAKER_OPENED / BREAKER_CLOSED alerts (key ``breaker:<venue>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics

from common.alerts import AlertKind, Severity, raise_alert
from common.cancel import reraise_if_cancelling
from services.executor.domain import breaker as br

log = logging.getLogger(__name__)

_meter = metrics.get_meter("tradingtools.executor")
_STATE = _meter.create_gauge("executor.breaker_state",
                             description="1 for each venue's breaker state now (CLOSED, OPEN, HALF_OPEN), else 0")
_TRANSITIONS = _meter.create_counter("executor.breaker_transitions",
                                     description="Breaker changes, by venue and new state")


def _export(venue: str, state: br.BreakerState, *, start: bool = False) -> None:
    for s in br.BreakerState:
        _STATE.set(1 if s is state else 0, {"venue": venue, "state": s.value})
        if start:  # every transition's series exported from the start (alerting rules read them)
            _TRANSITIONS.add(0, {"venue": venue, "to": s.value})


def breaker_changed(venue: str, old: br.Breaker, new: br.Breaker, cfg: br.BreakerConfig) -> None:
    """Metrics of a change of position; the BREAKER_OPENED alert when it opens from CLOSED, BREAKER_CLOSED when it
    closes (a failed probe's re-opening raises none: the breaker never closed)."""
    _TRANSITIONS.add(1, {"venue": venue, "to": new.state.value})
    _export(venue, new.state)
    if new.state is br.BreakerState.OPEN and old.state is br.BreakerState.CLOSED:
        raise_alert(AlertKind.BREAKER_OPENED, f"breaker:{venue}",
                    f"circuit breaker {venue} OPEN after {new.failures} consecutive venue failures: orders wait, "
                    f"a probe goes out in {cfg.open_ms / 1000:g}s", severity=Severity.CRITICAL,
                    dedupe_id=f"breaker:{venue}:OPEN:{new.opened_at_ms}", venue=venue, failures=new.failures)
    elif new.state is br.BreakerState.CLOSED:
        raise_alert(AlertKind.BREAKER_CLOSED, f"breaker:{venue}",
                    f"circuit breaker {venue} CLOSED: the venue answers again", severity=Severity.INFO,
                    dedupe_id=f"breaker:{venue}:CLOSED:{old.opened_at_ms}", venue=venue)


def breaker_key(venue: str) -> str:
    """Redis key of a venue's breaker."""
    return f"tt:breaker:{venue}"


class BreakerGate:
    """Admission control for calls to one venue."""

    def __init__(self, venue: str, redis: Any, cfg: br.BreakerConfig, now_ms: Callable[[], int]) -> None:
        self.venue = venue
        self.redis = redis
        self.cfg = cfg
        self.now_ms = now_ms
        self.state = br.Breaker()
        self._changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        _export(venue, self.state.state, start=True)

    async def load(self) -> None:
        """Read the stored breaker (a missing or unreadable one is CLOSED) and start the mirror writer."""
        try:
            raw = await self.redis.hgetall(breaker_key(self.venue))
            if raw:
                h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in raw.items()}
                self.state = br.abandon_probe(br.Breaker.from_hash(h))
                _export(self.venue, self.state.state)
        except Exception as exc:  # noqa: BLE001 - start closed rather than not at all
            log.warning("breaker state unreadable, starting closed", extra={"venue": self.venue,
                                                                            "error": repr(exc)[:300]})
        self._dirty.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._mirror())

    async def close(self) -> None:
        """Stop the mirror writer after a last write."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self._write()

    @property
    def closed(self) -> bool:
        """True when calls flow freely."""
        return self.state.state is br.BreakerState.CLOSED

    @property
    def probing(self) -> bool:
        """True while the half-open probe is out."""
        return self.state.state is br.BreakerState.HALF_OPEN and self.state.probe_out

    def reopens_in_s(self) -> float:
        """Seconds until an OPEN breaker lets its half-open probe out (a long wait otherwise: the
        change comes as an event)."""
        if self.state.state is br.BreakerState.OPEN:
            return max(0.001, (self.state.opened_at_ms + self.cfg.open_ms - self.now_ms()) / 1000)
        return 3600.0

    def admit(self) -> br.Admission:
        """May a call go out now?"""
        decision, new = br.admit(self.state, self.now_ms(), self.cfg)
        self._set(new)
        return decision

    def record(self, failure: bool) -> None:
        """Record a call's outcome (a business rejection counts as success: the venue answered)."""
        now = self.now_ms()
        new = br.record_failure(self.state, now, self.cfg) if failure else br.record_success(self.state, now, self.cfg)
        if new.state is not self.state.state:
            log.warning("circuit breaker changed", extra={"venue": self.venue, "from": self.state.state.value,
                                                          "to": new.state.value, "failures": new.failures})
        self._set(new)

    def abandon(self) -> None:
        """A probe ended without an answer (cancelled)."""
        self._set(br.abandon_probe(self.state))

    async def wait_change(self, timeout_s: float) -> None:
        """Wait until the breaker changes (or ``timeout_s``)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, timeout_s))

    def _set(self, new: br.Breaker) -> None:
        if new != self.state:
            if new.state is not self.state.state:
                breaker_changed(self.venue, self.state, new, self.cfg)
            self.state = new
            self._changed.set()
            self._dirty.set()

    async def _mirror(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again at the next change
                reraise_if_cancelling()
                log.warning("breaker mirror write failed", extra={"venue": self.venue, "error": repr(exc)[:300]})
                await asyncio.sleep(0.5)
                self._dirty.set()

    async def _write(self) -> None:
        await self.redis.hset(breaker_key(self.venue),
                              mapping={**self.state.to_hash(), "updated_ms": str(self.now_ms())})
