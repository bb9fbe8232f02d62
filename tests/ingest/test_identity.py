"""Leader-trade identity: same-tx multi-fills, cross-feed overlap, casing and number canonicalisation."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest import dataapi, rtds
from services.ingest.identity import OccurrenceCounter, content_key, event_id, identify, identify_batch
from services.ingest.model import Fill
from sim.polymarket.model import SimTrade
from tests.ingest.conftest import RECV_NS

WALLET = "0x5a1ce0000000000000000000000000000000beef"
TOKEN = "31415926535897932384626433832795028841971693993751058209749445923078164062862"
TX = "0x" + "a1" * 32


def sim_trade(size: str = "10", price: str = "0.5", tx: str = TX, side: str = "BUY") -> SimTrade:
    return SimTrade(wallet=WALLET, asset=TOKEN, side=side, price=Decimal(price), size=Decimal(size), tx_hash=tx,
                    condition_id="0x" + "1c" * 32, timestamp_s=1767225600)


def via_rtds(t: SimTrade) -> Fill:
    return rtds.parse_trade(t.rtds_payload(), "RTDS_TRADES", RECV_NS + 1)


def via_data_api(t: SimTrade) -> Fill:
    return dataapi.parse_row(t.activity_row(), RECV_NS + 2)


@pytest.mark.parametrize(("a", "b"), [
    ("0.5", "0.50"), ("0.5", "0.500"), ("10", "10.0"), ("48.25", "48.250"), ("1E+1", "10"), ("0.1", ".1"),
])
def test_canonical_numbers_hash_alike(a: str, b: str) -> None:
    fill = via_rtds(sim_trade())
    assert content_key(replace(fill, size=Decimal(a))) == content_key(replace(fill, size=Decimal(b)))


def test_same_trade_on_both_feeds_is_one_id_despite_address_casing() -> None:
    t = sim_trade(size="1030.92", price="0.03")
    payload = t.rtds_payload()
    assert payload["proxyWallet"] != WALLET and payload["proxyWallet"].lower() == WALLET  # mixed case on RTDS
    a = identify(via_rtds(t), OccurrenceCounter(), 0)
    b = identify_batch([via_data_api(t)], 0)[0]
    assert a.id == b.id and a.id.startswith("lt_")


def test_identical_fills_in_one_tx_stay_two() -> None:
    counter = OccurrenceCounter()
    a, b = (identify(via_rtds(sim_trade()), counter, 0) for _ in range(2))
    assert (a.occurrence, b.occurrence) == (0, 1) and a.id != b.id
    assert identify(via_rtds(sim_trade(size="11")), counter, 0).occurrence == 0


def test_batches_count_afresh_so_a_repoll_gives_the_same_ids() -> None:
    rows = [via_data_api(sim_trade()), via_data_api(sim_trade()), via_data_api(sim_trade(size="4.2"))]
    first = [i.id for i in identify_batch(rows, 0)]
    again = [i.id for i in identify_batch(rows, 60)]
    assert first == again and len(set(first)) == 3


@pytest.mark.parametrize(("rtds_seen", "poll_seen", "expected_total"), [
    (2, 2, 2),  # both feeds saw both identical fills
    (1, 2, 2),  # RTDS missed one: the poller's second occurrence is new
    (0, 2, 2),  # RTDS missed the whole tx
    (2, 1, 2),  # data-api lagging: nothing doubles
    (3, 2, 3),
])
def test_union_across_feeds_is_the_max_seen_never_the_sum(rtds_seen: int, poll_seen: int, expected_total: int) -> None:
    counter = OccurrenceCounter()
    ids = {identify(via_rtds(sim_trade()), counter, 0).id for _ in range(rtds_seen)}
    ids |= {i.id for i in identify_batch([via_data_api(sim_trade())] * poll_seen, 0)}
    assert len(ids) == expected_total


def test_trades_and_orders_matched_count_separately() -> None:
    # the taker row arrives on both RTDS types: separate counters give both occurrence 0 → one id
    counters = {"RTDS_TRADES": OccurrenceCounter(), "RTDS_ORDERS_MATCHED": OccurrenceCounter()}
    t = via_rtds(sim_trade())
    a = identify(t, counters["RTDS_TRADES"], 0)
    b = identify(replace(t, source="RTDS_ORDERS_MATCHED"), counters["RTDS_ORDERS_MATCHED"], 0)
    assert a.id == b.id


def test_non_trade_rows_get_their_own_prefix_and_type_in_the_key() -> None:
    row = replace(via_data_api(sim_trade()), activity_type="REDEEM", asset_id="", side="")
    key = content_key(row)
    assert key[0] == "REDEEM" and event_id(key, 0).startswith("la_")


def test_occurrence_counter_forgets_after_ttl_and_bounds_memory() -> None:
    counter = OccurrenceCounter(ttl_s=10, max_keys=3)
    assert counter.next(("a",), 0) == 0 and counter.next(("a",), 5) == 1
    assert counter.next(("a",), 16) == 0  # 11 s of silence
    for i in range(10):
        counter.next((str(i),), 20)
    assert len(counter) == 3


def test_different_fields_give_different_ids() -> None:
    base = via_rtds(sim_trade())
    ids = {identify_batch([f], 0)[0].id for f in [
        base, replace(base, side="SELL"), replace(base, price=Decimal("0.51")), replace(base, size=Decimal("10.01")),
        replace(base, tx_hash="0x" + "b2" * 32), replace(base, wallet="0x" + "1" * 40), replace(base, asset_id="7")]}
    assert len(ids) == 7


amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=6)


@given(size=amounts, price=st.decimals(min_value=Decimal("0.001"), max_value=Decimal("0.999"), places=3))
def test_property_rtds_and_data_api_agree(size: Decimal, price: Decimal) -> None:
    t = sim_trade(size=str(size), price=str(price))
    assert content_key(via_rtds(t)) == content_key(via_data_api(t))


@given(st.lists(st.sampled_from(["1", "2", "3"]), min_size=1, max_size=12), st.randoms())
def test_property_any_arrival_split_yields_the_true_count(sizes: list[str], rnd: object) -> None:
    """However RTDS splits a transaction's fills into frames, and whichever subset it delivers,
    RTDS ∪ poll has exactly one id per real fill."""
    fills = [via_rtds(sim_trade(size=s)) for s in sizes]
    delivered = [f for f in fills if rnd.random() < 0.6]  # type: ignore[attr-defined]
    counter = OccurrenceCounter()
    ids = {identify(f, counter, 0).id for f in delivered}
    ids |= {i.id for i in identify_batch([via_data_api(sim_trade(size=s)) for s in sizes], 0)}
    assert len(ids) == len(sizes)
