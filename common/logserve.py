"""Serving a durable log as a gRPC server stream: the one cursor grammar and the one error mapping every
service's ``Stream…`` RPC uses.

Cursors: ``""`` (only entries appended from now on), ``"0"`` (everything the log still keeps) or an entry id
``ms`` / ``ms-seq`` (resume strictly after it). Anything else is INVALID_ARGUMENT naming ``after_cursor``; a
log that cannot be read is UNAVAILABLE (the consumer reconnects from its cursor); any other failure INTERNAL
without internals in the message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import redis.exceptions

from common.streams import DurableLog, serve_log, serve_log_batches

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

CURSOR = re.compile(r"^(|0|\d{1,20}(-\d{1,20})?)$")


class InvalidCursor(ValueError):
    """A resume cursor that is not a durable-log position."""


def check_cursor(cursor: str) -> str:
    """``cursor`` when the log accepts it; :class:`InvalidCursor` otherwise."""
    if not CURSOR.match(cursor):
        raise InvalidCursor(f"after_cursor must be '', '0' or an entry id like '1700000000000-0', got {cursor[:40]!r}")
    return cursor


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping of a log stream's failures to gRPC status."""
    if isinstance(exc, InvalidCursor):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, redis.exceptions.ResponseError):
        return grpc.StatusCode.INVALID_ARGUMENT, "after_cursor: the log refused it"
    if isinstance(exc, redis.exceptions.RedisError | OSError):
        return grpc.StatusCode.UNAVAILABLE, "event log unavailable"
    return grpc.StatusCode.INTERNAL, "internal error"


async def _abort(context: Any, log_: DurableLog, consumer: str, exc: Exception) -> None:
    code, message = status_for(exc)
    if code is not grpc.StatusCode.INVALID_ARGUMENT:
        (log.error if code is grpc.StatusCode.INTERNAL else log.warning)(
            "log stream failed", extra={"log": log_.name, "consumer": consumer, "error": repr(exc)[:300]})
    await context.abort(code, message)


async def stream_log(context: Any, log_: DurableLog, after_cursor: str, consumer: str,
                     build: Callable[[str, bytes], T],
                     keep: Callable[[T], bool] | None = None) -> AsyncIterator[T]:
    """Every entry of ``log_`` after ``after_cursor`` as ``build(cursor, payload)`` (those ``keep`` accepts),
    forever, for a server-streaming handler (``async for item in stream_log(...): yield item``)."""
    try:
        async for item in serve_log(log_, check_cursor(after_cursor), build):
            if keep is None or keep(item):
                yield item
    except Exception as exc:  # noqa: BLE001 - mapped to a status
        await _abort(context, log_, consumer, exc)


async def stream_log_batches(context: Any, log_: DurableLog, after_cursor: str, consumer: str,
                             build: Callable[[str, bytes], T], pack: Callable[[list[T]], R],
                             max_items: int) -> AsyncIterator[R]:
    """:func:`stream_log` in the batches the entries were ready in (``pack`` of at most ``max_items``)."""
    try:
        async for item in serve_log_batches(log_, check_cursor(after_cursor), build, pack, max_items):
            yield item
    except Exception as exc:  # noqa: BLE001 - mapped to a status
        await _abort(context, log_, consumer, exc)
