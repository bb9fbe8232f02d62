"""The hand-written pieces ``bench compare`` found not worth keeping, kept here only so the comparison
can be run again: the PriceTick hand encoder (was ``services/ingest/tickwire.py`` and ``BookState.tick_bytes``,
replaced by ``BookState.price_tick(...).SerializeToString()``). Not used by any service. (``Slots``, retired
here once, is the executor's in-flight bound again: ``services/executor/burst_gate.py``.)"""

from __future__ import annotations

from decimal import Decimal

from common.decimals import fmt
from common.protowire import varint
from services.ingest.books import BookState
from tradingtools.market.v1 import market_pb2 as mpb


def _field(number: int, text: str) -> bytes:
    if not text:
        return b""
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


class _Memo:
    """Field bytes of a decimal per value, for one field number."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.values: dict[Decimal, bytes] = {}

    def __call__(self, value: Decimal | None) -> bytes:
        if value is None:
            return b""
        out = self.values.get(value)
        if out is None:
            out = self.values[value] = _field(self.number, fmt(value))
        return out


class TickEncoder:
    """``BookState.tick_bytes`` as it was: PriceTick bytes written field by field from memos."""

    _TWO = Decimal(2)

    def __init__(self, state: BookState) -> None:
        self.state = state
        self.heads: dict[tuple[str, str], bytes] = {}
        self.kinds = {value: b"\x18" + varint(value) if value else b"" for value in mpb.TickKind.values()}
        self.bid, self.ask, self.last, self.tick = _Memo(4), _Memo(5), _Memo(7), _Memo(8)
        self.mids: dict[tuple[Decimal, Decimal], bytes] = {}
        self._stamp_key: tuple[int, int] = (-1, -1)
        self._stamp = b""

    def _mid(self, bid: Decimal | None, ask: Decimal | None) -> bytes:
        if bid is None or ask is None:
            return b""
        out = self.mids.get((bid, ask))
        if out is None:
            out = self.mids[(bid, ask)] = _field(6, fmt((bid + ask) / self._TWO))
        return out

    def _stamps(self, venue_ms: int, received_ns: int) -> bytes:
        if (venue_ms, received_ns) != self._stamp_key:
            self._stamp_key = (venue_ms, received_ns)
            self._stamp = ((b"\x58" + varint(venue_ms) if venue_ms else b"")
                           + (b"\x60" + varint(received_ns) if received_ns else b""))
        return self._stamp

    def __call__(self, asset_id: str, kind: int, received_ns: int) -> bytes:
        book = self.state.books[asset_id]
        head = self.heads.get((asset_id, book.condition_id))
        if head is None:
            head = self.heads[(asset_id, book.condition_id)] = _field(1, asset_id) + _field(2, book.condition_id)
        if book.synced:
            bids, asks = book._bid_px, book._ask_px
            bid = bids[-1] if bids else None
            ask = asks[0] if asks else None
        else:
            bid, ask = book.hint_bid, book.hint_ask
        return b"".join((
            head, self.kinds[kind], self.bid(bid), self.ask(ask), self._mid(bid, ask), self.last(book.last_trade_price),
            self.tick(book.tick_size), b"\x48\x01" if book.stale else b"",
            _field(10, book.winner) if kind == mpb.TICK_KIND_MARKET_RESOLVED else b"",
            self._stamps(book.venue_ms, received_ns)))
