"""Through real Envoy: a JSON field or a query parameter given twice (in either spelling) is ambiguous input,
400 naming it, and nothing is created; the same name in different objects is not a repeat."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.edge.conftest import EdgeStack, raw_request
from tests.edge.test_strict_input import address, subscription

pytestmark = pytest.mark.integration


def _with(body: dict[str, Any], member: str) -> bytes:
    """``body`` as JSON with the raw ``"key": value`` ``member`` appended at the top level."""
    return orjson.dumps(body)[:-1] + b", " + member.encode() + b"}"


def _listed(edge: EdgeStack, follower: str) -> list[object]:
    status, _, reply = raw_request(edge.envoy.port, "GET", f"/subscriptions?followerProxy={follower}", edge.auth())
    assert status == 200, reply
    return list(reply["subscriptions"])


@pytest.mark.parametrize(("member", "field"), [
    ('"followerProxy": "{b}"', "followerProxy"),
    ('"follower_proxy": "{b}"', "follower_proxy"),
    ('"sizing": {{"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "5"}}', "sizing"),
])
def test_a_top_level_field_given_twice_is_400_and_creates_nothing(edge: EdgeStack, member: str,
                                                                  field: str) -> None:
    first, second = address(), address()
    raw = _with(subscription(followerProxy=first), member.format(b=second))
    status, _, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), raw)
    assert (status, reply) == (400, {"code": 3, "message": f"{field}: duplicate field", "details": []})
    assert _listed(edge, first) + _listed(edge, second) == []


def test_a_nested_field_given_twice_is_400_naming_its_path(edge: EdgeStack) -> None:
    follower = address()
    raw = orjson.dumps(subscription(followerProxy=follower, sizing={}))
    raw = raw.replace(b'"sizing":{}', b'"sizing":{"mode":"SIZING_MODE_PROPORTIONAL","ratio":"0.05","ratio":"9"}')
    status, _, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), raw)
    assert (status, reply["message"]) == (400, "sizing.ratio: duplicate field")
    assert _listed(edge, follower) == []


def test_the_same_field_in_different_objects_is_not_a_repeat(edge: EdgeStack) -> None:
    ladder = [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "50", "sellFraction": "1"}]
    body = subscription(exits={"ladder": ladder}, risk={"maxOpenPositions": 3}, filters={"maxSlippageBps": 100})
    status, _, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), orjson.dumps(body))
    assert status == 200, reply
    assert [step["gainPct"] for step in reply["exits"]["ladder"]] == ["20", "50"]


@pytest.mark.parametrize(("query", "field"), [
    ("/subscriptions?followerProxy={a}&followerProxy={b}", "followerProxy"),
    ("/subscriptions?followerProxy={a}&follower_proxy={b}", "follower_proxy"),
    ("/subscriptions?follower%5Fproxy={a}&followerProxy={b}", "followerProxy"),
    ("/subscriptions?followerProxy={a}&pageSize=1&pageSize=2", "pageSize"),
    ("/subscriptions?followerProxy={a}&state=SUBSCRIPTION_STATE_ACTIVE&state=SUBSCRIPTION_STATE_PAUSED", "state"),
    ("/triggers?wallet={a}&wallet={b}", "wallet"),
    ("/positions?wallet={a}&wallet={b}", "wallet"),
    ("/subscriptions/sub_x/fills?page_size=1&pageSize=2", "pageSize"),
])
def test_a_query_parameter_given_twice_is_400_naming_it(edge: EdgeStack, query: str, field: str) -> None:
    status, _, reply = raw_request(edge.envoy.port, "GET", query.format(a=address(), b=address()), edge.auth())
    assert (status, reply) == (400, {"code": 3, "message": f"{field}: query parameter given more than once",
                                     "details": []})


def test_distinct_query_parameters_pass(edge: EdgeStack) -> None:
    follower = address()
    status, _, reply = raw_request(edge.envoy.port, "GET",
                                   f"/subscriptions?followerProxy={follower}&leaderProxy={address()}&pageSize=5",
                                   edge.auth())
    assert status == 200, reply
