"""The tick gate's left-out prices, looked at again when a band lands after its asset's triggers changed
(``services.ingest.leftout``, ``TickGate.replay``), with guard's engine making the bands."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.bands import BandMessage, BandMeta, encode
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.ingest.leftout import LeftOut
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-1"
D = Decimal
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


class Setup:
    """A gate following one engine's bands: the first at t = 0, the asset's first tick (0.50) at 1 ms."""

    def __init__(self, *specs: TriggerSpec) -> None:
        self.engine = Engine()
        for spec in specs:
            self.engine.upsert(spec)
        self.gate = TickGate(heartbeat_s=60.0)
        self.seq = 1
        self.gate.load(BandMeta("e", 1, 1, 5.0), self.bands(), 0)
        assert self.gate.admit(A, PRICE, top("0.50"), 1 * MS)

    def bands(self) -> dict[str, str]:
        band = self.engine.published_band(A)
        return {A: encode(band)} if band is not None else {}

    def ticks(self, *moves: tuple[str, int]) -> list[int]:
        return [self.gate.admit(A, PRICE, top(bid), t * MS) for bid, t in moves]

    def lands(self, t: int) -> list[Decimal | None]:
        """The engine's band lands at ``t`` ms: the bids sent again, then the current top's if it goes out."""
        self.seq += 1
        assert self.gate.apply(BandMessage(BandMeta("e", self.seq, 1, 5.0), self.bands()), t * MS) == [A]
        return [sent[0] for _stamp, sent, _observed in self.gate.replay(A, t * MS)]


def stop(price: str, tid: str = "s") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.STOP_LOSS, trigger_price=D(price))


def take_profit(price: str, tid: str = "t") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TAKE_PROFIT, trigger_price=D(price))


def trailing(mark: str, tid: str = "r") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, trail_pct=D("10"), activation_price=D("0"),
                       high_water_mark=D(mark))


@pytest.mark.parametrize(("armed_ms", "moves", "replayed"), [
    (10, [("0.44", 20), ("0.47", 30)], [D("0.44")]),  # the dip after the arm
    (25, [("0.44", 20), ("0.47", 30)], []),  # the dip before it: the stop did not exist
    (10, [("0.44", 20), ("0.43", 25), ("0.47", 30)], [D("0.44"), D("0.43")]),  # each, in received order
    (10, [("0.46", 20), ("0.47", 30)], []),  # nothing crossed the new stop
])
def test_a_stop_armed_while_its_band_is_in_flight(armed_ms: int, moves: list[tuple[str, int]],
                                                 replayed: list[Decimal]) -> None:
    s = Setup(stop("0.30"))
    s.engine.upsert(stop("0.45"), armed_ns=armed_ms * MS)
    assert not any(s.ticks(*moves))  # inside the band from before the change
    assert s.lands(40) == replayed
    assert s.gate.stats.replayed == len(replayed)


def test_a_take_profit_armed_in_flight_gets_the_rise_and_a_first_trigger_on_the_asset_too() -> None:
    s = Setup()  # no trigger: the asset's ticks are left out (no band)
    s.engine.upsert(take_profit("0.55"), armed_ns=10 * MS)
    assert not any(s.ticks(("0.56", 20), ("0.52", 30)))
    assert s.lands(40) == [D("0.56")]


def test_a_band_change_without_a_new_trigger_change_looks_at_nothing_again() -> None:
    """A later band (a fire, a mark) with the same change times: what was left out stays out."""
    s = Setup(stop("0.30"))
    s.engine.upsert(stop("0.45"), armed_ns=10 * MS)
    assert s.lands(15) == []
    assert not any(s.ticks(("0.47", 20)))
    s.engine.upsert(take_profit("0.46", "t"))  # not armed anew (no time): the same changes
    assert s.lands(40) == []


def test_trailing_sources_look_only_at_prices_after_the_last_tick_sent() -> None:
    """A trailing stop armed at 10 ms (mark 0.55: level 0.495) beside a take-profit at 0.58. Left out under the band
    from before: 0.48 at 20 ms; 0.60 at 30 ms goes out (above the take-profit), then 0.49 at 35 ms is left out. Guard
    reads the 0.60 before anything sent again, and lifts the mark to it (level 0.54): the 0.49 after it crossed that,
    the 0.48 before it is not sent again (read after the 0.60 it would be compared with the mark the 0.60 set)."""
    s = Setup(stop("0.10"), take_profit("0.58"))
    s.engine.upsert(trailing("0.55"), armed_ns=10 * MS)
    assert s.ticks(("0.48", 20)) == [0]
    assert s.ticks(("0.60", 30))[0]
    assert s.ticks(("0.49", 35)) == [0]
    assert s.lands(40) == [D("0.49")]


def test_prices_left_out_longer_ago_than_kept_are_gone_and_counted() -> None:
    s = Setup(stop("0.30"))
    s.gate.left.keep_ns = 100 * MS
    s.engine.upsert(stop("0.45"), armed_ns=10 * MS)
    assert not any(s.ticks(("0.44", 20), ("0.47", 200)))
    assert s.lands(210) == []
    assert s.gate.left.late == 1


def test_a_reload_of_the_bands_looks_again_too_and_stale_tops_are_not_kept() -> None:
    s = Setup(stop("0.30"))
    s.engine.upsert(stop("0.45"), armed_ns=10 * MS)
    stale = (D("0.40"), D("0.41"), None, D("0.01"), True)
    assert s.gate.admit(A, PRICE, stale, 15 * MS)  # a staleness flip goes out
    assert s.gate.admit(A, PRICE, top("0.48"), 18 * MS)  # and back
    assert not any(s.ticks(("0.44", 20), ("0.47", 30)))
    s.gate.load(BandMeta("e", 9, 1, 5.0), s.bands(), 40 * MS)  # a message missed: read whole
    assert [t[0] for _stamp, t, _observed in s.gate.replay(A, 40 * MS)] == [D("0.44")]


def test_a_forgotten_asset_keeps_nothing() -> None:
    s = Setup(stop("0.30"))
    assert not any(s.ticks(("0.44", 20)))
    s.gate.forget({A})
    assert len(s.gate.left) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=400), st.integers(1, 20), st.integers(1, 30))
def test_kept_prices_are_the_newest_within_the_window(gaps_ms: list[int], keep_ms: int, max_kept: int) -> None:
    left = LeftOut(keep_s=keep_ms / 1000, max_kept=max_kept)
    t = 0
    given_ = []
    for gap in gaps_ms:
        t += gap * MS
        left.leave(A, top("0.50"), t)
        given_.append(t)
    kept = [recv for recv, _top in left._kept[A]]
    wanted = [recv for recv in given_ if recv >= t - keep_ms * MS][-max_kept:]
    assert kept == wanted


@pytest.mark.parametrize("band_between", [False, True])
def test_a_price_sent_again_raises_only_the_bottom_of_the_band(band_between: bool) -> None:
    """A trailing stop (mark 0.55) armed at 10 ms; the 0.58 left out at 20 ms goes out again when its band lands at
    40 ms. Guard may leave that price alone (within its margin after the arm, older than it reads, or before its read
    of the stored book: ``replay_refused``): then the stop's mark stays 0.55 and 0.57 at 45 ms lifts it, so it must
    go out, also after a band message that did not say guard read the 0.58 (the narrowing is worked out again).
    Before, the gate narrowed by the 0.58 as by a price guard reads: the band's top rose to 0.58 and the 0.57 was
    left out. The bottom still rises (to 0.522), which only sends more."""
    s = Setup(take_profit("0.70"))
    s.engine.upsert(trailing("0.55", "r1"), armed_ns=10 * MS)
    assert s.ticks(("0.58", 20)) == [0]  # inside the band from before the change (up to the take-profit)
    assert s.lands(40) == [D("0.58")]
    if band_between:
        s.seq += 1
        s.gate.apply(BandMessage(BandMeta("e", s.seq, 1, 5.0), {}), 42 * MS)  # a beat: guard has read nothing new
    assert s.ticks(("0.57", 45))[0], "a price that lifts the stop's mark was left out"
    assert s.ticks(("0.52", 46))[0], "the bottom did not rise"
