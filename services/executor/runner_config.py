"""Timing and retry knobs of the order runners (:class:`~services.executor.order_runner.OrderRunner`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.retry import Backoff


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """Timing and retry knobs of the runners."""

    max_submit_attempts: int = 4
    retry_backoff: Backoff = field(default_factory=lambda: Backoff(0.1, 2.0))
    breaker_wait_s: float = 5.0
    poll_initial_s: float = 0.2
    poll_max_s: float = 2.0
    settle_interval_s: float = 1.0
    lost_after: int = 3
    placed_lost_after_s: float = 300.0  # a placed order not found for this long (and lost_after queries): LOST
    resubmit_max_age_s: float = 30.0
    max_inflight: int = 2048
    max_status_queries: int = 256  # status queries of placed orders in flight at once
    # While a burst of POSTs is still going out (more than answer_defer_min_pending pending), answers
    # wait (up to answer_defer_s) before being processed and persisted, so the last POST of a
    # 1,000-order fan-out does not queue behind them; while more than that many are not even written,
    # venues that can hold answers keep them unread (parsed only after the burst's last POST).
    answer_defer_s: float = 1.0
    answer_defer_min_pending: int = 32
    gc_pause_max_s: float = 0.0  # automatic garbage collection off while a burst is written, this long at most
