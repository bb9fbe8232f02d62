"""Whether the tick log still holds everything after the saved marks cursor (``MarkReplaySource.trimmed``), from
``XINFO STREAM`` as Redis 6.2 and Redis 7 answer it (recorded reply shapes; a real Redis 6.2 is in
``test_mark_recovery.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from common.streams import PRICE_TICKS, DurableLog
from services.guard.adapters.mark_replay import MarkReplaySource

CURSOR = "1700000000100-0"


class _Answers:
    """A pipelined Redis client answering every command with one reply."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    async def call(self, *_args: Any) -> Any:
        return self.reply


def _redis6(first: bytes | None) -> list[Any]:
    return [b"length", 2, b"radix-tree-keys", 1, b"radix-tree-nodes", 2, b"last-generated-id", b"1700000000300-0",
            b"groups", 0, b"first-entry", None if first is None else [first, [b"p", b"x"]],
            b"last-entry", [b"1700000000300-0", [b"p", b"x"]]]


def _redis7(first: bytes, deleted: bytes = b"0-0") -> list[Any]:
    return [b"length", 2, b"radix-tree-keys", 1, b"radix-tree-nodes", 2, b"last-generated-id", b"1700000000300-0",
            b"max-deleted-entry-id", deleted, b"entries-added", 3, b"recorded-first-entry-id", first, b"groups", 0,
            b"first-entry", [first, [b"p", b"x"]], b"last-entry", [b"1700000000300-0", [b"p", b"x"]]]


@pytest.mark.parametrize(("reply", "trimmed"), [
    (_redis6(b"1700000000000-0"), False),  # the cursor's entry is still there
    (_redis6(b"1700000000100-0"), False),  # it is the first
    (_redis6(b"1700000000200-0"), True),  # the cap dropped it
    (_redis6(None), False),  # an empty log
    (_redis7(b"1700000000000-0"), False),
    (_redis7(b"1700000000200-0"), True),  # a trim does not move max-deleted-entry-id: the first entry tells
    (_redis7(b"1700000000000-0", deleted=b"1700000000150-0"), True),  # an XDEL after the cursor
    (_redis7(b"1700000000000-0", deleted=b"1700000000050-0"), False),  # one before it
])
async def test_trimmed_past_the_cursor(reply: list[Any], trimmed: bool) -> None:
    source = MarkReplaySource(_Answers(reply), DurableLog(None, PRICE_TICKS), None)  # type: ignore[arg-type]
    assert await source.trimmed(CURSOR) is trimmed
