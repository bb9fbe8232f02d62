"""Reservations on real Redis: claim once, reserve, release idempotently, read per wallet."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.reservations import SHARES, USD, Reservation

D = Decimal


@pytest.mark.parametrize(("value", "micro"), [("25", 25_000_000), ("0.000001", 1), ("0.0000011", 2),
                                              ("12.34", 12_340_000)])
def test_micro_rounds_up(value: str, micro: int) -> None:
    assert reservations.to_micro(D(value)) == micro
    assert reservations.from_micro(12_340_000) == D("12.34")


@pytest.mark.parametrize(("kw", "field"), [({"kind": "eur"}, "kind"), ({"micro": -1}, "micro"),
                                           ({"wallet_id": "w|1"}, "wallet_id"), ({"key": ""}, "key"),
                                           ({"client_order_id": "co\n1"}, "client_order_id"),
                                           ({"key": "a,b"}, "key")])
def test_reservation_validates(kw: dict[str, object], field: str) -> None:
    base: dict[str, object] = dict(client_order_id="co_1", wallet_id="w_1", kind=USD, key="0xc", micro=1)
    base.update(kw)
    with pytest.raises(ValueError, match=field):
        Reservation(**base)  # type: ignore[arg-type]
    one = (str(base["client_order_id"]), str(base["wallet_id"]), int(base["micro"]))  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=field):
        reservations.lines_for(str(base["kind"]), str(base["key"]), "", [one])


def test_lines_for_matches_lines() -> None:
    items = [Reservation("co_1", "w_1", USD, "0xm1", 25_000_000, "lt_1"),
             Reservation("co_2", "w_2", USD, "0xm1", 3, "lt_1")]
    assert reservations.lines_for(USD, "0xm1", "lt_1", [(r.client_order_id, r.wallet_id, r.micro) for r in items]) \
        == reservations.lines(items)


@pytest.mark.integration
async def test_reserve_read_release(r: aioredis.Redis) -> None:
    items = [Reservation("co_1", "w_1", USD, "0xm1", 25_000_000, "lt_1"),
             Reservation("co_2", "w_1", USD, "0xm2", 5_000_000, "lt_1"),
             Reservation("co_3", "w_1", SHARES, "111", 7_500_000, "lt_2"),
             Reservation("co_4", "w_2", USD, "0xm1", 1_000_000, "lt_1")]
    assert await reservations.reserve(r, items) == [True, True, True, True]
    # a client order id is claimed once: nothing reserved again
    assert await reservations.reserve(r, [Reservation("co_1", "w_1", USD, "0xm1", 99_000_000)]) == [False]
    got = await reservations.read(r, ["w_1", "w_2", "w_3"], "0xm1", "111")
    assert got["w_1"] == reservations.WalletReserved(30_000_000, 25_000_000, 7_500_000, frozenset({"0xm1", "0xm2"}))
    assert got["w_2"] == reservations.WalletReserved(1_000_000, 1_000_000, 0, frozenset({"0xm1"}))
    assert got["w_3"] == reservations.NOTHING_RESERVED
    assert (await reservations.read(r, ["w_1"], "0xm2", "222"))["w_1"].market_usd_micro == 5_000_000

    assert await reservations.release(r, "co_1") == 25_000_000
    assert await reservations.release(r, "co_1") == 0  # idempotent
    assert await reservations.release(r, "co_unknown") == 0
    assert await reservations.release(r, "co_3") == 7_500_000
    got = await reservations.read(r, ["w_1"], "0xm1", "111")
    assert got["w_1"] == reservations.WalletReserved(5_000_000, 0, 0, frozenset({"0xm2"}))
    # the released claim still dedupes, for a while
    assert await reservations.reserve(r, [Reservation("co_1", "w_1", USD, "0xm1", 1)]) == [False]
    assert 0 < await r.ttl(reservations.order_key("co_1")) <= reservations.DEFAULT_KEEP_S
    assert await r.ttl(reservations.order_key("co_2")) == -1  # an unreleased claim never expires


@pytest.mark.integration
async def test_release_works_on_a_bytes_client(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=False)
    await reservations.reserve(client, [Reservation("co_9", "w_9", USD, "0xm", 3)])
    assert await reservations.release(client, "co_9") == 3
    assert (await reservations.read(client, ["w_9"], "0xm", "1"))["w_9"] == reservations.NOTHING_RESERVED
    await client.aclose()


@pytest.mark.integration
async def test_release_many_is_release_for_each(r: aioredis.Redis) -> None:
    await reservations.reserve(r, [Reservation("co_a", "w_1", USD, "0xm1", 2_000_000),
                                   Reservation("co_b", "w_1", USD, "0xm1", 3_000_000),
                                   Reservation("co_c", "w_2", SHARES, "111", 4_000_000)])
    await r.set(reservations.order_key("co_bad"), "garbage")
    assert await reservations.release_many(r, ["co_a", "co_unknown", "co_c", "co_a", "co_bad"]) == [
        2_000_000, 0, 4_000_000, 0, -1]
    got = await reservations.read(r, ["w_1", "w_2"], "0xm1", "111")
    assert got["w_1"].market_usd_micro == 3_000_000 and got["w_2"] == reservations.NOTHING_RESERVED
    assert await r.get(reservations.order_key("co_bad")) == "garbage"  # left for an operator
    assert await reservations.release_many(r, []) == []


@pytest.mark.integration
async def test_a_claim_without_shares_reserves_them_once_sized(r: aioredis.Redis) -> None:
    """A SELL sent with a fraction claims its id and reserves nothing; sized by the executor, it reserves its
    shares (the router's next SELL of the position does not sell them again), released like any other."""
    held_before = Reservation("co_s0", "w_1", SHARES, "111", 2_000_000, "lt_0")
    later = Reservation("co_s1", "w_1", SHARES, "111", 0, "lt_1")
    assert await reservations.reserve(r, [held_before, later]) == [True, True]
    assert (await reservations.read(r, ["w_1"], "", "111"))["w_1"].asset_shares_micro == 2_000_000
    assert await reservations.size_claim(r, "co_s1", 30_000_000) is True
    assert (await reservations.read(r, ["w_1"], "", "111"))["w_1"].asset_shares_micro == 32_000_000
    # sized again (a restart came between its sizing and its POST): the wallet moves by the difference
    assert await reservations.size_claim(r, "co_s1", 25_000_000) is True
    assert await reservations.size_claim(r, "co_unknown", 1_000_000) is False
    assert (await reservations.read(r, ["w_1"], "", "111"))["w_1"].asset_shares_micro == 27_000_000
    assert await reservations.release(r, "co_s1") == 25_000_000
    assert await reservations.size_claim(r, "co_s1", 5_000_000) is False  # released: never again
    assert await reservations.release(r, "co_s0") == 2_000_000
    assert await r.hgetall("tt:resv:w_1") == {}
    # never sized: its release takes nothing from the others
    assert await reservations.reserve(r, [Reservation("co_s2", "w_1", SHARES, "111", 0, "lt_2"),
                                          Reservation("co_s3", "w_1", SHARES, "111", 4_000_000, "lt_3")])
    assert await reservations.release(r, "co_s2") == 0
    assert (await reservations.read(r, ["w_1"], "", "111"))["w_1"].asset_shares_micro == 4_000_000
