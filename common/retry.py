"""Retry and backoff as pure functions (randomness passed in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter: half the ceiling fixed, half random."""

    base_s: float = 0.1
    cap_s: float = 30.0

    def delay(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (0-based); ``rand`` is uniform in [0, 1)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        if not 0.0 <= rand <= 1.0:
            raise ValueError("rand must be in [0, 1]")
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempt, 62)))
        return ceiling / 2 + ceiling / 2 * rand
