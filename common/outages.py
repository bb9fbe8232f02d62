"""Which failures are an outage of PostgreSQL or Redis (the work waits for as long as it lasts) and which say the
item is bad (it counts towards dead-lettering it): :func:`storage_unavailable`, decided by the tables below.
"""

from __future__ import annotations

import psycopg
import redis.exceptions
from psycopg_pool import PoolTimeout

from common.lease import FENCE_SQLSTATE
from common.resp import RespError

# What storage_unavailable decides by. An outage is retried for as long as it lasts; anything else counts towards
# the item's dead-lettering, and a dead-lettered routed trade is a copy never made. So every entry says the server
# cannot take the work *now*, and it would take it unchanged later.

# PostgreSQL: a SQLSTATE (its full code, else its two-character class) -> outage or not. A code found here decides
# whatever the exception's type; one not found falls back to OUTAGE_TYPES.
PG_STATES: dict[str, bool] = {
    "08": True,      # connection exception: the connection failed or went away
    "25006": True,   # read_only_sql_transaction: after a failover the clients reconnect to a server not promoted yet
    "40": True,      # transaction rollback: serialization failure, deadlock detected (run again, it goes through)
    "53": True,      # insufficient resources: disk full, out of memory, too many connections
    "57P01": True,   # admin_shutdown: the server is stopping (a restart, a switchover)
    "57P02": True,   # crash_shutdown: another backend crashed, every session is ended
    "57P03": True,   # cannot_connect_now: the server is starting or in recovery
    "58": True,      # system error: I/O error, a file it cannot read
    FENCE_SQLSTATE: True,  # the executor's lease moved on (migration 0410): the process exits, its successor goes on
    "57014": False,  # query_canceled (a statement timeout): it would time out again on the same item
    "54": False,     # program limit exceeded (stack depth, index row too large): the item's own, every time
    "55P03": True,   # lock_not_available: another session holds the lock for now
    "55006": True,   # object_in_use: for now
    "55": False,     # object not in prerequisite state: the item's own
}

# Redis: the error replies (their first word, redis-py's status_code) of a server that is not ready for commands.
REDIS_NOT_READY = frozenset({
    "LOADING",      # loading its data set after a start
    "READONLY",     # a replica, or a primary demoted by a failover
    "MASTERDOWN",   # a replica cut off from its primary (replica-serve-stale-data no)
    "TRYAGAIN",     # a cluster resharding the keys
    "CLUSTERDOWN",  # a cluster without a majority or with slots uncovered
    "BUSY",         # a script or function past its time limit (not BUSYGROUP or BUSYKEY: the whole word counts)
    "MISCONF",      # it cannot persist (its AOF or snapshot cannot be written: a full disk) and refuses writes
    "NOREPLICAS",   # fewer replicas than min-replicas-to-write are connected
    "OOM",          # used memory above maxmemory with nothing to evict: it refuses writes until memory is freed
})

# redis-py's classes of those replies, for a reply code it did not keep (``status_code``): the subclass first.
REDIS_PY_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (redis.exceptions.MasterDownError, "MASTERDOWN"), (redis.exceptions.ClusterDownError, "CLUSTERDOWN"),
    (redis.exceptions.ReadOnlyError, "READONLY"), (redis.exceptions.TryAgainError, "TRYAGAIN"),
    (redis.exceptions.BusyLoadingError, "LOADING"), (redis.exceptions.OutOfMemoryError, "OOM"))

# Without a verdict from the tables: failures of reaching the server at all.
OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, PoolTimeout, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    ConnectionError)


def redis_reply_code(exc: BaseException) -> str:
    """The code of a Redis error reply (``READONLY``, ``ERR``, ...): redis-py's ``status_code`` or class (it takes
    the code off the message), else the reply's first word (``common.resp.RespError`` keeps the whole reply). Redis 6
    reports an error of a ``redis.call`` inside a script as ``ERR Error running script (...): ... -READONLY ...``:
    that call's code is returned."""
    text = str(exc)
    code = (getattr(exc, "status_code", None) or next((c for t, c in REDIS_PY_CODES if isinstance(exc, t)), None)
            or text.split(" ", 1)[0])
    if "Error running script" in text:
        _, found, rest = text.rpartition(": -")
        if found:
            code = rest.split(" ", 1)[0]
    return str(code)


def storage_unavailable(exc: BaseException) -> bool:
    """True for failures that say PostgreSQL or Redis cannot take the work right now (not that the item is bad):
    a handler failing with one is retried for as long as the outage lasts instead of dead-lettered.

    PostgreSQL errors are judged by their SQLSTATE (:data:`PG_STATES`), Redis error replies by their code
    (:data:`REDIS_NOT_READY`), the rest by type (:data:`OUTAGE_TYPES`)."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        verdict = PG_STATES.get(exc.sqlstate, PG_STATES.get(exc.sqlstate[:2]))
        if verdict is not None:
            return verdict
    if isinstance(exc, redis.exceptions.ResponseError | RespError):
        return redis_reply_code(exc) in REDIS_NOT_READY
    return isinstance(exc, OUTAGE_TYPES)
