"""Through real Envoy: the access log never holds a token sent in the query string. Known query parameters
(the routes' own fields) are logged as sent; any other parameter is logged as ``REDACTED``."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.edge.conftest import EdgeStack, Envoy, raw_request
from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration


def _entry(edge: EdgeStack, marker: str) -> dict[str, Any]:
    def found() -> dict[str, Any]:
        lines = edge.envoy.access_entries()
        hits = [e for e in lines if marker in str(e.get("path") or "")]
        assert hits, "no access log line yet"
        return hits[-1]

    return eventually_sync(found, message="access log line")


@pytest.mark.parametrize("with_header", [False, True])
@pytest.mark.parametrize("parameter", ["access_token={t}", "{t}", "x=1&token={t}", "access%5Ftoken={t}&y"])
def test_a_token_in_the_query_string_is_not_logged(edge: EdgeStack, parameter: str, with_header: bool) -> None:
    follower = "0x" + secrets.token_hex(20)
    token = edge.tokens[1]
    raw_request(edge.envoy.port, "GET", f"/subscriptions?followerProxy={follower}&{parameter.format(t=token)}",
                edge.auth() if with_header else {})
    entry = _entry(edge, follower)
    assert entry["path"].startswith(f"/subscriptions?followerProxy={follower}&REDACTED")
    assert token not in orjson.dumps(entry).decode()


def test_known_query_parameters_are_logged_as_sent(edge: EdgeStack) -> None:
    follower = "0x" + secrets.token_hex(20)
    path = f"/subscriptions?follower_proxy={follower}&pageSize=5&state=SUBSCRIPTION_STATE_ACTIVE"
    status, _, _ = raw_request(edge.envoy.port, "GET", path, edge.auth())
    assert status == 200
    entry = _entry(edge, follower)
    assert entry["path"] == path
    assert entry["grpc_method"] == "/tradingtools.control.v1.SubscriptionService/ListSubscriptionsJson"


def test_a_refused_request_logs_no_query_as_its_method(edge: EdgeStack) -> None:
    """A request refused before transcoding keeps its own :path, which must not bring the query in."""
    marker = secrets.token_hex(8)
    status, _, _ = raw_request(edge.envoy.port, "GET", f"/subscriptions/sub_{marker}?access_token={edge.tokens[0]}",
                               {})
    assert status == 401
    entry = _entry(edge, marker)
    assert entry["grpc_method"] == f"/subscriptions/sub_{marker}"
    assert edge.tokens[0] not in orjson.dumps(entry).decode()



@pytest.mark.parametrize("where", ["?followerProxy={t}", "?followerProxy=0x{t}", "?followerProxy=%{h}{rest}",
                                   "/{t}", "/sub_{t}", "/{t}/fills"])
@pytest.mark.parametrize("with_header", [False, True])
def test_a_token_in_a_known_parameter_or_the_path_is_not_logged(edge: EdgeStack, where: str, with_header: bool) -> None:
    """Known parameters' values and the path are logged as sent, but never a run of hex as long as a token."""
    marker = "zz" + secrets.token_hex(8)
    token = edge.tokens[1]
    where = where.format(t=token, h=f"{ord(token[0]):02x}", rest=token[1:])
    path = f"/subscriptions{where}{'&' if '?' in where else '?'}pageToken={marker}"
    raw_request(edge.envoy.port, "GET", path, edge.auth() if with_header else {})
    entry = _entry(edge, marker)
    assert "REDACTED" in entry["path"]
    logged = orjson.dumps(entry).decode()
    assert token not in logged and token[1:] not in logged


def test_a_line_envoy_is_still_writing_is_not_read(tmp_path: Path) -> None:
    """Envoy writes a line in pieces: the part written so far is not an entry yet (reading it raised before)."""
    log = tmp_path / "access.log"
    log.write_text('{"path": "/a"}\n{"path": "/b", "sta')
    envoy = Envoy(proc=None, settings=None, access_log=log)  # type: ignore[arg-type]
    assert envoy.access_entries() == [{"path": "/a"}]
    log.write_text('{"path": "/a"}\n{"path": "/b", "status": 200}\n')
    assert [e["path"] for e in envoy.access_entries()] == ["/a", "/b"]
