"""Through real Envoy: a boolean field takes only a JSON ``true`` or ``false``; anything else is 400 naming it
and creates nothing (the transcoder would read ``"no"`` or ``"0"`` as a bool)."""

from __future__ import annotations

import orjson
import pytest

from tests.edge.conftest import EdgeStack, raw_request
from tests.edge.test_strict_input import subscription

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("value", ["no", "yes", "t", "0", "true", 0, 1, None, [], {}])
@pytest.mark.parametrize("name", ["copySells", "copy_sells"])
def test_a_non_boolean_for_a_bool_field_is_400_naming_it(edge: EdgeStack, name: str, value: object) -> None:
    body = subscription(filters={name: value})
    status, _, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), orjson.dumps(body))
    assert (status, reply) == (400, {"code": 3, "message": f"filters.{name}: must be true or false", "details": []})
    status, _, listed = raw_request(edge.envoy.port, "GET", f"/subscriptions?followerProxy={body['followerProxy']}",
                                    edge.auth())
    assert listed["subscriptions"] == []


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_literal_is_accepted(edge: EdgeStack, value: bool) -> None:
    body = subscription(filters={"copySells": value})
    status, _, reply = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(), orjson.dumps(body))
    assert status == 200, reply
    assert reply["filters"]["copySells"] is value


def test_a_patch_takes_only_a_boolean_literal(edge: EdgeStack) -> None:
    status, _, created = raw_request(edge.envoy.port, "POST", "/subscriptions", edge.auth(),
                                     orjson.dumps(subscription()))
    assert status == 200, created
    path = f"/subscriptions/{created['id']}"
    status, _, reply = raw_request(edge.envoy.port, "PATCH", path, edge.auth(), b'{"filters":{"copySells":"no"}}')
    assert (status, reply["message"]) == (400, "filters.copySells: must be true or false")
    status, _, got = raw_request(edge.envoy.port, "GET", path, edge.auth())
    assert got["filters"]["copySells"] is True
