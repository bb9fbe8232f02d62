"""Order events in batches on real PostgreSQL: the same rows as one by one, in one transaction per batch."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from psycopg.pq import TransactionStatus

from common.marketstate import MarketInfo
from common.storage import create_pool
from services.guard.adapters.exit_store import ExitStore
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.coordinator import Clients, Guard, Stores
from services.guard.domain.exit_plans import CopyFill
from tests.guard.standins import (
    BUY,
    CONDITION,
    SELL,
    WALLET,
    WALLET_ID,
    copy_fill,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
)
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

ASSETS = [f"7{i:03d}" + "1" * 70 for i in range(5)]
EXITS = {"takeProfitPct": "40", "stopLossPct": "25"}


OpenPool = Callable[[int], Awaitable[Any]]


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[Any]:
    """A connection for seeding and reading the rows."""
    c = await db(db_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def pools(db_url: str) -> AsyncIterator[OpenPool]:
    """Opens the pool a test runs guard on, of the size it asks for (closed afterwards)."""
    opened: list[Any] = []

    async def open_pool(max_size: int) -> Any:
        opened.append(await create_pool(db_url, min_size=1, max_size=max_size, autocommit=True))
        return opened[-1]

    try:
        yield open_pool
    finally:
        for pool in opened:
            await pool.close()


class _Kick:
    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


class _Markets:
    async def market(self, asset_id: str) -> MarketInfo:
        return MarketInfo(asset_id, CONDITION, Decimal("0.01"), Decimal(5))

    def forget(self, asset_id: str) -> None:
        return None


class _Counting:
    """The pool, counting connections taken, transactions and statements (what reaches PostgreSQL)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.checkouts = 0
        self.statements = 0
        self.transactions = 0

    def connection(self) -> Any:
        outer = self

        class _Conn:
            def __init__(self, conn: Any) -> None:
                self.conn = conn

            async def execute(self, *args: Any, **kwargs: Any) -> Any:
                if args[0] == "BEGIN":  # common.storage.pipelined_transaction
                    outer.transactions += 1
                elif args[0] not in ("COMMIT", "ROLLBACK"):
                    outer.statements += 1
                return await self.conn.execute(*args, **kwargs)

            def transaction(self) -> Any:
                outer.transactions += 1
                return self.conn.transaction()

            def pipeline(self) -> Any:
                return self.conn.pipeline()

            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                return self.conn.cursor(*args, **kwargs)

        class _Ctx:
            async def __aenter__(self) -> _Conn:
                outer.checkouts += 1
                self.cm = outer.pool.connection()
                return _Conn(await self.cm.__aenter__())

            async def __aexit__(self, *exc: Any) -> Any:
                return await self.cm.__aexit__(*exc)

        return _Ctx()


def _clock() -> datetime:
    return datetime.now(UTC)


def _guard(pool: Any) -> Guard:
    return Guard(Stores(triggers=TriggerStore(pool, _clock), exits=ExitStore(pool, _clock)),
                 Clients(executor=None, markets=_Markets(), outbox=_Kick(), watch=_Kick()))  # type: ignore[arg-type]


async def _reset(conn: Any) -> None:
    await conn.execute("TRUNCATE guard_position_exits, triggers, guard_trigger_events, positions, subscriptions"
                       " CASCADE")


async def _seed(conn: Any) -> None:
    """Two subscriptions (one without exits, one with), positions on four assets (one closed), three manual
    trigger SELLs in flight."""
    await insert_subscription(conn, "sub_plain", exits={}, leader="0x" + "1" * 40)
    await insert_subscription(conn, "sub_exits", exits=EXITS, leader="0x" + "2" * 40)
    for asset, size in zip(ASSETS, ["100", "50", "0", "20"], strict=False):
        await set_position(conn, size, "0.40", asset_id=asset)
    for tid, asset in (("trg_m", ASSETS[3]), ("trg_n", ASSETS[0]), ("trg_o", ASSETS[1])):
        await insert_trigger(conn, tid, "STOP_LOSS", price="0.3", fraction="1", asset_id=asset)
        await conn.execute("UPDATE triggers SET state = 'FIRED', order_id = %s, fire_count = 1 WHERE id = %s",
                           ("co" + tid[3:], tid))


async def _snapshot(conn: Any) -> dict[str, Any]:
    groups = await (await conn.execute(
        "SELECT oco_group, follower_wallet_id, asset_id, wallet, subscription_id, opening_order_id, entry_price,"
        " position_size, exits, skipped, state, closed_reason FROM guard_position_exits ORDER BY oco_group")).fetchall()
    triggers = await (await conn.execute(
        "SELECT id, asset_id, kind, trigger_price, size, sell_fraction, oco_group, state, state_reason, filled_size"
        " FROM triggers ORDER BY id")).fetchall()
    events = await (await conn.execute(
        "SELECT trigger_id, count(*) AS n FROM guard_trigger_events GROUP BY trigger_id ORDER BY trigger_id"
    )).fetchall()
    # when each position was opened is a time of this run (the other run's differs)
    return {"groups": [{**r, "exits": {k: v for k, v in r["exits"].items() if k != "opened_at"}} for r in groups],
            "triggers": [dict(r) for r in triggers],
            "events": [dict(r) for r in events]}


_SELLS = {"trg_m": ASSETS[3], "trg_n": ASSETS[0], "trg_o": ASSETS[1]}


def _trigger_sell(kind: int, filled: str, event_id: str = "", trigger_id: str = "trg_m") -> epb.OrderEvent:
    return epb.OrderEvent(event_id=event_id or f"oev_{trigger_id}_{kind}_{filled}", type=kind,  # type: ignore[arg-type]
                          origin=epb.ORDER_ORIGIN_TRIGGER, trigger_id=trigger_id, client_order_id="co" + trigger_id[3:],
                          side=SELL, follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=_SELLS[trigger_id],
                          filled_size=filled, avg_price="0.3")


def _events(rng: random.Random) -> list[epb.OrderEvent]:
    """A random stream: copy BUYs placed and filled on five assets under three subscriptions, replays,
    a copy SELL fill, the in-flight trigger SELL settling part-way."""
    out: list[epb.OrderEvent] = []
    for n in range(rng.randint(5, 30)):
        asset = rng.choice(ASSETS)
        sub = rng.choice(["sub_plain", "sub_plain", "sub_exits", "sub_missing"])
        roll = rng.random()
        if roll < 0.2:
            out.append(copy_fill(f"co_{n}", BUY, filled="0", price="0", sub_id=sub, asset_id=asset,
                                 kind=epb.ORDER_EVENT_TYPE_PLACED))
        elif roll < 0.3 and out:
            out.append(rng.choice(out))  # the executor's answer and the stream deliver an event twice
        elif roll < 0.35:
            out.append(copy_fill(f"co_{n}", SELL, filled="5", price="0.5", sub_id=sub, asset_id=asset))
        elif roll < 0.5:
            out.append(_trigger_sell(rng.choice([epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED,
                                                 epb.ORDER_EVENT_TYPE_FILLED, epb.ORDER_EVENT_TYPE_REJECTED]),
                                     rng.choice(["0", "10", "20"]), trigger_id=rng.choice(sorted(_SELLS))))
        else:
            out.append(copy_fill(f"co_{n}", BUY, filled=str(rng.randint(1, 30)), price="0.4", sub_id=sub,
                                 asset_id=asset))
    return out


async def _run(conn: Any, pool: Any, events: list[epb.OrderEvent],
               handle: Callable[[Guard, list[epb.OrderEvent]], Any]) -> tuple[dict[str, Any], set[str], int]:
    await _reset(conn)
    await _seed(conn)
    guard = _guard(pool)
    await handle(guard, events)
    return await _snapshot(conn), guard.engine.ids(), guard.stats.order_events + guard.stats.repeated_events


async def _one_by_one(guard: Guard, events: list[epb.OrderEvent]) -> None:
    for ev in events:
        await guard.on_order_event(ev)


@pytest.mark.parametrize("seed", range(8))
async def test_a_batch_leaves_the_rows_one_by_one_handling_leaves(conn: Any, pools: OpenPool, seed: int) -> None:
    pool = await pools(3)
    events = _events(random.Random(seed))
    single = await _run(conn, pool, events, _one_by_one)

    async def in_batches(guard: Guard, evs: list[epb.OrderEvent]) -> None:
        rng = random.Random(seed + 100)
        i = 0
        while i < len(evs):
            size = rng.randint(1, 12)
            await guard.on_order_events(evs[i:i + size])
            i += size

    batched = await _run(conn, pool, events, in_batches)
    assert batched == single
    assert single[0]["groups"]  # the stream did register something


async def test_a_batch_of_fills_is_one_statement_or_two_in_autocommit(conn: Any, pools: OpenPool) -> None:
    pool = await pools(1)
    await _seed(conn)
    counting = _Counting(pool)
    store = ExitStore(pool, _clock)
    store.pool = counting  # type: ignore[assignment]
    fills = [CopyFill(WALLET_ID, WALLET, asset, "sub_plain", f"co_{n}_{asset[:4]}", Decimal(5), Decimal("0.4"))
             for n in range(20) for asset in ASSETS[:2]]
    changes = await store.on_buy_fills_quick(fills)
    # per position: the first fill records the empty group, the later ones resize it
    assert [c.outcome if c else None for c in changes] == ["CREATED", "CREATED"] + ["RESIZED"] * 38
    assert (counting.checkouts, counting.transactions, counting.statements) == (1, 0, 2)
    groups = {r["asset_id"]: r for r in (await _snapshot(conn))["groups"]}
    assert {a: (g["opening_order_id"], g["position_size"]) for a, g in groups.items()} == {
        ASSETS[0]: (f"co_0_{ASSETS[0][:4]}", Decimal(100)), ASSETS[1]: (f"co_0_{ASSETS[1][:4]}", Decimal(50))}

    # both groups exist now: one statement resizes them (the steady state of a followed position)
    counting.checkouts = counting.transactions = counting.statements = 0
    changes = await store.on_buy_fills_quick(fills[:4])
    assert [c.outcome if c else None for c in changes] == ["RESIZED"] * 4
    assert (counting.checkouts, counting.transactions, counting.statements) == (1, 0, 1)

    # resizes, and a new position's registration
    counting.checkouts = counting.transactions = counting.statements = 0
    changes = await store.on_buy_fills_quick(
        [*fills[:4], CopyFill(WALLET_ID, WALLET, ASSETS[4], "sub_plain", "co_new", Decimal(5), Decimal("0.4"))])
    assert [c.outcome if c else None for c in changes] == ["RESIZED"] * 4 + ["CREATED"]
    assert (counting.checkouts, counting.transactions, counting.statements) == (1, 0, 2)

    # a closed position, a subscription with exits: left to the full path, all of that position's fills
    changes = await store.on_buy_fills_quick([
        CopyFill(WALLET_ID, WALLET, ASSETS[2], "sub_plain", "co_closed", Decimal(5), Decimal("0.4")),
        CopyFill(WALLET_ID, WALLET, ASSETS[3], "sub_exits", "co_exits", Decimal(5), Decimal("0.4")),
        CopyFill(WALLET_ID, WALLET, ASSETS[3], "sub_plain", "co_plain", Decimal(5), Decimal("0.4")),
        CopyFill(WALLET_ID, WALLET, ASSETS[0], "sub_plain", "co_more", Decimal(5), Decimal("0.4"))])
    assert [c.outcome if c else None for c in changes] == [None, None, None, "RESIZED"]
    async with pool.connection() as pooled:  # nothing left open on the connection
        assert pooled.info.transaction_status is TransactionStatus.IDLE


async def test_copy_buy_fills_of_a_batch_reach_postgresql_together(conn: Any, pools: OpenPool) -> None:
    pool = await pools(2)
    await _seed(conn)
    counting = _Counting(pool)
    guard = _guard(counting)
    events = [copy_fill(f"co_{n}", BUY, filled="5", price="0.4", sub_id="sub_plain", asset_id=ASSETS[n % 2],
                        kind=kind)
              for n in range(30) for kind in (epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED)]
    await guard.on_order_events(events)
    assert counting.checkouts == 1 and counting.statements == 2  # resizes and peeks, the registrations
    assert guard.stats.order_events == 60
    assert isinstance(guard.outbox, _Kick) and guard.outbox.kicks == 0  # no trigger event was written


async def test_a_batch_that_fails_part_way_and_is_rerun_one_by_one_ends_the_same(conn: Any, pools: OpenPool) -> None:
    pool = await pools(3)
    events = [*_events(random.Random(42)), _trigger_sell(epb.ORDER_EVENT_TYPE_FILLED, "20", "oev_last")]
    events += _events(random.Random(43))
    single = await _run(conn, pool, events, _one_by_one)

    async def failing_then_rerun(guard: Guard, evs: list[epb.OrderEvent]) -> None:
        settle_many = guard.store.settle_many
        failed: list[bool] = []

        async def down_once(*args: Any) -> Any:
            if not failed:
                failed.append(True)
                raise ConnectionError("postgres gone")
            return await settle_many(*args)

        guard.store.settle_many = down_once  # type: ignore[method-assign,assignment]
        with pytest.raises(ConnectionError):
            await guard.on_order_events(evs)
        assert failed
        for ev in evs:  # what the consumer does with a batch that raised
            await guard.on_order_event(ev)

    rerun = await _run(conn, pool, events, failing_then_rerun)
    assert rerun[:2] == single[:2]


async def test_a_sell_fill_that_leaves_shares_or_has_no_exits_costs_one_statement(conn: Any, pools: OpenPool) -> None:
    pool = await pools(1)
    await _seed(conn)  # ASSETS[0] holds 100, ASSETS[2] is closed, ASSETS[4] has no position
    counting = _Counting(pool)
    store = ExitStore(pool, _clock)
    store.pool = counting  # type: ignore[assignment]
    for asset, outcome in [(ASSETS[0], "OPEN"), (ASSETS[2], "NO_POSITION"), (ASSETS[4], "NO_POSITION")]:
        counting.checkouts = counting.transactions = counting.statements = 0
        assert (await store.on_sell_fill(WALLET_ID, asset)).outcome == outcome
        assert (counting.checkouts, counting.transactions, counting.statements) == (1, 0, 1)

    # a closed position whose group has exits: the locked path cancels them. What the exit left is below one
    # share step (the BUY's fee was taken in shares): it can never be sold, so the position counts as closed.
    await store.on_buy_fill(CopyFill(WALLET_ID, WALLET, ASSETS[1], "sub_exits", "co_x", Decimal(50),
                                     Decimal("0.4")), Decimal("0.01"))
    await set_position(conn, "0.004", "0.40", asset_id=ASSETS[1])
    counting.checkouts = counting.transactions = counting.statements = 0
    change = await store.on_sell_fill(WALLET_ID, ASSETS[1])
    assert change.outcome == "POSITION_CLOSED" and len(change.cancelled) == 2
    assert counting.transactions == 1
    async with pool.connection() as pooled:  # nothing left open on the connection
        assert pooled.info.transaction_status is TransactionStatus.IDLE


async def test_a_closed_position_takes_its_manual_triggers_along(conn: Any, pools: OpenPool) -> None:
    """Contract: a trigger is CANCELLED "when the position is gone", copy exit or not: left armed, a manual
    take-profit would sell the next position a later copy opens in that asset."""
    pool = await pools(1)
    store = ExitStore(pool, _clock)
    await set_position(conn, "100", "0.40", asset_id=ASSETS[0])
    await insert_trigger(conn, "trg_manual", "TAKE_PROFIT", price="0.6", fraction="1", asset_id=ASSETS[0])
    await insert_trigger(conn, "trg_other", "TAKE_PROFIT", price="0.6", fraction="1", asset_id=ASSETS[1])
    assert (await store.on_sell_fill(WALLET_ID, ASSETS[0])).outcome == "OPEN"
    await set_position(conn, "0", "0.40", asset_id=ASSETS[0])
    change = await store.on_sell_fill(WALLET_ID, ASSETS[0])
    assert change.outcome == "POSITION_CLOSED" and [r.id for r in change.cancelled] == ["trg_manual"]
    states = {r["id"]: r["state"] for r in await (await conn.execute("SELECT id, state FROM triggers")).fetchall()}
    assert states == {"trg_manual": "CANCELLED", "trg_other": "ARMED"}
    assert (await store.on_sell_fill(WALLET_ID, ASSETS[0])).outcome == "NO_POSITION"


async def test_trigger_sells_of_a_batch_settle_in_one_transaction(conn: Any, pools: OpenPool) -> None:
    pool = await pools(2)
    await _seed(conn)
    counting = _Counting(pool)
    guard = _guard(counting)
    events = [_trigger_sell(epb.ORDER_EVENT_TYPE_PLACED, "0", trigger_id=t) for t in sorted(_SELLS)]
    events += [_trigger_sell(epb.ORDER_EVENT_TYPE_FILLED, "10", trigger_id=t) for t in sorted(_SELLS)]
    await guard.on_order_events(events)
    # one transaction settles the three; each SELL fill then looks at its position (shares left: one read)
    assert (counting.transactions, counting.checkouts) == (1, 4)
    states = await (await conn.execute("SELECT id, state FROM triggers ORDER BY id")).fetchall()
    assert [(r["id"], r["state"]) for r in states] == [("trg_m", "DONE"), ("trg_n", "DONE"), ("trg_o", "DONE")]
    assert guard.stats.order_events == 6

