"""Items a consumer set aside (:class:`common.consumer.ResumableConsumer`'s ``dead_letter``), kept in a Redis Stream
for an operator, with a CRITICAL alert. docs/operations.md ("Dead letters") says what each stream's items mean;
``python -m tools.deadletters`` prints them decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from common.alerts import AlertKind, Severity, raise_alert
from common.cancel import reraise_if_cancelling

log = logging.getLogger(__name__)

# the entry's own fields and raise_alert's parameters: a describe's fields of those names are dropped
_RESERVED_FIELDS = frozenset({"cursor", "error", "p", "kind", "key", "summary", "dedupe_id", "severity", "outbox"})


class DeadLetters:
    """Dead-lettered items in a Redis Stream ``tt:dlq:<consumer>`` for an operator to inspect.

    ``describe(item)``, when given, says what setting that item aside means (e.g. the router's: were the trade's
    copies sent): fields kept with the entry and carried by the alert, whose ``effect`` (a sentence) also ends the
    alert's summary. A ``describe`` that fails costs only those fields."""

    def __init__(self, redis: aioredis.Redis, consumer: str, encode: Callable[[Any], bytes],
                 describe: Callable[[Any], Awaitable[Mapping[str, str]]] | None = None) -> None:
        self.redis = redis
        self.key = f"tt:dlq:{consumer}"
        self.encode = encode
        self.describe = describe

    async def __call__(self, cursor: str, item: Any, error: BaseException) -> None:
        """Record one dead-lettered item (and raise the DEAD_LETTERED alert: an item went without being handled)."""
        extra = await self._described(item)
        summary = f"{self.key}: an item failed every attempt and was set aside; the consumer went on past it"
        if extra.get("effect"):
            summary = f"{summary}. {extra['effect']}"
        raise_alert(AlertKind.DEAD_LETTERED, f"dead_letter:{self.key}", summary,
                    dedupe_id=f"dead_letter:{self.key}:{cursor}", severity=Severity.CRITICAL, outbox=None,
                    **{**extra, "cursor": cursor, "error": repr(error)[:300]})
        await self.redis.xadd(self.key, {**{k.encode(): v.encode() for k, v in extra.items()},
                                         b"cursor": cursor.encode(), b"error": repr(error)[:1000].encode(),
                                         b"p": self.encode(item)}, maxlen=100_000, approximate=True)

    async def _described(self, item: Any) -> dict[str, str]:
        if self.describe is None:
            return {}
        try:
            fields = {str(k): str(v) for k, v in (await self.describe(item)).items()}
            return {k: v for k, v in fields.items() if k not in _RESERVED_FIELDS}
        except Exception as exc:  # noqa: BLE001 - the dead letter is recorded anyway
            reraise_if_cancelling(exc)
            log.warning("dead letter not described", extra={"dead_letters": self.key, "error": repr(exc)[:300]})
            return {}
