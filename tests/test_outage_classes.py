"""``common.outages.storage_unavailable``: which failures are an outage (the item is retried for as long as it lasts)
and which say the item is bad (it counts towards dead-lettering, and a dead-lettered routed trade is a copy never
made). PostgreSQL errors are judged by their SQLSTATE, Redis error replies by their code, from redis-py (as its
parser builds them) and from the project's own RESP client alike."""

from __future__ import annotations

import psycopg
import pytest
import redis.exceptions
from psycopg_pool import PoolTimeout
from redis._parsers.base import BaseParser

from common.outages import storage_unavailable
from common.resp import RespClosed, RespError, RespTimeout

SCRIPT_READONLY = ("ERR Error running script (call to f_88c923858e73954cede057e8a25f614a3552b177): @user_script:1: "
                   "@user_script: 1: -READONLY You can't write against a read only replica. ")
SCRIPT_BUG = ("ERR Error running script (call to f_88c923858e73954cede057e8a25f614a3552b177): @user_script:3: "
              "user_script:3: attempt to compare nil with number ")


def _pg(sqlstate: str) -> psycopg.Error:
    """An error PostgreSQL answered with ``sqlstate`` (a class psycopg has none for, like the fence's, comes as
    the class's base: class 55 is an OperationalError)."""
    try:
        return psycopg.errors.lookup(sqlstate)("server said no")
    except KeyError:
        return type("Unnamed", (psycopg.OperationalError,), {"sqlstate": sqlstate})("server said no")


def _redis_py(reply: str) -> redis.exceptions.RedisError:
    """The exception redis-py raises for an error ``reply`` (its parser takes a known code off the message)."""
    error: redis.exceptions.RedisError = BaseParser.parse_error(reply)
    return error


PG_OUTAGES = [
    "08000", "08003", "08006", "08001", "08004",  # connection exception
    "25006",  # read_only_sql_transaction: a failover
    "40001", "40P01",  # serialization failure, deadlock
    "53000", "53100", "53200", "53300",  # insufficient resources
    "57P01", "57P02", "57P03",  # admin / crash shutdown, cannot connect now
    "58000", "58030",  # system error
    "55TL1",  # the executor's lease moved on
    "55P03", "55006",  # lock not available, object in use: for now
]
PG_ITEM_ERRORS = [
    "57014",  # query_canceled: a statement timeout would repeat for this item
    "22003", "22021", "22P02",  # data exceptions: a value out of range, bad encoding, bad text
    "23505", "23502", "23503",  # integrity violations
    "42P01", "42703",  # undefined table / column: a deployment or code bug
    "XX000",  # internal error
    "25001",  # active_sql_transaction: class 25 is an outage only for 25006
    "54000", "54001", "54023",  # program limits (index row too large, stack depth, too many arguments): every time
    "55000",  # object not in prerequisite state
]
REDIS_NOT_READY = [
    "LOADING Redis is loading the dataset in memory",
    "READONLY You can't write against a read only replica.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    SCRIPT_READONLY,  # Redis 6: a write of a script on a replica
    "MISCONF Errors writing to the AOF file: No space left on device",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
    "NOREPLICAS Not enough good replicas to write.",
    "OOM command not allowed when used memory > 'maxmemory'.",
]
REDIS_ITEM_ERRORS = [
    "BUSYGROUP Consumer Group name already exists",
    "BUSYKEY Target key name already exists.",
    "NOSCRIPT No matching script. Please use EVAL.",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR value is not an integer or out of range",
    SCRIPT_BUG,
]


@pytest.mark.parametrize(("sqlstate", "outage"), [*((s, True) for s in PG_OUTAGES),
                                                  *((s, False) for s in PG_ITEM_ERRORS)])
def test_postgres_errors_by_sqlstate(sqlstate: str, outage: bool) -> None:
    error = _pg(sqlstate)
    assert error.sqlstate == sqlstate
    assert storage_unavailable(error) is outage


@pytest.mark.parametrize(("reply", "outage"), [*((r, True) for r in REDIS_NOT_READY),
                                               *((r, False) for r in REDIS_ITEM_ERRORS)])
@pytest.mark.parametrize("client", ["redis-py", "resp", "fastredis"])
def test_redis_error_replies_by_code(reply: str, outage: bool, client: str) -> None:
    error = {"redis-py": _redis_py, "resp": RespError,
             "fastredis": lambda r: redis.exceptions.ResponseError(str(RespError(r)))}[client](reply)
    assert storage_unavailable(error) is outage


@pytest.mark.parametrize("error", [
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),  # a class without its code
    redis.exceptions.MasterDownError("Link with MASTER is down"),
    redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
    redis.exceptions.ClusterDownError("The cluster is down"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
])
def test_redis_py_classes_of_not_ready_replies(error: BaseException) -> None:
    assert storage_unavailable(error) is True


@pytest.mark.parametrize(("error", "outage"), [
    (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), True),
    (PoolTimeout("couldn't get a connection after 5.00 sec"), True),
    (redis.exceptions.ConnectionError("Connection refused"), True),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
    (RespClosed("connection closed"), True),
    (RespTimeout("redis reply timed out after 0.5s"), True),
    (ConnectionResetError("reset by peer"), True),
    (redis.exceptions.DataError("Invalid input of type: 'NoneType'"), False),
    (ValueError("bad event"), False),
    (RuntimeError("poison"), False),
])
def test_errors_without_a_code_by_type(error: BaseException, outage: bool) -> None:
    assert storage_unavailable(error) is outage
