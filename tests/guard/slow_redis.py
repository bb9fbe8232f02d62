"""A Redis client whose MULTIs are slow, for band feed tests (what a feed writes after a read lands later)."""

from __future__ import annotations

import asyncio
from typing import Any


class SlowPipelines:
    """Wraps a Redis client: its pipelines' ``execute`` takes ``delay_s`` longer; everything else is the client's."""

    def __init__(self, client: Any, delay_s: float) -> None:
        self._client = client
        self._delay_s = delay_s

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._client.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def slow_execute(*a: Any, **kw: Any) -> Any:
            await asyncio.sleep(self._delay_s)
            return await execute(*a, **kw)

        pipe.execute = slow_execute
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
