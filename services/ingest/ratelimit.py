"""Token bucket for the REST pollers (pure: the caller passes the clock)."""

from __future__ import annotations


class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``burst`` banked; :meth:`reserve` says how long to wait."""

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now_s
        self.paused_until = 0.0

    def _refill(self, now_s: float) -> None:
        if now_s > self.updated:
            self.tokens = min(self.burst, self.tokens + (now_s - self.updated) * self.rate)
            self.updated = now_s

    def reserve(self, now_s: float) -> float:
        """Take one token now and return the seconds to wait before using it (0 when available)."""
        self._refill(now_s)
        self.tokens -= 1.0
        wait = 0.0 if self.tokens >= 0 else -self.tokens / self.rate
        return max(wait, self.paused_until - now_s, 0.0)

    def pause(self, until_s: float) -> None:
        """Hold every request until ``until_s`` (a 429 told us to back off); the bank empties."""
        self.paused_until = max(self.paused_until, until_s)
        self.tokens = min(self.tokens, 0.0)
