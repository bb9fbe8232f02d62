"""Whole REST list pages, each kept with the digest of the rows it was built from (pure, no I/O).

A follower's page rarely changes between two reads, yet building it means decoding every row's
head and joining ~0.6 MB. With a page kept here, a read first asks PostgreSQL for the page's
current digest (``sub_repo.page_digest``: one row back instead of 500) and answers with the kept
bytes when it is unchanged. A page found changed at its last build (an active follower's stats
move with every fill) is marked ``changing``: its next read builds at once instead of paying for a
digest check first, until a build finds it as it was. A page also keeps each row's JSON by the row's
head (id, version, live stats), so a rebuild after one row changed reuses the other 499 as they were.
A kept page is gzipped on its first read by a client that accepts gzip, and kept so: a page that
changes with every read is never compressed, one that is read unchanged is compressed once.
The cache is an LRU bounded by the bytes it holds (body, rows and gzipped body).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from services.control import content_coding

_EMPTY: Mapping[Any, bytes] = {}


@dataclass(frozen=True, slots=True)
class Page:
    """A page's body, the digest of its rows, whether it had changed since the page kept before it,
    each row's JSON by the row's head, and the body gzipped (once asked for)."""

    digest: str
    body: bytes
    changing: bool = False
    rows: Mapping[Any, bytes] = field(default_factory=lambda: _EMPTY)
    gzipped: bytes | None = None

    @property
    def size(self) -> int:
        """Bytes this page holds (its rows' JSON is about as big as the body)."""
        return len(self.body) * (2 if self.rows else 1) + len(self.gzipped or b"")


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

    def gzipped(self, key: Hashable, page: Page) -> bytes:
        """``page.body`` gzipped: compressed on the first call and kept with the page while ``page`` is
        still the one kept for ``key``."""
        if page.gzipped is not None:
            return page.gzipped
        packed = content_coding.gzip(page.body)
        if self._pages.get(key) is page:
            self._pages[key] = replace(page, gzipped=packed)
            self.bytes += len(packed)
            self._evict()
        return packed

    def put(self, key: Hashable, digest: str | None, body: bytes, rows: Mapping[Any, bytes] = _EMPTY) -> None:
        """Keep ``body`` for ``key`` as built from rows with ``digest`` (None: nothing is kept), with
        ``rows`` (head → that row's JSON) for the next rebuild to reuse."""
        old = self._pages.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        page = Page(digest or "", body, changing=old is not None and old.digest != digest, rows=rows)
        if digest is None or page.size > self.max_bytes:
            return
        self._pages[key] = page
        self.bytes += page.size
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self.bytes -= evicted.size
