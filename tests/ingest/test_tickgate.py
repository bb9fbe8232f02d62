"""Ingest's tick gate (pure): which top-of-book changes go to the tick log under guard's price bands."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.bands import AssetBand, BandMessage, BandMeta, SourceBand, encode
from services.ingest.tickgate import GateStats, TickGate, Top
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A, B = "asset-a", "asset-b"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE
# best bid: a stop-loss at 0.40, a take-profit at 0.60; mid: a trailing stop of 10% marked at 0.55
BAND = AssetBand((SourceBand(0, D("0.40"), D("0.60"), False), SourceBand(1, D("0.495"), D("0.55"), True, D("0.1"))))


def top(bid: str, ask: str = "0.52", *, stale: bool = False, last: str | None = None) -> Top:
    return (D(bid), D(ask), D(last) if last else None, D("0.01"), stale)


def gate(band: AssetBand | None = BAND, *, heartbeat_s: float = 10.0, lease_s: float = 5.0) -> TickGate:
    """A gate holding ``band`` for A (trusted from t = 0), which has already sent one fresh tick of A at t = 0."""
    g = TickGate(heartbeat_s=heartbeat_s)
    g.load(BandMeta("e", 1, 0, lease_s), {A: encode(band)} if band else {}, 0)
    assert g.admit(A, PRICE, top("0.50"), 1)
    g.stats = GateStats()
    return g


@pytest.mark.parametrize(("tick", "kind", "sent", "reason"), [
    (top("0.50"), PRICE, False, "filtered"),
    (top("0.41", "0.69"), PRICE, False, "filtered"),  # mid 0.55: at the trailing mark, inclusive
    (top("0.40"), PRICE, True, "outside"),  # at the stop-loss
    (top("0.60", "0.61"), PRICE, True, "outside"),  # at the take-profit
    (top("0.45", "0.66"), PRICE, True, "outside"),  # mid 0.555: above the trailing mark
    (top("0.44", "0.54"), PRICE, True, "outside"),  # mid 0.49: under the trailing stop's level
    (top("0.50", last="0.10"), PRICE, False, "filtered"),  # last trade: no trigger watches it
    (top("0.50", stale=True), PRICE, True, "first"),  # staleness flips
    (top("0.50"), mpb.TICK_KIND_STALE, True, "other_kinds"),
    (top("0.50"), mpb.TICK_KIND_MARKET_RESOLVED, True, "other_kinds"),
    (top("0.50"), mpb.TICK_KIND_TICK_SIZE_CHANGE, True, "other_kinds"),
    (top("0.50"), mpb.TICK_KIND_BOOK, False, "filtered"),
    (top("0.50"), mpb.TICK_KIND_BEST_BID_ASK, False, "filtered"),
])
def test_which_ticks_go_out(tick: Top, kind: int, sent: bool, reason: str) -> None:
    g = gate()
    assert bool(g.admit(A, kind, tick, 2 * MS)) is sent
    assert getattr(g.stats, reason) == 1


def test_first_tick_of_an_asset_heartbeats_and_assets_without_triggers() -> None:
    g = gate(heartbeat_s=0.005)
    assert g.admit(B, PRICE, top("0.50"), 2 * MS)  # B's first tick
    assert not g.admit(B, PRICE, top("0.51"), 3 * MS)  # B has no trigger
    assert not g.admit(A, PRICE, top("0.51"), 4 * MS)
    assert g.admit(A, PRICE, top("0.50"), 6 * MS)  # 5 ms since A's last tick went out: its heartbeat
    assert not g.admit(A, PRICE, top("0.51"), 7 * MS)
    assert g.admit(B, PRICE, top("0.50"), 8 * MS) and g.stats.heartbeat == 2


def test_held_triggers_let_fresh_ticks_through() -> None:
    g = gate(BAND._replace(holds=True))
    assert g.admit(A, PRICE, top("0.50"), 2 * MS)
    assert g.stats.held == 1
    assert g.admit(A, PRICE, top("0.50", stale=True), 3 * MS)  # flips to stale
    assert not g.admit(A, PRICE, top("0.51", stale=True), 4 * MS)  # a stale tick inside: releases nothing


def test_without_a_lease_every_tick_goes_out() -> None:
    g = gate(lease_s=0.01)
    assert not g.admit(A, PRICE, top("0.51"), 2 * MS)
    assert g.admit(A, PRICE, top("0.50"), 10 * MS)  # the lease ran out
    assert g.stats.unguarded == 1
    g.unguarded()
    assert g.admit(A, PRICE, top("0.51"), 3 * MS)
    assert TickGate().admit(A, PRICE, top("0.5"), 1)  # never loaded


def test_a_rise_narrows_the_band_until_guard_has_read_it() -> None:
    g = gate()
    stamp = g.admit(A, PRICE, top("0.50", "0.70"), 2 * MS)  # mid 0.60: the trailing mark rises to 0.60 at most
    assert stamp
    assert g.bands[A].sources[1] == SourceBand(1, D("0.540"), D("0.60"), True, D("0.1"))
    assert g.admit(A, PRICE, top("0.50", "0.58"), 3 * MS)  # mid 0.54: fires at the new level
    # guard's band written before it read the rise: still narrowed by it
    older = AssetBand((BAND.sources[0], SourceBand(1, D("0.45"), D("0.50"), True, D("0.1"))))
    assert g.apply(BandMessage(BandMeta("e", 2, stamp - 1, 5.0), {A: encode(older)}), 4 * MS) == [A]
    assert g.bands[A].sources[1] == SourceBand(1, D("0.540"), D("0.60"), True, D("0.1"))
    # a beat saying guard read both: guard's own band from then on, to be checked against the current top
    assert g.apply(BandMessage(BandMeta("e", 3, g.floor_ns, 5.0), {}), 5 * MS) == [A]
    assert g.bands[A] == older
    assert g.apply(BandMessage(BandMeta("e", 4, g.floor_ns, 5.0), {}), 6 * MS) == []  # nothing left to drop


# best bid only: a stop-loss at 0.40, a take-profit at 0.90; then guard arms a MID trailing stop of 10% marked at 0.55
BID_ONLY = AssetBand((SourceBand(0, D("0.40"), D("0.90"), False, None, D("0.90")),))
WITH_MID = AssetBand((*BID_ONLY.sources, SourceBand(1, D("0.495"), D("0.55"), True, D("0.1"))))


def _sent_above(g: TickGate) -> int:
    return g.admit(A, PRICE, top("0.91", "0.95"), 2 * MS)  # above the take-profit; mid 0.93


def _sent_below(g: TickGate) -> int:
    return g.admit(A, PRICE, top("0.39", "0.81"), 2 * MS)  # at the stop-loss only; mid 0.60


def _sent_tick_size(g: TickGate) -> int:
    return g.admit(A, mpb.TICK_KIND_TICK_SIZE_CHANGE, top("0.50", "0.70"), 2 * MS)  # a snapshot; mid 0.60


def _sent_heartbeat(g: TickGate) -> int:
    g.heartbeat_ns = MS
    return g.admit(A, PRICE, top("0.50", "0.70"), 2 * MS)


def _sent_held(g: TickGate) -> int:
    g.apply(BandMessage(BandMeta("e", 2, 0, 5.0), {A: encode(BID_ONLY._replace(holds=True))}), MS + 1)
    return g.admit(A, PRICE, top("0.50", "0.70"), 2 * MS)


def _sent_after_a_staleness_flip(g: TickGate) -> int:
    assert g.admit(A, PRICE, top("0.50", stale=True), MS + 1)
    return g.admit(A, PRICE, top("0.50", "0.70"), 2 * MS)


def _sent_by_a_check(g: TickGate) -> int:
    g.apply(BandMessage(BandMeta("e", 2, 0, 5.0), {A: encode(BID_ONLY._replace(holds=True))}), MS + 1)
    return g.recheck(A, top("0.50", "0.70"), 2 * MS)


def _sent_unguarded(g: TickGate) -> int:
    g.unguarded()
    return g.admit(A, PRICE, top("0.50", "0.70"), 2 * MS)


@pytest.mark.parametrize(("send", "mid"), [
    (_sent_above, D("0.93")),  # the mid, though no band watched it when the tick went out
    (_sent_below, D("0.60")),
    (_sent_tick_size, D("0.60")),
    (_sent_heartbeat, D("0.60")),
    (_sent_held, D("0.60")),
    (_sent_after_a_staleness_flip, D("0.60")),
    (_sent_by_a_check, D("0.60")),
    (_sent_unguarded, D("0.60")),
])
def test_every_fresh_price_sent_narrows_a_band_guard_wrote_before_reading_it(send: object, mid: Decimal) -> None:
    """Guard arms a MID trailing stop and publishes its band before it reads a tick ingest sent: reading the tick
    lifts the new stop's mark to its mid, whatever the tick's kind and the reason it went out, so ingest narrows the
    new band by it until guard has read it."""
    g = gate(BID_ONLY)
    stamp = send(g)  # type: ignore[operator]
    assert stamp
    assert _publish(g, {A: encode(WITH_MID)}, 0, 3 * MS) == [A]
    assert g.bands[A].sources[1] == SourceBand(1, mid * D("0.9"), mid, True, D("0.1"))
    _publish(g, {}, stamp, 4 * MS)
    assert g.bands[A] == WITH_MID


def _publish(g: TickGate, bands: dict[str, str], through: int, now: int) -> list[str] | None:
    """Guard's next band message (the bands read whole when the gate holds none)."""
    if g.meta is None:
        return g.load(BandMeta("e", 9, through, 5.0), bands, now)
    return g.apply(BandMessage(BandMeta("e", g.meta.seq + 1, through, 5.0), bands), now)


def test_a_stale_price_sent_narrows_nothing() -> None:
    g = gate(BID_ONLY)
    assert g.admit(A, PRICE, top("0.50", "0.70", stale=True), 2 * MS)  # flips to stale: goes out
    assert g.admit(A, mpb.TICK_KIND_STALE, top("0.50", "0.70", stale=True), 3 * MS)
    g.apply(BandMessage(BandMeta("e", 2, 0, 5.0), {A: encode(WITH_MID)}), 4 * MS)
    assert g.bands[A] == WITH_MID


def test_guard_reading_a_tick_ends_the_narrowing_by_that_ticks_price_only() -> None:
    g = gate()
    s1 = g.admit(A, PRICE, top("0.50", "0.90"), 2 * MS)  # mid 0.70: narrowed to (0.63, 0.70]
    s2 = g.admit(A, PRICE, top("0.50", "0.74"), 3 * MS)  # mid 0.62: under the narrowed stop level, goes out
    assert s1 and s2
    assert g.apply(BandMessage(BandMeta("e", 2, s1, 5.0), {}), 4 * MS) == [A]
    assert g.bands[A].sources[1] == SourceBand(1, D("0.558"), D("0.62"), True, D("0.1"))  # 0.62 still unread
    assert g.apply(BandMessage(BandMeta("e", 3, s2, 5.0), {}), 5 * MS) == [A]
    assert g.bands[A] == BAND


def test_unread_prices_kept_per_asset_are_bounded_and_stay_as_narrow() -> None:
    g = gate()
    stamps = [g.admit(A, mpb.TICK_KIND_TICK_SIZE_CHANGE, top("0.50", str(D("0.60") + D(i) / 100)), (2 + i) * MS)
              for i in range(20)]  # mids 0.55 to 0.645
    assert len(g._rises[A]) <= 8
    assert g.bands[A].sources[1].lo == D("0.645") * D("0.9")
    g.apply(BandMessage(BandMeta("e", 2, stamps[10], 5.0), {}), 30 * MS)
    assert g.bands[A].sources[1].lo == D("0.645") * D("0.9")  # the latest unread is the highest
    g.apply(BandMessage(BandMeta("e", 3, stamps[-1], 5.0), {}), 31 * MS)
    assert g.bands[A] == BAND and A not in g._rises


@pytest.mark.parametrize(("through", "narrowed_by"), [
    # the new guard took its cursor after the first tick: it reads the second, or lost it with a log it found
    # empty: every tick goes out until it has read past it
    (1, D("0.58")),
    (2, None),  # ... after both
    (0, None),  # a guard that does not say where it started: everything unread is forgotten
])
def test_a_new_guard_narrows_its_bands_only_by_the_prices_it_will_read(through: int,
                                                                        narrowed_by: Decimal | None) -> None:
    g = gate()
    s1 = g.admit(A, PRICE, top("0.50", "0.70"), 2 * MS)  # mid 0.60, read by no guard
    s2 = g.admit(A, mpb.TICK_KIND_TICK_SIZE_CHANGE, top("0.50", "0.66"), 3 * MS)  # mid 0.58
    assert s1 and s2
    g.load(BandMeta("e2", 1, [0, s1, s2][through], 5.0), {A: encode(BAND)}, 4 * MS)
    assert (g.valid_until_ns > 4 * MS) is (narrowed_by is None)
    expected = BAND if narrowed_by is None else AssetBand(
        (BAND.sources[0], SourceBand(1, narrowed_by * D("0.9"), narrowed_by, True, D("0.1"))))
    assert g.bands[A] == expected
    if narrowed_by is not None:  # trusted again once the new guard says it read the second tick
        g.apply(BandMessage(BandMeta("e2", 2, s2 - 1, 5.0), {}), 5 * MS)
        assert g.valid_until_ns == 0
        g.apply(BandMessage(BandMeta("e2", 3, s2, 5.0), {}), 6 * MS)
        assert g.valid_until_ns > 6 * MS and g.bands[A] == BAND


@pytest.mark.parametrize(("meta", "result"), [
    (BandMeta("e", 2, 0, 5.0), [A]),
    (BandMeta("e", 1, 0, 5.0), []),  # already read
    (BandMeta("e", 3, 0, 5.0), None),  # one missed: read everything again
    (BandMeta("other", 2, 0, 5.0), None),  # another guard process
])
def test_messages_in_sequence_or_a_new_read(meta: BandMeta, result: list[str] | None) -> None:
    g = gate()
    assert g.apply(BandMessage(meta, {A: encode(BAND)}), 2 * MS) == result
    assert g.apply(BandMessage(BandMeta("e", 2, 0, 5.0), {}, reset=True), 2 * MS) is None


def test_stamps_strictly_increase_and_start_after_the_previous_process() -> None:
    g = TickGate()
    g.floor_ns = 100
    stamps = [g.admit(a, PRICE, top("0.5"), 50) for a in (A, B)]
    assert stamps == [101, 102]


def test_bands_wait_until_guard_read_what_a_previous_process_sent() -> None:
    g = TickGate()
    g.trust_after_ns = 500
    g.load(BandMeta("e", 1, 400, 5.0), {A: encode(BAND)}, 0)
    assert g.admit(A, PRICE, top("0.50"), 600) and g.admit(A, PRICE, top("0.51"), 700)  # not trusted yet
    g.apply(BandMessage(BandMeta("e", 2, 500, 5.0), {}), 800)
    assert not g.admit(A, PRICE, top("0.50"), 900)


def test_a_band_that_cannot_be_read_sends_every_tick() -> None:
    g = TickGate()
    g.load(BandMeta("e", 1, 0, 5.0), {A: "garbage"}, 0)
    assert g.admit(A, PRICE, top("0.5"), 1) and g.admit(A, PRICE, top("0.5"), 2)
    assert g.stats.bad_bands == 1


@pytest.mark.parametrize(("band", "current", "sent"), [
    (AssetBand((SourceBand(0, D("0.45"), None, False),)), top("0.44"), True),  # armed above the price
    (AssetBand((SourceBand(0, D("0.40"), None, False),)), top("0.44"), False),
    (AssetBand((SourceBand(0, D("0.40"), None, False),), True), top("0.44"), True),  # held: release them
    (AssetBand((SourceBand(0, D("0.40"), None, False),), True), top("0.44", stale=True), False),
])
def test_a_changed_band_checks_the_current_top(band: AssetBand, current: Top, sent: bool) -> None:
    g = gate()
    g.apply(BandMessage(BandMeta("e", 2, 0, 5.0), {A: encode(band)}), 2 * MS)
    assert bool(g.recheck(A, current, 3 * MS)) is sent


def test_assets_no_longer_followed_are_forgotten() -> None:
    g = gate()
    assert not g.admit(A, PRICE, top("0.50"), 2 * MS)  # A's first tick went out in gate()
    assert g.admit(B, PRICE, top("0.50", "0.70"), 2 * MS) and g.stats.first == 1
    g.forget({A, 'never-seen'})
    assert g.admit(A, PRICE, top("0.50"), 3 * MS) and g.stats.first == 2  # A's next tick is a first one again
    g.forget({B})
    assert g.admit(B, PRICE, top("0.50", "0.70"), 4 * MS) and g.stats.first == 3
