"""Where a POST's time went: ingest → routed → admitted → POST sent → the venue, from the Order's stamps, the
executor's and the venue's receipt (pure join, no stack)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench._pipeline_harness import MILESTONES, STAGES, fanout_timeline, stage_split
from tradingtools.execution.v1 import execution_pb2 as epb

MS = 1_000_000


@dataclass
class _Post:
    client_order_id: str
    arrival_ns: int


def _order(coid: str, received_ms: int = 100, routed_ms: int = 103) -> epb.Order:
    return epb.Order(client_order_id=coid, received_time_ns=received_ms * MS, routed_time_ns=routed_ms * MS)


def test_the_stages_of_a_post_add_up_to_its_ingest_to_post() -> None:
    split = stage_split([_Post("co_1", 120 * MS)], {"co_1": _order("co_1")}, {"co_1": (110 * MS, 119 * MS)})
    assert {name: values[0] for name, values in split.items()} == {
        "ingest→routed": 3.0, "routed→admitted": 7.0, "admitted→POST sent": 9.0, "POST sent→venue": 1.0}
    assert sum(values[0] for values in split.values()) == 20.0


@pytest.mark.parametrize(("orders", "stamps"), [
    ({}, {"co_1": (110 * MS, 119 * MS)}),  # not in the routed log
    ({"co_1": _order("co_1", received_ms=0)}, {"co_1": (110 * MS, 119 * MS)}),  # no ingest stamp
    ({"co_1": _order("co_1")}, {}),  # no row in the executor's table
    ({"co_1": _order("co_1")}, {"co_1": (None, 119 * MS)}),  # admitted before the stamp existed
    ({"co_1": _order("co_1")}, {"co_1": (110 * MS, None)}),  # no POST sent yet
])
def test_a_post_missing_a_stamp_is_left_out_of_every_stage(orders: dict[str, epb.Order],
                                                           stamps: dict[str, tuple[int | None, int | None]]) -> None:
    split = stage_split([_Post("co_1", 120 * MS)], orders, stamps)
    assert split == {name: [] for name in STAGES}


def test_a_fanout_timeline_marks_first_and_last_of_each_step() -> None:
    posts = [_Post("co_1", 130 * MS), _Post("co_2", 150 * MS), _Post("co_3", 140 * MS)]
    orders = {c: _order(c, routed_ms=r) for c, r in (("co_1", 104), ("co_2", 106), ("co_3", 105))}
    stamps = {"co_1": (110 * MS, 125 * MS), "co_2": (120 * MS, 149 * MS), "co_3": (115 * MS, 139 * MS)}
    assert fanout_timeline(posts, orders, stamps) == {
        "routed": 6.0, "first admitted": 10.0, "last admitted": 20.0, "first POST sent": 25.0,
        "last POST sent": 49.0, "last at venue": 50.0}


def test_a_fanout_without_a_stamped_post_has_no_timeline() -> None:
    assert fanout_timeline([_Post("co_1", 130 * MS)], {"co_1": _order("co_1")}, {}) == {}
    assert list(MILESTONES) == ["routed", "first admitted", "last admitted", "first POST sent", "last POST sent",
                                "last at venue"]
