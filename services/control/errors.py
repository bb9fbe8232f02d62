"""Domain errors of the control service and the ONE mapping from any error to a gRPC status.

Envoy maps the status to HTTP: INVALID_ARGUMENT and FAILED_PRECONDITION → 400, NOT_FOUND → 404,
ALREADY_EXISTS → 409, UNAUTHENTICATED → 401, UNAVAILABLE → 503, INTERNAL → 500.

A message never carries an exception's own text past the service: that may hold SQL, host names,
ports or user names. Outages are named with a fixed word (:func:`outage_reason`), a value PostgreSQL
refuses is a plain 400, anything else is "internal error"; the details go to the log.
"""

from __future__ import annotations

import psycopg
import psycopg_pool
import redis.exceptions
from grpc import StatusCode

from common.outages import storage_unavailable


class ControlError(Exception):
    """Base of every error the control service reports to its caller on purpose."""

    code: StatusCode = StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ControlError):
    """A request field is missing, malformed or out of range; the message starts with its JSON path."""

    code = StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ControlError):
    """The addressed entity does not exist."""

    code = StatusCode.NOT_FOUND


class AlreadyExists(ControlError):
    """The change would create a duplicate (second ACTIVE subscription for one wallet and leader)."""

    code = StatusCode.ALREADY_EXISTS


class FailedPrecondition(ControlError):
    """The entity's state does not allow the change (e.g. pausing a STOPPED subscription)."""

    code = StatusCode.FAILED_PRECONDITION


class Unavailable(ControlError):
    """A dependency (PostgreSQL, Redis) cannot be reached; nothing was written, except for
    ``hotsync.IndexNotWritten``: the change is committed but not in the copy index yet (a retry is safe)."""

    code = StatusCode.UNAVAILABLE


class Unauthenticated(ControlError):
    """Missing or wrong bearer token."""

    code = StatusCode.UNAUTHENTICATED


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's text, bounded (no secrets: URLs are not echoed)."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line[:limit]


def outage_reason(exc: BaseException) -> str:
    """What went wrong with a dependency, in a fixed vocabulary (never the exception's own text)."""
    text = str(exc).lower()
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return "no connection available"
    if isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40"):  # serialization, deadlock
        return "transaction conflict"
    if (isinstance(exc, TimeoutError | redis.exceptions.TimeoutError | psycopg.errors.QueryCanceled)
            or "timeout" in text or "timed out" in text or "deadline" in text):
        return "timed out"
    if "read-only" in text or "read only" in text:
        return "read-only"
    if "loading" in text or "starting up" in text:
        return "starting up"
    if "refused" in text:
        return "connection refused"
    if "authentication" in text or "password" in text:
        return "authentication failed"
    if any(word in text for word in ("closed", "terminat", "lost", "reset", "broken pipe", "eof")):
        return "connection lost"
    return "unreachable"


def is_refused_input(exc: BaseException) -> bool:
    """True for PostgreSQL refusing a value of the request: data exceptions (class 22: out of range, bad
    encoding, NUL in text, ...) and integrity violations (class 23) other than a unique one."""
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError) and not isinstance(
        exc, psycopg.errors.UniqueViolation)


def is_postgres_outage(exc: BaseException) -> bool:
    """True for errors meaning PostgreSQL is unreachable, went away mid-call, or cannot take the call for now (read-only
    during a failover, shutting down, out of connections: ``common.outages``)."""
    return isinstance(exc, psycopg_pool.PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError) or (
        isinstance(exc, psycopg.Error) and storage_unavailable(exc))


def is_redis_outage(exc: BaseException) -> bool:
    """True for errors meaning Redis is unreachable or not ready for commands (loading, read-only, ...)."""
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError) or (
        isinstance(exc, redis.exceptions.ResponseError) and storage_unavailable(exc))


def status_for(exc: BaseException) -> tuple[StatusCode, str]:
    """The gRPC status code and message for any exception raised while serving a call."""
    if isinstance(exc, ControlError):
        return exc.code, exc.message
    if is_postgres_outage(exc):
        return StatusCode.UNAVAILABLE, f"postgres unavailable: {outage_reason(exc)}"
    if is_redis_outage(exc):
        return StatusCode.UNAVAILABLE, f"redis unavailable: {outage_reason(exc)}"
    if is_refused_input(exc):
        return StatusCode.INVALID_ARGUMENT, "request: a value is out of range or not storable"
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return StatusCode.ALREADY_EXISTS, "request: conflicts with an existing entry"
    return StatusCode.INTERNAL, "internal error"
