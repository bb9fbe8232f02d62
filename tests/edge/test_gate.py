"""The edge's bearer gate and its deny rules: 401 + WWW-Authenticate, internal routes 404."""

from __future__ import annotations

import grpc
import pytest

from tests.edge.conftest import EdgeStack, raw_request
from tradingtools.control.v1 import control_pb2, control_pb2_grpc

pytestmark = pytest.mark.integration

PROTECTED = "/subscriptions?followerProxy=0x6af75d4e4aaf700450efbac3708cce1665810ff1"


def _assert_unauthenticated(status: int, headers: dict[str, str], body: object) -> None:
    assert status == 401
    assert headers.get("www-authenticate") == "Bearer"
    assert isinstance(body, dict) and body["code"] == 16 and "bearer token" in body["message"]


@pytest.mark.parametrize(
    ("name", "header_values"),
    [
        ("no header", []),
        ("wrong token", ["Bearer " + "0" * 64]),
        ("bare token", ["{t}"]),
        ("basic scheme", ["Basic {t}"]),
        ("two spaces", ["Bearer  {t}"]),
        ("trailing junk", ["Bearer {t}x"]),
        ("token prefix", ["Bearer {t_short}"]),
        ("empty", [""]),
        ("two headers, both valid", ["Bearer {t}", "Bearer {t}"]),
        ("two headers, valid then wrong", ["Bearer {t}", "Bearer " + "0" * 64]),
        ("two headers, wrong then valid", ["Bearer " + "0" * 64, "Bearer {t}"]),
    ],
)
def test_requests_without_exactly_one_valid_bearer_token_get_401(edge: EdgeStack, name: str,
                                                                 header_values: list[str]) -> None:
    token = edge.tokens[0]
    extra = [("Authorization", v.format(t=token, t_short=token[:-1])) for v in header_values]
    status, headers, body = raw_request(edge.envoy.port, "GET", PROTECTED, extra_headers=extra)
    _assert_unauthenticated(status, headers, body)


@pytest.mark.parametrize("token_index", [0, 1])
def test_every_configured_token_is_accepted(edge: EdgeStack, token_index: int) -> None:
    status, _, body = raw_request(edge.envoy.port, "GET", PROTECTED, edge.auth(token_index))
    assert status == 200, body
    assert body == {"subscriptions": [], "nextPageToken": ""}


@pytest.mark.parametrize("path", ["/health", "/ready"])
@pytest.mark.parametrize("with_token", [False, True])
def test_probes_are_open_and_a_token_does_no_harm(edge: EdgeStack, path: str, with_token: bool) -> None:
    status, _, body = raw_request(edge.envoy.port, "GET", path, edge.auth() if with_token else None)
    assert status == 200, body
    assert body["status"] in ("SERVING", "READY")


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_a_wrong_token_on_a_probe_is_ignored(edge: EdgeStack, path: str) -> None:
    status, _, _ = raw_request(edge.envoy.port, "GET", path, {"Authorization": "Bearer nope"})
    assert status == 200


INTERNAL_SPELLINGS = [
    "/subscriptions/funding",
    "/subscriptions/funding/",
    "//subscriptions//funding",
    "/subscriptions//funding//",
    "/subscriptions/%66unding",
    "/subscriptions/%66%75%6E%64%69%6E%67",
    "/subscriptions%2Ffunding",
    "/subscriptions%2ffunding",
    "/subscriptions%5Cfunding",
    "/Subscriptions/Funding",
    "/SUBSCRIPTIONS/FUNDING",
    "/subscriptions/./funding",
    "/subscriptions/%2e/funding",
    "/./subscriptions/funding",
    "/subscriptions/x/../funding",
    "/subscriptions/funding;x",
    "/subscriptions/funding?followerWalletId=w",
    "/subscriptions/sub_01/perf-action",
    "/subscriptions/sub_01/perf-action/",
    "/subscriptions//sub_01//perf-action",
    "/subscriptions/sub_01/perf%2Daction",
    "/subscriptions/sub_01/%70erf-action",
    "/subscriptions/sub_01%2Fperf-action",
    "/Subscriptions/sub_01/Perf-Action",
    "/subscriptions/sub_01/./perf-action",
    "/tradingtools.control.v1.InternalControlService/RecordFunding",
    "/tradingtools.control.v1.InternalControlService/ApplyPerfAction",
    "/tradingtools.control.v1.InternalControlService/GetFunding",
    "//tradingtools.control.v1.InternalControlService//RecordFunding",
]


@pytest.mark.parametrize("path", INTERNAL_SPELLINGS)
@pytest.mark.parametrize("with_token", [False, True])
def test_internal_routes_are_404_whatever_the_spelling_and_the_token(edge: EdgeStack, path: str,
                                                                     with_token: bool) -> None:
    body = b'{"followerWalletId": "w_1", "balanceUsd": "100", "action": "PERF_ACTION_PAUSE"}'
    status, _, reply = raw_request(edge.envoy.port, "POST", path, edge.auth() if with_token else None, body)
    assert status == 404, reply
    assert reply == {"code": 5, "message": "not found", "details": []}


def test_grpc_through_the_edge_reaches_nothing(edge: EdgeStack) -> None:
    """gRPC requests never pass the edge; the internal service answers only on the internal port."""
    metadata = (("authorization", f"Bearer {edge.tokens[0]}"),)
    request = control_pb2.GetFundingRequest(follower_wallet_id="w_1")
    with grpc.insecure_channel(f"127.0.0.1:{edge.envoy.port}") as channel:
        stub = control_pb2_grpc.InternalControlServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetFunding(request, metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        public = control_pb2_grpc.ProbeServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            public.GetHealth(control_pb2.GetHealthRequest(), metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(f"127.0.0.1:{edge.control_port}") as channel:
        health = control_pb2_grpc.ProbeServiceStub(channel).GetHealth(control_pb2.GetHealthRequest(),
                                                                    metadata=metadata, timeout=5)
        assert health.status == "SERVING"


def test_json_posted_to_a_grpc_path_is_404(edge: EdgeStack) -> None:
    status, _, _ = raw_request(edge.envoy.port, "POST",
                               "/tradingtools.control.v1.SubscriptionService/ListSubscriptions",
                               edge.auth(), b"{}")
    assert status == 404


@pytest.mark.parametrize("path", ["/", "/nope", "/subscriptionsx", "/admin", "/stats", "/ready/x"])
def test_unknown_paths_are_404_json(edge: EdgeStack, path: str) -> None:
    status, headers, body = raw_request(edge.envoy.port, "GET", path, edge.auth())
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert body["code"] == 5
