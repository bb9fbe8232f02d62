"""Circuit breaker per venue as a pure state machine (time passed in, milliseconds).

CLOSED counts consecutive failures; ``threshold`` of them open it. OPEN refuses every call for
``open_ms``; then the next call becomes the single HALF_OPEN probe (others are refused while it
runs). The probe's success closes the breaker, its failure opens it again for another ``open_ms``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class BreakerState(enum.Enum):
    """Breaker position."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Breaker knobs."""

    threshold: int = 5
    open_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class Breaker:
    """Breaker state: position, consecutive failures, when it opened, whether a probe is out."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at_ms: int = 0
    probe_out: bool = False

    def to_hash(self) -> dict[str, str]:
        """Fields stored in Redis (``tt:breaker:{venue}``)."""
        return {"state": self.state.value, "failures": str(self.failures),
                "opened_at_ms": str(self.opened_at_ms), "probe_out": "1" if self.probe_out else "0"}

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Breaker:
        """Parse the stored hash (an unreadable one reads as CLOSED)."""
        try:
            return cls(BreakerState(h.get("state", "CLOSED")), int(h.get("failures", "0")),
                       int(h.get("opened_at_ms", "0")), h.get("probe_out") == "1")
        except ValueError:
            return cls()


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a call may go out now, and whether it is the half-open probe."""

    allowed: bool
    probe: bool = False


def admit(b: Breaker, now_ms: int, cfg: BreakerConfig) -> tuple[Admission, Breaker]:
    """May a call go out at ``now_ms``? Returns the decision and the breaker after it."""
    if b.state is BreakerState.CLOSED:
        return Admission(True), b
    if b.state is BreakerState.OPEN:
        if now_ms - b.opened_at_ms >= cfg.open_ms:
            return Admission(True, probe=True), replace(b, state=BreakerState.HALF_OPEN, probe_out=True)
        return Admission(False), b
    if not b.probe_out:  # half-open with the probe's answer lost (e.g. a restart): this call probes
        return Admission(True, probe=True), replace(b, probe_out=True)
    return Admission(False), b


def record_success(b: Breaker, now_ms: int, cfg: BreakerConfig) -> Breaker:
    """A call succeeded: CLOSED resets its count; HALF_OPEN closes; OPEN ignores late answers."""
    if b.state is BreakerState.OPEN:
        return b
    return Breaker()


def record_failure(b: Breaker, now_ms: int, cfg: BreakerConfig) -> Breaker:
    """A call failed: CLOSED counts (and opens at the threshold); HALF_OPEN reopens; OPEN stays."""
    if b.state is BreakerState.CLOSED:
        failures = b.failures + 1
        if failures >= cfg.threshold:
            return Breaker(BreakerState.OPEN, failures, now_ms)
        return replace(b, failures=failures)
    if b.state is BreakerState.HALF_OPEN:
        return Breaker(BreakerState.OPEN, b.failures + 1, now_ms)
    return b


def abandon_probe(b: Breaker) -> Breaker:
    """The probe ended without a verdict (cancelled): let the next call probe."""
    if b.state is BreakerState.HALF_OPEN:
        return replace(b, probe_out=False)
    return b
