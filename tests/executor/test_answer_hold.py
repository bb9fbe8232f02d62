"""A fan-out's venue answers are held unread until its POSTs are written, and every order still ends once."""

from __future__ import annotations

from typing import Any

import pytest

from services.executor.adapters.insiders_api import InsidersVenue
from services.executor.admission import FIRST_CHUNK
from services.executor.domain.ticket import INSIDERS
from tests.executor.conftest import ASSET, Harness, make_order
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_answers_to_a_fan_out_wait_until_its_posts_are_written(harness: Harness) -> None:
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "100000"), ("0.51", "100000")])
    running = await harness.start_executor()
    venue = running.runner.venues[INSIDERS]
    assert isinstance(venue, InsidersVenue)
    releases: list[dict[str, Any]] = []
    release = venue.release_answers

    def recording_release() -> None:
        releases.append({"held": len(venue.http._hold.conns), "unsent": running.runner.burst.unsent,
                         "posts": len(harness.fake.posts)})
        release()

    venue.release_answers = recording_release  # type: ignore[method-assign]
    # the later chunks' intents are inserted only once answers to the first chunk's POSTs have come in (and
    # are held), so they come in while the burst is still being written, however loaded the machine is (a
    # fixed delay was not always enough for the in-process fake to answer)
    store = running.admission.store
    insert = store.insert_intents

    async def slow_later_chunks(items: Any) -> Any:
        if len(items) > FIRST_CHUNK:
            await eventually(lambda: len(venue.http._hold.conns) > 0, timeout_s=20,
                             message="answers to the first POSTs held while the burst is written")
        return await insert(items)

    store.insert_intents = slow_later_chunks  # type: ignore[method-assign]
    orders = [make_order(i) for i in range(200)]
    await harness.route(*orders)
    async def all_terminal() -> bool:
        return await harness.all_terminal(orders)

    await eventually(all_terminal, timeout_s=30)  # type: ignore[arg-type]  # helpers.eventually typing

    assert releases and releases[0]["held"] > 0  # answers came in while the burst was written, and waited
    assert releases[0]["unsent"] <= running.runner.burst.min_pending
    assert all(n == 1 for n in harness.fake.post_counts().values()) and len(harness.fake.post_counts()) == 200
    assert not running.runner.burst.holding and running.runner.burst.unsent == 0
    assert running.runner.burst.pending == 0


async def test_a_fan_out_wider_than_the_in_flight_bound_does_not_wait_for_the_hold_to_expire(
        harness: Harness) -> None:
    """The answers held while a burst is written are the ones that free in-flight slots: with 8 slots, the hold
    allowed 60 s and a POST 60 s to be answered (a deadline reads the held answers), 200 orders would stand
    still for a minute after their first 8 POSTs."""
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "100000"), ("0.51", "100000")])
    running = await harness.start_executor(TT_TUNE_EXECUTOR_MAX_INFLIGHT="8", TT_TUNE_EXECUTOR_ANSWER_DEFER_S="60",
                                           TT_TUNE_EXECUTOR_POST_TIMEOUT_S="60")
    assert running.runner.burst.max_wait_s == 60.0
    # the fan-out is still being admitted (its later intents wait for POSTs beyond the first 8 slots), so its
    # answers are held: only the in-flight bound's need for them can end the hold
    store = running.admission.store
    insert = store.insert_intents
    calls = 0

    async def later_chunks_after_the_slots_turned_over(items: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 2:
            await eventually(lambda: len(harness.fake.posts) >= 24, timeout_s=20,
                             message="POSTs beyond the in-flight bound while the fan-out is admitted")
        return await insert(items)

    store.insert_intents = later_chunks_after_the_slots_turned_over  # type: ignore[method-assign]
    orders = [make_order(i) for i in range(200)]
    await harness.route(*orders)

    async def all_posted() -> bool:
        return len(harness.fake.post_counts()) == 200

    await eventually(all_posted, timeout_s=30)  # type: ignore[arg-type]
    assert all(n == 1 for n in harness.fake.post_counts().values())
    assert not running.runner.burst.holding
