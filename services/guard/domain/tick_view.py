"""Reading a PriceTick: its prices per source and whether it may fire anything (pure); :class:`TickInfo`, the
tick behind a change, carried to the events it causes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from common.bands import AssetBand
from common.decimals import parse_decimal
from common.memo import Memo
from services.guard.domain.trigger_index import Band, Prices
from services.guard.domain.trigger_model import Source
from tradingtools.market.v1 import market_pb2 as mpb

RESOLVED = mpb.TICK_KIND_MARKET_RESOLVED
_SOURCE_INDEX = {Source.BEST_BID: 0, Source.MID: 1, Source.LAST_TRADE: 2}  # order of a tick's raw prices


class BadTick(ValueError):
    """A tick whose prices do not parse or are out of [0, 1]."""


class TickView(NamedTuple):
    """What guard takes from one tick."""

    asset_id: str
    condition_id: str
    prices: Prices
    stale: bool
    resolved: bool
    winning_asset_id: str
    venue_time_ms: int
    received_time_ns: int


# Prices sit on a tick grid, so few distinct strings recur: parse each once.
PARSED: Memo[str, Decimal] = Memo(4096)
_PARSED_HOT = PARSED.hot
_ZERO = Decimal(0)
_ONE = Decimal(1)


def _price(raw: str, name: str) -> Decimal | None:
    """The price, or None when absent. A 0 (a last trade ingest read as "0", which it accepts in [0, 1]) is no price:
    no level or trade is priced 0, and the tick's other prices still count."""
    if not raw:
        return None
    value = _PARSED_HOT.get(raw)
    if value is None:
        value = PARSED.get(raw)
    if value is not None:
        return value or None
    try:
        value = parse_decimal(raw)
    except ValueError as exc:
        raise BadTick(f"{name}: {exc}") from None
    if not _ZERO <= value <= _ONE:
        raise BadTick(f"{name} out of [0, 1]: {raw}")
    PARSED.put(raw, value)
    return value or None


def replay_refused(observed_ns: int, now_ns: int, max_age_ns: int, band: AssetBand | None, margin_ns: int = 0,
                   after_ns: int = 0) -> bool:
    """A price ingest's gate left out when it came (``observed_ns``) and sends again once a band reflecting a trigger
    change reached it (``services.ingest.leftout``) is left alone (True) unless it came ``margin_ns`` (the clocks'
    possible difference) after the asset's latest trigger arm or change (the latest of ``band.changes``, kept after
    that trigger fired or went while its source has others), after ``after_ns`` (guard loaded its triggers, or read
    the asset's stored book: prices ingest does not know guard has seen), and within ``max_age_ns``. Read, it then
    fires what reading it in time would have, and nothing armed after it; left alone, a crossing may be missed, as
    without the second look."""
    if now_ns - observed_ns > max_age_ns or observed_ns < after_ns:
        return True
    return band is not None and bool(band.changes) and band.changes[-1] + margin_ns > observed_ns


def is_stale(tick: mpb.PriceTick, now_ns: int, max_age_ns: int) -> bool:
    """True when the tick must not fire: flagged stale by ingest, a STALE tick, or older than ``max_age_ns``.

    The age is measured from when ingest received the frame, so ticks replayed from the durable
    log after a restart never fire on an old price.
    """
    if tick.stale or tick.kind == mpb.TICK_KIND_STALE:
        return True
    if tick.received_time_ns <= 0:
        return True
    return now_ns - tick.received_time_ns > max_age_ns


# the kinds of tick that carry a book's prices (not STALE, TICK_SIZE_CHANGE or MARKET_RESOLVED)
PRICE_KINDS = frozenset({mpb.TICK_KIND_PRICE_CHANGE, mpb.TICK_KIND_BEST_BID_ASK, mpb.TICK_KIND_BOOK,
                         mpb.TICK_KIND_LAST_TRADE_PRICE})


def prices_of(tick: mpb.PriceTick) -> Prices:
    """The tick's prices per source; raises BadTick on a malformed one."""
    return Prices(best_bid=_price(tick.best_bid, "best_bid"), mid=_price(tick.mid, "mid"),
                  last_trade=_price(tick.last_trade_price, "last_trade_price"))


def view(tick: mpb.PriceTick, now_ns: int, max_age_ns: int) -> TickView:
    """Parse a tick; raises BadTick on a malformed price."""
    if not tick.asset_id:
        raise BadTick("asset_id is empty")
    return TickView(
        asset_id=tick.asset_id,
        condition_id=tick.condition_id,
        prices=prices_of(tick),
        stale=is_stale(tick, now_ns, max_age_ns),
        resolved=tick.kind == RESOLVED,
        winning_asset_id=tick.winning_asset_id,
        venue_time_ms=tick.venue_time_ms,
        received_time_ns=tick.received_time_ns,
    )


def known_prices(raw: tuple[str, str, str]) -> list[Decimal | None] | None:
    """The tick's prices (best bid, mid, last trade; None when absent or 0) when each is known valid, else None
    (not parsed yet, or malformed: the full path decides)."""
    prices: list[Decimal | None] = []
    known = _PARSED_HOT.get
    for text in raw:
        if not text:
            prices.append(None)
            continue
        price = known(text)
        if price is None:
            return None
        prices.append(price or None)
    return prices


def inside_band(prices: list[Decimal | None], band: Band) -> bool:
    """True when each watched price is inside its band."""
    for source, lo, hi, inclusive in band:
        price = prices[_SOURCE_INDEX[source]]
        if price is None:
            continue
        if (lo is not None and price <= lo) or (hi is not None and (price > hi or (price == hi and not inclusive))):
            return False
    return True


@dataclass(frozen=True, slots=True)
class TickInfo:
    """The price that caused a change, for the events."""

    price: Decimal | None = None
    venue_time_ms: int = 0
    received_time_ns: int = 0
    trace: Any = None  # the tick's common.v1.TraceContext, when it carried one
    handled_ns: int = 0  # when guard evaluated the tick (stage timings)
