"""The batch read returns the condition id of a BUY in flight the router did not send, read in PostgreSQL from the
order's proto (orders has no column of it), not the proto itself: ~125 bytes of base64 a BUY, and its decoding in
Python, for a 10,000-follower fan-out 1.25 MB and 27-69 ms."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest

from services.executor.adapters.order_sql import UNCLAIMED_SELL
from services.router.adapters.store import RouterStore
from services.router.adapters.store_sql import LOAD
from tests.router.factories import ASSET, CONDITION
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _manual_buy(db_url: str, coid: str, proto: bytes, asset: str = ASSET) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, amount_usd, order_proto)"
                     " VALUES (%s, 'PLACED', 'INSIDERS', 'MANUAL', 'w_1', %s, 'BUY', 'FAK', 500, %s)",
                     (coid, asset, proto))
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, unclaimed_sell)"
                     f" SELECT client_order_id, follower_wallet_id, asset_id, {UNCLAIMED_SELL} FROM orders"
                     " WHERE client_order_id = %s", (coid,))


async def _buying(store: RouterStore) -> list[list[Any]]:
    """LOAD's ``buying`` column as it comes back."""
    got: list[Any] = []
    hot_one = store._hot_one

    async def keep(sql: str, params: dict[str, Any]) -> Any:
        row = await hot_one(sql, params)
        got.append(row)
        return row

    store._hot_one = keep  # type: ignore[method-assign]
    await store.load_batch(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=[CONDITION], assets=[ASSET],
                           leader_assets=[], pnl_day_ms=None, funding_wallets=[], sell_assets=[])
    (row,) = got
    return orjson.loads(row[-1])


async def test_the_batch_read_returns_a_buys_condition_id_not_its_order(store: RouterStore, db_url: str) -> None:
    assert "order_proto" in LOAD
    _manual_buy(db_url, "man_1", epb.Order(client_order_id="man_1", asset_id=ASSET,
                                           condition_id=CONDITION).SerializeToString())
    assert await _buying(store) == [["w_1", ASSET, "500", CONDITION]]


def _full(**kw: Any) -> epb.Order:
    """An order as SubmitOrder gives it, every field before and after the condition id set."""
    fields: dict[str, Any] = {
        "client_order_id": "man_1", "origin": epb.ORDER_ORIGIN_MANUAL, "subscription_id": "s" * 40,
        "follower_user_id": "u_" + "7" * 150, "follower_wallet_id": "w_1", "follower_proxy": "0x" + "a" * 40,
        "asset_id": ASSET, "condition_id": CONDITION, "outcome": "Yes", "side": cpb.SIDE_BUY,
        "order_type": epb.ORDER_TYPE_FAK, "amount_usd": "500", "limit_price": "0.5", "reference_price": "0.5",
        "max_slippage_bps": 300, "tick_size": "0.01", "min_order_size": "5", "neg_risk": True,
        "leader_trade_id": "lt_1", "trigger_id": "", "received_time_ns": 2**62, "sell_fraction": ""}
    fields.update(kw)
    return epb.Order(**fields)


PROTOS = [
    pytest.param(_full(), CONDITION, id="every field set, some over 127 bytes"),
    pytest.param(_full(condition_id=CONDITION.upper().replace("0X", "0x")), CONDITION, id="upper case: lowered"),
    pytest.param(_full(condition_id=""), "", id="none"),
    pytest.param(_full(condition_id="not-a-venue-id"), "not-a-venue-id", id="not of the venue's form: as it is"),
    pytest.param(_full(client_order_id="man_" + ASSET, subscription_id=ASSET, outcome=ASSET), CONDITION,
                 id="the asset id in other fields"),
    pytest.param(epb.Order(asset_id=ASSET, condition_id=CONDITION), CONDITION, id="the asset and the condition only"),
]


@pytest.mark.parametrize(("order", "condition"), PROTOS)
async def test_the_condition_id_read_is_the_protos(store: RouterStore, db_url: str, order: epb.Order,
                                                   condition: str) -> None:
    proto = order.SerializeToString()
    assert epb.Order.FromString(proto).condition_id.lower() == condition
    _manual_buy(db_url, "man_1", proto)
    assert await _buying(store) == [["w_1", ASSET, "500", condition]]


@pytest.mark.parametrize("proto", [b"", b"\xff\xff", b":J" + ASSET.encode() + b"B\xc8", b":J" + ASSET.encode() + b"B"],
                         ids=["empty", "unreadable", "a length past 127", "cut after the tag"])
async def test_a_proto_the_read_cannot_take_a_condition_id_from_is_one_of_none(store: RouterStore, db_url: str,
                                                                                proto: bytes) -> None:
    """Never an error (that would stop the batch): keyed by its asset, as a BUY of no condition id."""
    _manual_buy(db_url, "man_1", proto)
    assert await _buying(store) == [["w_1", ASSET, "500", ""]]
