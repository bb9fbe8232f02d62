"""The data-api client: a leader's activity / trades rows in a time window, every page of it (on
:class:`common.restget.RestGetter`, as the CLOB REST client :mod:`common.clob_rest` is)."""

from __future__ import annotations

import logging
import time
from typing import Any

from common.restget import RestGetter
from services.ingest import dataapi
from services.ingest.model import BAD_FIELD, ParseError, seconds_as_ms

log = logging.getLogger(__name__)
ACTIVITY_MAX_LIMIT = 500  # /activity clamps ``limit`` to this
TRADES_MAX_LIMIT = 10_000  # /trades answers up to this many rows at once
MAX_CURSOR_PAGES = 1000  # a v2 cursor chain longer than this is a server going round in circles


class DataApi:
    """A leader's activity rows in a time window, every page of it (``/activity`` or ``/trades``)."""

    def __init__(self, getter: RestGetter, base_url: str, *, endpoint: str = "activity", page_limit: int = 500,
                 max_offset: int = 5000) -> None:
        self.getter = getter
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.page_limit = page_limit
        self.max_offset = max_offset

    async def window(self, user: str, start_s: int, end_s: int) -> tuple[list[Any], int]:
        """Every row of ``user`` with ``start_s <= timestamp <= end_s`` and the receive time of the last page."""
        if self.endpoint == "trades":
            return await self._trades(user, start_s, end_s)
        return await self._activity(user, start_s, end_s)

    async def _activity(self, user: str, start_s: int, end_s: int) -> tuple[list[Any], int]:
        rows: list[Any] = []
        offset, received_ns, cursor, pages = 0, time.time_ns(), "", 0
        limit = min(self.page_limit, ACTIVITY_MAX_LIMIT)  # the server clamps: a bigger one ends every window early
        while True:
            params: dict[str, Any] = {"user": user, "start": start_s, "end": end_s, "limit": limit,
                                      "sortBy": "TIMESTAMP", "sortDirection": "ASC",
                                      "cb": int(time.time() * 1000)}
            if cursor:
                params["cursor"] = cursor
            else:
                params["offset"] = offset
            page = await self.getter.get(f"{self.base_url}/activity", params)
            received_ns = page.received_ns
            batch = dataapi.rows_of(page.body)
            used, cursor = cursor, dataapi.next_cursor(page.body)
            if cursor:
                if cursor == used:  # the same page again: a server loop would page this window forever
                    raise ParseError(BAD_FIELD, "next_cursor repeats the cursor of its own page")
                rows.extend(batch)
                pages += 1
                if pages > MAX_CURSOR_PAGES:  # cursors that never end: the window is not complete, try it later
                    raise ParseError(BAD_FIELD, f"more than {MAX_CURSOR_PAGES} pages of cursors")
                continue
            if len(batch) < limit:
                rows.extend(batch)
                return rows, received_ns
            # Oldest first: the next page starts at this page's last second (its rows come again whole), not
            # at an offset. Offsets move with the list: a row indexed late (data-api lags the chain) shifted
            # the rest, and the row at the page edge came back on the next page as a second occurrence of
            # its fill, i.e. a second trade id and a second copy.
            last_ts = _last_ts(batch)
            if last_ts is not None and last_ts > start_s:
                rows.extend(r for r in batch if (_ts(r) or 0) < last_ts)
                start_s, offset = last_ts, 0
                continue
            rows.extend(batch)  # a whole page inside one second: through it by offset
            offset += len(batch)
            if offset + limit > self.max_offset:
                log.error("data-api window cannot advance", extra={"user": user, "start": start_s})
                return rows, received_ns

    async def _trades(self, user: str, start_s: int, end_s: int) -> tuple[list[Any], int]:
        rows: list[Any] = []
        offset, received_ns, by_offset, limit, window_end_s = 0, time.time_ns(), False, self.page_limit, end_s
        while True:
            params: dict[str, str | int] = {"user": user, "takerOnly": "false", "limit": limit,
                                            "offset": offset, "start": start_s, "end": end_s,
                                            "cb": int(time.time() * 1000)}
            page = await self.getter.get(f"{self.base_url}/trades", params)
            received_ns = page.received_ns
            batch = dataapi.rows_of(page.body)
            # A row without a usable timestamp decides nothing (read as 0 it ended the window after its page, and
            # the cursor moved past the older pages); it is kept for the parser, which counts and drops it.
            stamps = [_ts(r) for r in batch]
            known = [ts for ts in stamps if ts is not None]
            if not by_offset and any(ts > end_s for ts in known):
                # A server that ignores ``end``: pages by offset would shift when a row lands in front of the
                # part read (the leader trades again, a late row is indexed), and the row at a page edge would
                # come back as a second occurrence (a second copy). The window is read again as one answer.
                rows, offset, by_offset, limit, end_s = [], 0, True, max(limit, TRADES_MAX_LIMIT), window_end_s
                continue
            if len(batch) < limit or min(known, default=start_s) < start_s:
                rows.extend(r for r, ts in zip(batch, stamps, strict=True) if ts is None or start_s <= ts <= end_s)
                return rows, received_ns
            # Newest first: the next page ends at this page's oldest second (its rows come again whole), not
            # at an offset: a trade made while paging shifted the list, and the row at the page edge came
            # back on the next page as a second occurrence (a second trade id, a second copy).
            oldest = known[-1] if known else None
            if not by_offset and oldest is not None and oldest < end_s:
                rows.extend(r for r, ts in zip(batch, stamps, strict=True) if ts is None or oldest < ts)
                end_s, offset = oldest, 0
                continue
            # a whole page inside one second, or a server that ignores ``end``: by offset
            rows.extend(r for r, ts in zip(batch, stamps, strict=True) if ts is None or start_s <= ts <= end_s)
            offset += len(batch)
            if offset + limit > self.max_offset:
                log.error("data-api window cannot advance", extra={"user": user, "end": end_s})
                return rows, received_ns


def _ts(row: Any) -> int | None:
    """The row's timestamp in seconds as the parser reads it (a number or a numeric string); None if unusable."""
    if not isinstance(row, dict):
        return None
    try:
        return seconds_as_ms(row, "timestamp") // 1000
    except ParseError:
        return None


def _last_ts(batch: list[Any]) -> int | None:
    """The timestamp of the last row that has a usable one."""
    return next((ts for ts in map(_ts, reversed(batch)) if ts is not None), None)
