"""Guard's coordinator's counters."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GuardStats:
    """Counters of the coordinator."""

    ticks: int = 0
    unchanged_ticks: int = 0
    quiet_ticks: int = 0
    stale_ticks: int = 0
    bad_ticks: int = 0
    ignored_ticks: int = 0
    replays_refused: int = 0
    held: int = 0
    resolved_cancelled: int = 0
    order_events: int = 0
    repeated_events: int = 0
    exits_created: int = 0
    exits_cancelled: int = 0
    reloads: int = 0
    resyncs: int = 0
    load_s: float = 0.0
    loaded: int = 0
    marks_recovered: int = 0  # trailing marks lifted at start-up by the tick log (mark_recovery)
    marks_log_trimmed: int = 0  # 1: the start-up found the tick log trimmed past the marks cursor (some rises lost)
    tick_lag_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))  # every 16th tick

    def summary(self) -> dict[str, Any]:
        """Counters and lag percentiles for the periodic stats log."""
        lags = sorted(self.tick_lag_ms)
        out: dict[str, Any] = {k: v for k, v in vars(self).items() if isinstance(v, int | float)}
        if lags:
            out["tick_lag_p50_ms"] = round(lags[len(lags) // 2], 2)
            out["tick_lag_p99_ms"] = round(lags[min(len(lags) - 1, len(lags) * 99 // 100)], 2)
        return out
