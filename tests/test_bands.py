"""The price-band contract between guard and ingest (``common.bands``): the inside check, the narrowing after a
rise, and the encodings."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.bands import (
    CHANGES_KEPT,
    AssetBand,
    BandMessage,
    BandMeta,
    SourceBand,
    after_rise,
    decode,
    encode,
    kept_changes,
    merged_changes,
    outside,
    parse_message,
    parse_meta,
)

D = Decimal


@pytest.mark.parametrize(("band", "price", "side"), [
    (SourceBand(0, D("0.40"), D("0.60"), False), D("0.50"), 0),
    (SourceBand(0, D("0.40"), D("0.60"), False), D("0.40"), -1),  # a stop-loss fires at its price
    (SourceBand(0, D("0.40"), D("0.60"), False), D("0.39"), -1),
    (SourceBand(0, D("0.40"), D("0.60"), False), D("0.60"), 1),  # a take-profit fires at its price
    (SourceBand(0, D("0.40"), D("0.60"), True), D("0.60"), 0),  # at the lowest trailing mark: nothing lifts
    (SourceBand(0, D("0.40"), D("0.60"), True), D("0.6001"), 1),
    (SourceBand(0, None, None, False), D("0.99"), 0),
    (SourceBand(0, None, D("0.60"), False), D("0.01"), 0),
    # a stop at 0.20 above a trailing mark at 0.055: every price is outside, and one above the mark is a rise
    (SourceBand(1, D("0.20"), D("0.055"), True, D("0.52")), D("0.155"), 1),
    (SourceBand(1, D("0.20"), D("0.055"), True, D("0.52")), D("0.05"), -1),
])
def test_outside(band: SourceBand, price: Decimal, side: int) -> None:
    assert outside(band, price) == side


@pytest.mark.parametrize(("band", "price", "after"), [
    # a trailing stop of 10% lifted to 0.70: its level is at most 0.63, its mark at least 0.70
    (SourceBand(0, D("0.45"), D("0.50"), True, D("0.1")), D("0.70"), SourceBand(0, D("0.630"), D("0.70"), True,
                                                                              D("0.1"))),
    # the stop levels already above what the rise gives stay
    (SourceBand(0, D("0.66"), D("0.68"), False, D("0.1")), D("0.70"), SourceBand(0, D("0.66"), D("0.70"), True,
                                                                              D("0.1"))),
    # no trailing stop: a rise fires take-profits only, the band can only widen
    (SourceBand(0, D("0.40"), D("0.60"), False), D("0.70"), SourceBand(0, D("0.40"), D("0.60"), False)),
    # not a rise: unchanged
    (SourceBand(0, D("0.45"), D("0.50"), True, D("0.1")), D("0.50"), SourceBand(0, D("0.45"), D("0.50"), True,
                                                                              D("0.1"))),
    (SourceBand(0, D("0.45"), D("0.50"), True, D("0.1")), D("0.30"), SourceBand(0, D("0.45"), D("0.50"), True,
                                                                              D("0.1"))),
    # a stop above the mark (every price outside): a price above the mark still lifts it
    (SourceBand(1, D("0.20"), D("0.055"), True, D("0.52")), D("0.155"), SourceBand(1, D("0.20"), D("0.155"), True,
                                                                                D("0.52"))),
    # an activation price (exclusive high edge) reached: the stop starts tracking at the price
    (SourceBand(0, None, D("0.50"), False, D("0.2")), D("0.50"), SourceBand(0, D("0.400"), D("0.50"), True,
                                                                         D("0.2"))),
    # a take-profit at 0.60 under the price: fired (read in time) or held (read late), the top is at most there
    (SourceBand(0, D("0.45"), D("0.50"), True, D("0.1"), D("0.60")), D("0.70"),
     SourceBand(0, D("0.630"), D("0.60"), False, D("0.1"), D("0.60"))),
    (SourceBand(0, D("0.45"), D("0.50"), True, D("0.1"), D("0.70")), D("0.70"),
     SourceBand(0, D("0.630"), D("0.70"), False, D("0.1"), D("0.70"))),
    # a take-profit above the price stays above the lifted mark
    (SourceBand(0, D("0.45"), D("0.50"), True, D("0.1"), D("0.80")), D("0.70"),
     SourceBand(0, D("0.630"), D("0.70"), True, D("0.1"), D("0.80"))),
])
def test_after_rise(band: SourceBand, price: Decimal, after: SourceBand) -> None:
    assert after_rise(band, price) == after


prices = st.one_of(st.none(), st.integers(1, 10_000).map(lambda n: D(n) / 10_000))
source_bands = st.builds(SourceBand, st.integers(0, 2), prices, prices, st.booleans(),
                         st.one_of(st.none(), st.integers(1, 99).map(lambda n: D(n) / 100)), prices)


change_times = st.lists(st.integers(1, 2**63 - 1), unique=True, max_size=CHANGES_KEPT).map(lambda c: tuple(sorted(c)))


@given(st.builds(AssetBand, st.lists(source_bands, max_size=3).map(tuple), st.booleans(), change_times))
def test_encode_decode_round_trip(band: AssetBand) -> None:
    assert decode(encode(band)) == band


@pytest.mark.parametrize("text", ["", "x;0,1,2,0,", "-;3,0.1,0.2,0,", "-;0,0.1,0.2,2,", "-;0,0.1,0.2,0",
                                  "-;0,abc,0.2,0,", "-;0,0.1,0.2,0,1.5",
                                  # change times: none after the @, not digits, out of order, repeated, too many
                                  "-@;0,,,0,", "h@1,x;0,,,0,", "-@2,1;0,,,0,", "-@1,1;0,,,0,", "-@1,2,3,4,5;0,,,0,",
                                  "-@-1;0,,,0,"])
def test_decode_refuses_what_encode_never_writes(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)


@pytest.mark.parametrize(("text", "band"), [
    ("-;0,0.4,0.6,0,0.1,0.6", AssetBand((SourceBand(0, D("0.4"), D("0.6"), False, D("0.1"), D("0.6")),))),
    ("-;0,0.4,0.6,1,0.1,", AssetBand((SourceBand(0, D("0.4"), D("0.6"), True, D("0.1")),))),
    # written before the lowest take-profit was: it may be anywhere above hi, so it is taken at hi
    ("h;0,0.4,0.6,1,0.1", AssetBand((SourceBand(0, D("0.4"), D("0.6"), True, D("0.1"), D("0.6")),), True)),
    ("-;1,,,0,", AssetBand((SourceBand(1, None, None, False),))),
])
def test_decode_reads_the_lowest_take_profit_or_assumes_one_at_the_top(text: str, band: AssetBand) -> None:
    assert decode(text) == band


@pytest.mark.parametrize(("changes", "at", "kept"), [
    ((), 5, (5,)),
    ((), 0, ()),  # not known when: no change time
    ((3,), 3, (3,)),  # the same arm again (a trigger upserted unchanged)
    ((3,), 2, (3,)),  # an older time is not a new change
    ((1, 2, 3, 4), 9, (2, 3, 4, 9)),  # the latest CHANGES_KEPT
])
def test_kept_changes(changes: tuple[int, ...], at: int, kept: tuple[int, ...]) -> None:
    assert kept_changes(changes, at) == kept


def test_merged_changes_keeps_the_latest_in_order() -> None:
    assert CHANGES_KEPT == 4
    assert merged_changes((1, 5), (2, 5, 9), ()) == (1, 2, 5, 9)
    assert merged_changes((1, 2, 3), (4, 5, 6)) == (3, 4, 5, 6)


def test_messages_and_meta_round_trip_and_junk_is_none() -> None:
    meta = BandMeta("e1", 7, 123, 5.0)
    msg = BandMessage(meta, {"a": "-;0,0.4,0.6,0,,0.6", "b": ""})
    assert parse_message(msg.to_json()) == msg
    assert parse_meta(meta.to_json()) == meta
    assert parse_message(b"off") is None and parse_meta(None) is None
    assert parse_message(b'{"epoch":"e","seq":1,"through_ns":0,"lease_s":5,"bands":[]}') is None
