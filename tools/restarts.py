"""When the supervisor restarts a program that exited, and when it gives up on it (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import env_float_seconds, env_int


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When and how fast crashed programs come back."""

    min_uptime_s: float = 5.0
    max_fast_crashes: int = 5
    base_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    stop_grace_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RestartPolicy:
        """``TT_STACK_MIN_UPTIME_S``, ``TT_STACK_MAX_FAST_CRASHES``, ``TT_STACK_BACKOFF_S``,
        ``TT_STACK_MAX_BACKOFF_S``, ``TT_STACK_STOP_GRACE_S``."""
        return cls(
            min_uptime_s=env_float_seconds(env, "TT_STACK_MIN_UPTIME_S", 5.0),
            max_fast_crashes=env_int(env, "TT_STACK_MAX_FAST_CRASHES", 5, minimum=1),
            base_backoff_s=env_float_seconds(env, "TT_STACK_BACKOFF_S", 0.5, minimum=0.01),
            max_backoff_s=env_float_seconds(env, "TT_STACK_MAX_BACKOFF_S", 30.0, minimum=0.01),
            stop_grace_s=env_float_seconds(env, "TT_STACK_STOP_GRACE_S", 10.0, minimum=0.1),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a program exited."""

    give_up: bool
    delay_s: float
    fast_crashes: int


def after_exit(policy: RestartPolicy, fast_crashes: int, uptime_s: float) -> Decision:
    """Restart (after a backoff) or give up, given the crash streak so far and this run's uptime."""
    streak = fast_crashes + 1 if uptime_s < policy.min_uptime_s else 0
    if streak >= policy.max_fast_crashes:
        return Decision(give_up=True, delay_s=0.0, fast_crashes=streak)
    delay = min(policy.base_backoff_s * (2 ** streak), policy.max_backoff_s)
    return Decision(give_up=False, delay_s=delay, fast_crashes=streak)
