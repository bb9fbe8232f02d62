"""Whole REST list pages, each kept with the digest of the rows it was built from (pure, no I/O).

A follower's page rarely changes between two reads, yet building it means decoding every row's
head and joining ~0.6 MB. With a page kept here, a read first asks PostgreSQL for the page's
current digest (``sub_repo.page_digest``: one row back instead of 500) and answers with the kept
bytes when it is unchanged. A page found changed at its last build (an active follower's stats
move with every fill) is marked ``changing``: its next read builds at once instead of paying for a
digest check first, until a build finds it as it was. The cache is an LRU bounded by the bytes it
holds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Page:
    """A page's body, the digest of its rows, and whether it had changed since the page kept before it."""

    digest: str
    body: bytes
    changing: bool = False


class PageCache:
    """LRU of page key → :class:`Page`, holding at most ``max_bytes`` of bodies (0: disabled)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._pages: OrderedDict[Hashable, Page] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: Hashable) -> Page | None:
        """The page kept for ``key``, whatever its digest (the caller compares it with the rows' now)."""
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, key: Hashable, digest: str | None, body: bytes) -> None:
        """Keep ``body`` for ``key`` as built from rows with ``digest`` (None: nothing is kept)."""
        old = self._pages.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        if digest is None or len(body) > self.max_bytes:
            return
        self._pages[key] = Page(digest, body, changing=old is not None and old.digest != digest)
        self.bytes += len(body)
        while self.bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self.bytes -= len(evicted.body)
