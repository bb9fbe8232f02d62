"""Bearer-token gate: the pure check and the behaviour on the real gRPC port."""

from __future__ import annotations

import hashlib

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.control.auth import TokenCheck
from tests.control.conftest import AUTH, INTERNAL_AUTH, TOKEN, TOKEN_2, Stubs, subscription
from tradingtools.control.v1 import control_pb2 as pb

CHECK = TokenCheck([TOKEN, TOKEN_2])
TOKEN_ID = hashlib.sha256(TOKEN.encode()).hexdigest()[:12]


@pytest.mark.parametrize(("metadata", "why"), [
    ((), "missing authorization metadata"),
    ((("x-other", "1"),), "missing authorization metadata"),
    ((("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")), "several authorization values"),
    ((("authorization", TOKEN),), "malformed authorization"),
    ((("authorization", "Bearer"),), "malformed authorization"),
    ((("authorization", "Bearer "),), "malformed authorization"),
    ((("authorization", f"Bearer {TOKEN} extra"),), "malformed authorization"),
    ((("authorization", f"Basic {TOKEN}"),), "unsupported authorization scheme"),
    ((("authorization", f"Bearer {'0' * 64}"),), "invalid token"),
    ((("authorization", f"Bearer {TOKEN[:-1]}"),), "invalid token"),
    ((("authorization", f"Bearer {TOKEN}0"),), "invalid token"),
    ((("authorization", f"Bearer {TOKEN.upper()}"),), "invalid token"),
])
def test_rejected_credentials(metadata: tuple[tuple[str, str], ...], why: str) -> None:
    tid, reason = CHECK.verify(metadata)
    assert tid is None and reason.startswith(why)


@pytest.mark.parametrize("header", [
    f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN_2}",
])
def test_accepted_credentials(header: str) -> None:
    tid, reason = CHECK.verify((("authorization", header),))
    expected = header.split()[-1]
    assert (tid, reason) == (hashlib.sha256(expected.encode()).hexdigest()[:12], "")
    assert tid is not None and tid not in expected


def test_at_least_one_token() -> None:
    with pytest.raises(ValueError):
        TokenCheck([])


async def _status(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.integration
@pytest.mark.parametrize(("metadata", "code"), [
    ((), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", f"Bearer {'f' * 64}"),), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", TOKEN),), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", f"Token {TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", f"bearer {TOKEN}"),), grpc.StatusCode.NOT_FOUND),
    ((("authorization", f"Bearer {TOKEN}"),), grpc.StatusCode.NOT_FOUND),
    ((("authorization", f"Bearer {TOKEN_2}"),), grpc.StatusCode.NOT_FOUND),
])
async def test_gated_rpc(stubs: Stubs, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode) -> None:
    call = stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id="sub_missing"), metadata=metadata)
    assert await _status(call) == code


@pytest.mark.integration
async def test_unauthenticated_reply_carries_a_challenge(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(follower_proxy="0x" + "1" * 40))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith("unauthenticated: missing authorization")
    assert ("www-authenticate", 'Bearer realm="tradingtools"') in tuple(err.value.trailing_metadata() or ())


@pytest.mark.integration
async def test_every_gated_service_needs_the_token(stubs: Stubs) -> None:
    calls = [
        stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription())),
        stubs.triggers.ListTriggers(pb.ListTriggersRequest(wallet="0x" + "1" * 40)),
        stubs.internal.GetFunding(pb.GetFundingRequest(follower_wallet_id="w")),
        stubs.internal.RecordFunding(pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="1")),
        stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(id="sub_x")),
    ]
    for call in calls:
        assert await _status(call) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.integration
async def test_each_kind_of_service_takes_its_own_token_only(stubs: Stubs) -> None:
    """The backend's token opens the public API only; the services' internal token InternalControlService only."""
    def public(metadata: tuple[tuple[str, str], ...]) -> object:
        return stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id="sub_missing"), metadata=metadata)

    def internal(metadata: tuple[tuple[str, str], ...]) -> object:
        return stubs.internal.GetFunding(pb.GetFundingRequest(follower_wallet_id="w_missing"), metadata=metadata)

    assert await _status(public(AUTH)) == grpc.StatusCode.NOT_FOUND
    assert await _status(public(INTERNAL_AUTH)) == grpc.StatusCode.UNAUTHENTICATED
    assert await _status(internal(INTERNAL_AUTH)) == grpc.StatusCode.NOT_FOUND
    for token in (TOKEN, TOKEN_2):
        assert await _status(internal((("authorization", f"Bearer {token}"),))) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.integration
async def test_probes_health_and_reflection_are_open(stubs: Stubs) -> None:
    assert (await stubs.probes.GetHealth(pb.GetHealthRequest())).status == "SERVING"
    ready = await stubs.probes.GetReady(pb.GetReadyRequest())
    assert ready.status == "READY" and dict(ready.checks) == {
        "postgres": "ok", "redis": "ok", "breaker.insiders": "closed", "breaker.paper": "closed"}
    health = health_pb2_grpc.HealthStub(stubs.channel)
    for service in ("", "tradingtools.control.v1.SubscriptionService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # A token on an open method is fine too (even a wrong one is ignored there).
    assert (await stubs.probes.GetHealth(pb.GetHealthRequest(), metadata=(("authorization", "x"),))).status == "SERVING"


@pytest.mark.integration
async def test_audit_records_the_token_id_never_the_token(stubs: Stubs, db_url: str) -> None:
    created = await stubs.subs.CreateSubscription(
        pb.CreateSubscriptionRequest(subscription=subscription()),
        metadata=(("authorization", f"bearer {TOKEN_2}"), ("x-request-id", "req-42")))
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT token_id, request_id, method, entity_id, after::text FROM audit_log").fetchone()
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM audit_log t").fetchone()
    assert row is not None and dump is not None
    assert row[:4] == (hashlib.sha256(TOKEN_2.encode()).hexdigest()[:12], "req-42", "CreateSubscription",
                       created.id)
    assert TOKEN_2 not in dump[0] and TOKEN not in dump[0]
    assert row[0] != TOKEN_ID
    assert AUTH  # the default token works as well (other tests)
