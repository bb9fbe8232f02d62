"""Requests that cannot be decoded: INVALID_ARGUMENT naming the field, never UNKNOWN with parser text."""

from __future__ import annotations

import grpc
import pytest

from services.control.decoding import bad_utf8_path, undecodable
from tests.control.conftest import AUTH, Stubs
from tradingtools.control.v1 import control_pb2 as pb

BAD = b"\xed\xa0\x80"  # a UTF-16 surrogate encoded as UTF-8: not valid UTF-8


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize(("message", "data", "body_field", "expected"), [
    (pb.ListSubscriptionsRequest, _field(1, BAD), "", "followerProxy: not valid UTF-8"),
    (pb.ListSubscriptionsRequest, _field(1, b"0xabc") + b"\x20\x05" + _field(5, b"\xff"), "",
     "pageToken: not valid UTF-8"),
    (pb.ListTriggersRequest, _field(1, b"\xc0\xaf"), "", "wallet: not valid UTF-8"),  # overlong '/'
    (pb.CreateSubscriptionRequest, _field(1, _field(6, BAD)), "subscription", "label: not valid UTF-8"),
    (pb.CreateSubscriptionRequest, _field(1, _field(6, BAD)), "", "subscription.label: not valid UTF-8"),
    (pb.CreateSubscriptionRequest, _field(1, _field(12, _field(4, _field(1, b"\xe2\x82")))), "subscription",
     "exits.ladder.gainPct: not valid UTF-8"),
    (pb.ListSubscriptionsRequest, b"\x0a\x7f", "", "request: could not be decoded"),  # cut short
])
def test_the_undecodable_field_is_named(message: type, data: bytes, body_field: str, expected: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError: what the guard replaces
        message.FromString(data)
    assert undecodable(message.DESCRIPTOR, data, body_field).message == expected


def test_valid_bytes_name_nothing() -> None:
    data = pb.ListSubscriptionsRequest(follower_proxy="0xé", page_token="ok").SerializeToString()
    assert bad_utf8_path(pb.ListSubscriptionsRequest.DESCRIPTOR, data) is None


@pytest.mark.integration
async def test_the_grpc_port_answers_invalid_argument_for_an_undecodable_request(stubs: Stubs) -> None:
    call = stubs.channel.unary_unary("/tradingtools.control.v1.SubscriptionService/ListSubscriptions",
                                     request_serializer=lambda raw: raw,
                                     response_deserializer=pb.ListSubscriptionsResponse.FromString)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(_field(1, BAD), metadata=AUTH)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "followerProxy: not valid UTF-8"
    unauthenticated = stubs.channel.unary_unary("/tradingtools.control.v1.TriggerService/ListTriggers",
                                                request_serializer=lambda raw: raw,
                                                response_deserializer=pb.ListTriggersResponse.FromString)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unauthenticated(_field(1, BAD))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the token is checked first, never UNKNOWN
