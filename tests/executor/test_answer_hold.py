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
