"""Price bands: guard tells ingest, per watched asset, the prices inside which no armed trigger can act, so ingest
appends to the tick log only the ticks that may matter (pure: encoding, the inside check, the narrowing).

Keys (written by guard, read by ingest):
- ``tt:guard:bands`` HASH asset id → :func:`encode` of its :class:`AssetBand` (every asset with an armed trigger).
- ``tt:guard:bands:meta`` STRING, JSON :class:`BandMeta` of the hash (expires: guard renews it every beat).
- channel ``tt:guard:bands:changed``: a JSON :class:`BandMessage` per change (written in the same MULTI as the
  hash and the meta, so the messages come in the order the hash changed) and one per beat (no bands).

A band per price source of the asset's triggers: ``lo`` (a price at or below it may fire a stop), ``hi`` (a
price above it, or equal to it unless ``hi_inclusive``, may fire a take-profit, activate a trailing stop or
lift its high-water mark), ``trail``, the smallest trail of its trailing stops, and ``tp``, the lowest
take-profit, so that a reader that forwarded a fresh price above ``hi`` can narrow the band to one inside guard's
once guard has read that price, whether guard read it in time to fire on it or too late (:func:`after_rise`), and
``armed_ns``, when the latest trailing stop of the asset and source was armed or changed (guard's clock, 0: not
since guard started): guard lifts by a price stamped before it the marks of the stops armed before the price but
not of the later ones, so the reader raises only ``lo`` by such a price (:func:`after_older_rise`).
Per asset, ``changes``: when its latest triggers were armed or changed (guard's clock, at most
:data:`CHANGES_KEPT`, oldest first). Until a band reflecting a change reaches the reader, the reader filters with
the band from before it: a price that crossed the new trigger and came back meanwhile was left out. A reader that
finds a change time it had not seen checks the prices it left out since against the new band (``services.ingest.
tickgate``).
``through_ns``: guard has read every tick stamped up to it when it wrote the bands (ingest's gate stamps ticks in
increasing order; a tick forwarded later may still change them). A new guard process's first bands carry the
stamp of the newest tick in the log when it took its cursor, the ticks it will never read (1 when the log was
empty); 0 says nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

import orjson

from common.decimals import fmt, parse_decimal

BANDS_KEY = "tt:guard:bands"
BANDS_META_KEY = "tt:guard:bands:meta"
BANDS_CHANNEL = "tt:guard:bands:changed"

BEST_BID, MID, LAST_TRADE = 0, 1, 2  # a source's index among a tick's prices (best bid, mid, last trade)
CHANGES_KEPT = 4  # an asset's latest trigger changes a band carries
_ONE = Decimal(1)


class SourceBand(NamedTuple):
    """The band of one price source (None: unbounded; ``trail``: None without trailing stops; ``tp``: the lowest
    take-profit price, None without take-profits or without trailing stops: :func:`after_rise` needs it only with
    a trail; ``armed_ns``: a price stamped before it lifts only the marks of the stops armed before the price, see
    the module docstring)."""

    source: int
    lo: Decimal | None
    hi: Decimal | None
    hi_inclusive: bool
    trail: Decimal | None = None
    tp: Decimal | None = None
    armed_ns: int = 0


class AssetBand(NamedTuple):
    """An asset's bands; ``holds``: triggers crossed on a stale price are held, a fresh tick releases them;
    ``changes``: when its latest triggers were armed or changed (see the module docstring)."""

    sources: tuple[SourceBand, ...]
    holds: bool = False
    changes: tuple[int, ...] = ()


def outside(band: SourceBand, price: Decimal) -> int:
    """1 when ``price`` is above ``hi`` (or at an exclusive ``hi``), -1 when at or below ``lo``, else 0. A band
    whose ``lo`` is above its ``hi`` (a stop below the price and a trailing mark or take-profit under it) has every
    price outside: one above ``hi`` is a rise all the same (it lifts trailing marks), so that side wins."""
    lo, hi = band.lo, band.hi
    if hi is not None and (price > hi or (price == hi and not band.hi_inclusive)):
        return 1
    if lo is not None and price <= lo:
        return -1
    return 0


def after_rise(band: SourceBand, price: Decimal) -> SourceBand:
    """A band inside guard's once guard has read a fresh ``price`` above ``band``, in time to fire on it or not:
    trailing stops were activated or lifted to the price at most (a price read too late to fire on still lifts
    marks), so their stop levels are at most ``price x (1 - trail)`` and their lowest mark at least ``price``;
    take-profits at or below the price fired, or were held (read too late), so the top is at most the lowest
    take-profit (exclusive) when that is not above the price, else the price (inclusive). Unchanged when the price
    is not above the band or the band has no trailing stop (take-profits firing only widen it)."""
    if outside(band, price) <= 0:
        return band
    if band.trail is None:
        return band
    level = price * (_ONE - band.trail)  # the engine's stop level expression (services.guard.domain.trailing)
    lo = level if band.lo is None or level > band.lo else band.lo
    tp = band.tp
    if tp is not None and tp <= price:
        return band._replace(lo=lo, hi=tp, hi_inclusive=False)
    return band._replace(lo=lo, hi=price, hi_inclusive=True)


def after_older_rise(band: SourceBand, price: Decimal) -> SourceBand:
    """:func:`after_rise` for a fresh ``price`` stamped before the band's ``armed_ns``: guard lifts by it the trailing
    stops armed before the price (their stop levels rise as in :func:`after_rise`), not the later ones (their marks
    and activation prices stay where they were), so only ``lo`` is raised."""
    lo = after_rise(band, price).lo
    return band if lo == band.lo else band._replace(lo=lo)


def _num(value: Decimal | None) -> str:
    return "" if value is None else fmt(value)


def _dec(text: str) -> Decimal | None:
    return None if text == "" else parse_decimal(text)


def encode(band: AssetBand) -> str:
    """``h`` or ``-`` (held or not), ``@`` and the change times comma-separated when there are any, then
    ``;source,lo,hi,inclusive,trail,tp`` per source (empty: None), and ``,armed_ns`` when not 0."""
    flag = "h" if band.holds else "-"
    parts = [f"{flag}@{','.join(map(str, band.changes))}" if band.changes else flag]
    for s in band.sources:
        armed = f",{s.armed_ns}" if s.armed_ns else ""
        parts.append(f"{s.source},{_num(s.lo)},{_num(s.hi)},{1 if s.hi_inclusive else 0},{_num(s.trail)},"
                     f"{_num(s.tp)}{armed}")
    return ";".join(parts)


def decode(text: str) -> AssetBand:
    """The band :func:`encode` wrote; raises ValueError on anything else. A source without ``tp`` (written before
    it was) is read with ``tp`` at ``hi``: any take-profit may lie just above it."""
    head, *rest = text.split(";")
    head, at, listed = head.partition("@")
    if head not in ("h", "-"):
        raise ValueError(f"band flags: {head!r}")
    changes = _changes(listed) if at else ()
    sources = []
    for part in rest:
        fields = part.split(",")
        if len(fields) not in (5, 6, 7) or fields[0] not in ("0", "1", "2") or fields[3] not in ("0", "1"):
            raise ValueError(f"band source: {part!r}")
        trail = _dec(fields[4])
        if trail is not None and not 0 < trail < 1:
            raise ValueError(f"band trail out of (0, 1): {part!r}")
        hi = _dec(fields[2])
        tp = _dec(fields[5]) if len(fields) >= 6 else hi
        armed = fields[6] if len(fields) == 7 else "0"
        if not armed.removeprefix("-").isdigit() or not armed.isascii():
            raise ValueError(f"band armed_ns: {part!r}")
        sources.append(SourceBand(int(fields[0]), _dec(fields[1]), hi, fields[3] == "1", trail, tp, int(armed)))
    return AssetBand(tuple(sources), head == "h", changes)


def _changes(listed: str) -> tuple[int, ...]:
    items = listed.split(",")
    if not 0 < len(items) <= CHANGES_KEPT or not all(i.isascii() and i.isdigit() for i in items):
        raise ValueError(f"band changes: {listed!r}")
    out = tuple(int(i) for i in items)
    if list(out) != sorted(set(out)):
        raise ValueError(f"band changes not in order: {listed!r}")
    return out


def kept_changes(changes: tuple[int, ...], at_ns: int) -> tuple[int, ...]:
    """``changes`` with a change at ``at_ns`` (ignored when not later than the latest: the same arm again), the
    latest :data:`CHANGES_KEPT` of them."""
    if at_ns <= 0 or (changes and at_ns <= changes[-1]):
        return changes
    return (*changes, at_ns)[-CHANGES_KEPT:]


def merged_changes(*lists: tuple[int, ...]) -> tuple[int, ...]:
    """The latest :data:`CHANGES_KEPT` of several lists' change times, oldest first."""
    return tuple(sorted(set().union(*lists))[-CHANGES_KEPT:])


@dataclass(frozen=True, slots=True)
class BandMeta:
    """Which guard process wrote the hash (``epoch``), its last message (``seq``), ``through_ns`` (see the module
    docstring) and ``lease_s``: how long bands stay trusted without a message from that guard."""

    epoch: str
    seq: int
    through_ns: int
    lease_s: float

    def to_json(self) -> bytes:
        return orjson.dumps({"epoch": self.epoch, "seq": self.seq, "through_ns": self.through_ns,
                             "lease_s": self.lease_s})


@dataclass(frozen=True, slots=True)
class BandMessage:
    """One ``tt:guard:bands:changed`` message: ``bands`` changed (asset → encoded band, "" = no trigger left);
    ``reset``: the hash was rewritten (read it again)."""

    meta: BandMeta
    bands: dict[str, str]
    reset: bool = False

    def to_json(self) -> bytes:
        m = self.meta
        return orjson.dumps({"epoch": m.epoch, "seq": m.seq, "through_ns": m.through_ns, "lease_s": m.lease_s,
                             "bands": self.bands, "reset": self.reset})


def parse_meta(data: str | bytes | None) -> BandMeta | None:
    """The meta key's value (None when absent or not understood)."""
    if not data:
        return None
    try:
        msg = orjson.loads(data)
        return BandMeta(str(msg["epoch"]), int(msg["seq"]), int(msg["through_ns"]), float(msg["lease_s"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def parse_message(data: str | bytes) -> BandMessage | None:
    """A channel message (None when not understood: the reader then reads the hash again)."""
    meta = parse_meta(data)
    if meta is None:
        return None
    msg = orjson.loads(data)
    bands = msg.get("bands")
    if not isinstance(bands, dict) or not all(isinstance(v, str) for v in bands.values()):
        return None
    return BandMessage(meta, bands, bool(msg.get("reset")))
