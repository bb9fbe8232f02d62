"""The one error → gRPC status mapping, the state-transition tables and page tokens (pure)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import psycopg
import psycopg_pool
import pytest
import redis.exceptions
from grpc import StatusCode
from hypothesis import given
from hypothesis import strategies as st

from services.control import pagination
from services.control.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    status_for,
)
from services.control.lifecycle import (
    SubscriptionCommand,
    TriggerCommand,
    apply_subscription,
    apply_trigger,
)
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb


@pytest.mark.parametrize(("exc", "code", "message"), [
    (InvalidArgument("sizing.ratio", "must be a decimal > 0, got \"abc\""), StatusCode.INVALID_ARGUMENT,
     'sizing.ratio: must be a decimal > 0, got "abc"'),
    (NotFound("subscription sub_1 not found"), StatusCode.NOT_FOUND, "subscription sub_1 not found"),
    (AlreadyExists("dup"), StatusCode.ALREADY_EXISTS, "dup"),
    (FailedPrecondition("stopped"), StatusCode.FAILED_PRECONDITION, "stopped"),
    (Unavailable("redis unavailable: x"), StatusCode.UNAVAILABLE, "redis unavailable: x"),
    (Unauthenticated("no"), StatusCode.UNAUTHENTICATED, "no"),
    (psycopg.OperationalError('connection failed: connection to server at "10.0.0.5", port 5432 failed: '
                              "Connection refused\n\tIs the server running?"), StatusCode.UNAVAILABLE,
     "postgres unavailable: connection refused"),
    (psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "tt"'),
     StatusCode.UNAVAILABLE, "postgres unavailable: authentication failed"),
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), StatusCode.UNAVAILABLE,
     "postgres unavailable: timed out"),
    (psycopg.InterfaceError("the connection is closed"), StatusCode.UNAVAILABLE,
     "postgres unavailable: connection lost"),
    (psycopg.OperationalError("server closed the connection unexpectedly"), StatusCode.UNAVAILABLE,
     "postgres unavailable: connection lost"),
    (psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
     StatusCode.UNAVAILABLE, "postgres unavailable: read-only"),
    (psycopg.errors.CannotConnectNow("the database system is starting up"), StatusCode.UNAVAILABLE,
     "postgres unavailable: starting up"),
    (psycopg.errors.SerializationFailure("could not serialize access due to concurrent update"),
     StatusCode.UNAVAILABLE, "postgres unavailable: transaction conflict"),
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), StatusCode.UNAVAILABLE,
     "redis unavailable: read-only"),
    (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), StatusCode.UNAVAILABLE,
     "redis unavailable: starting up"),
    (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
     StatusCode.INTERNAL, "internal error"),
    (psycopg_pool.PoolTimeout("couldn't get a connection after 2.00 sec"), StatusCode.UNAVAILABLE,
     "postgres unavailable: no connection available"),
    (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
     StatusCode.UNAVAILABLE, "redis unavailable: connection refused"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), StatusCode.UNAVAILABLE,
     "redis unavailable: timed out"),
    (redis.exceptions.ConnectionError("Error -2 connecting to redis.internal:6379. Name or service not known."),
     StatusCode.UNAVAILABLE, "redis unavailable: unreachable"),
    (psycopg.errors.NumericValueOutOfRange("numeric field overflow\nDETAIL: A field with precision 20 ..."),
     StatusCode.INVALID_ARGUMENT, "request: a value is out of range or not storable"),
    (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), StatusCode.INVALID_ARGUMENT,
     "request: a value is out of range or not storable"),
    (psycopg.errors.CheckViolation('new row for relation "subscriptions" violates check constraint "x"'),
     StatusCode.INVALID_ARGUMENT, "request: a value is out of range or not storable"),
    (psycopg.errors.UniqueViolation('duplicate key value violates unique constraint "subscriptions_pkey"'),
     StatusCode.ALREADY_EXISTS, "request: conflicts with an existing entry"),
    (psycopg.errors.SyntaxError('syntax error at or near "SELEC"'), StatusCode.INTERNAL, "internal error"),
    (ValueError("postgresql://user:secret@host/db exploded"), StatusCode.INTERNAL, "internal error"),
    (KeyError("x"), StatusCode.INTERNAL, "internal error"),
])
def test_status_for(exc: BaseException, code: StatusCode, message: str) -> None:
    assert status_for(exc) == (code, message)


_A, _P, _S = spb.SUBSCRIPTION_STATE_ACTIVE, spb.SUBSCRIPTION_STATE_PAUSED, spb.SUBSCRIPTION_STATE_STOPPED
_C = SubscriptionCommand


@pytest.mark.parametrize(("state", "command", "after"), [
    (_A, _C.PAUSE, _P), (_P, _C.PAUSE, _P), (_S, _C.PAUSE, None),
    (_A, _C.RESUME, _A), (_P, _C.RESUME, _A), (_S, _C.RESUME, None),
    (_A, _C.STOP, _S), (_P, _C.STOP, _S), (_S, _C.STOP, _S),
    (_A, _C.UPDATE, _A), (_P, _C.UPDATE, _P), (_S, _C.UPDATE, None),
])
def test_subscription_transitions(state: int, command: SubscriptionCommand, after: int | None) -> None:
    if after is None:
        with pytest.raises(FailedPrecondition, match=f"^subscription sub_1 is SUBSCRIPTION_STATE_STOPPED: "
                                                     f"cannot {command.value} it"):
            apply_subscription(state, command, "sub_1")
    else:
        assert apply_subscription(state, command, "sub_1") == after


@pytest.mark.parametrize("state", [tpb.TRIGGER_STATE_ARMED, tpb.TRIGGER_STATE_FIRED, tpb.TRIGGER_STATE_DONE,
                                   tpb.TRIGGER_STATE_FAILED, tpb.TRIGGER_STATE_CANCELLED])
@pytest.mark.parametrize("command", list(TriggerCommand))
def test_trigger_transitions(state: int, command: TriggerCommand) -> None:
    table = {(tpb.TRIGGER_STATE_ARMED, TriggerCommand.UPDATE): tpb.TRIGGER_STATE_ARMED,
             (tpb.TRIGGER_STATE_ARMED, TriggerCommand.CANCEL): tpb.TRIGGER_STATE_CANCELLED,
             (tpb.TRIGGER_STATE_CANCELLED, TriggerCommand.CANCEL): tpb.TRIGGER_STATE_CANCELLED}
    if (state, command) in table:
        assert apply_trigger(state, command, "trg_1") == table[(state, command)]
    else:
        with pytest.raises(FailedPrecondition, match=r"^trigger trg_1 is TRIGGER_STATE_"):
            apply_trigger(state, command, "trg_1")


TOKENS = pagination.PageTokens(b"server-side key, 32 bytes long..")
FORGER = pagination.PageTokens(b"someone else's key, as long too.")
_CURSOR = pagination.Cursor(datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC), "sub_01")


def test_page_token_round_trip() -> None:
    fp = pagination.fingerprint("0xabc", "", "ACTIVE")
    token = TOKENS.encode("subs", fp, _CURSOR)
    assert "=" not in token and TOKENS.decode(token, "subs", fp) == _CURSOR
    assert TOKENS.decode("", "subs", fp) is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signed(raw: bytes, tokens: pagination.PageTokens = TOKENS) -> str:
    """``raw`` as a payload with a valid MAC under ``tokens``' key."""
    payload = _b64(raw)
    return f"{payload}.{tokens._mac(payload)}"


def _altered() -> str:
    mac = TOKENS.encode("subs", "x", _CURSOR).split(".")[1]
    other = _b64(b'{"k":"subs","f":"x","t":1,"i":"sub_00"}')
    return f"{other}.{mac}"


@pytest.mark.parametrize(("token", "message"), [
    ("!!!", "pageToken: invalid page token"),
    ("abc", "pageToken: invalid page token"),
    (_b64(b'{"k":"subs","f":"x","t":1,"i":"a"}'), "pageToken: invalid page token"),  # unsigned (the old form)
    (FORGER.encode("subs", "x", _CURSOR), "pageToken: invalid page token"),  # signed with another key
    (_altered(), "pageToken: invalid page token"),  # a genuine MAC on another payload
    (TOKENS.encode("subs", "x", _CURSOR)[:-1], "pageToken: invalid page token"),  # cut short
    (TOKENS.encode("subs", "x", _CURSOR) + ".x", "pageToken: invalid page token"),
    (_signed(b"not json"), "pageToken: invalid page token"),
    (_signed(b"[1,2]"), "pageToken: page token belongs to another list"),
    (TOKENS.encode("fills", "x", _CURSOR), "pageToken: page token belongs to another list"),
    (_signed(b'{"k":"subs","f":"x","t":"1","i":"a"}'), "pageToken: page token belongs to another list"),
    (_signed(b'{"k":"subs","f":"x","t":99999999999999999999999,"i":"a"}'),
     "pageToken: page token belongs to another list"),
    (TOKENS.encode("subs", "other", _CURSOR), "pageToken: page token belongs to a list with other filters"),
    ("A" * 600, "pageToken: invalid page token"),
])
def test_garbage_forged_and_foreign_page_tokens(token: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        TOKENS.decode(token, "subs", "x")
    assert err.value.message == message


def test_a_page_token_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        pagination.PageTokens(b"short")


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)), st.text(max_size=40))
def test_cursor_round_trip_property(moment: datetime, ident: str) -> None:
    cursor = pagination.Cursor(moment.replace(tzinfo=UTC), ident)
    assert TOKENS.decode(TOKENS.encode("k", "f", cursor), "k", "f") == cursor


@given(st.text(max_size=120))
def test_any_other_text_is_refused_as_a_page_token(text: str) -> None:
    token = TOKENS.encode("k", "f", _CURSOR)
    if text.strip() in ("", token):
        return
    with pytest.raises(InvalidArgument):
        TOKENS.decode(text, "k", "f")
