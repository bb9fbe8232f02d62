"""The bands' invalidation at a guard start (pure: the messages).

A new guard process, before it takes its tick-log cursor, subscribes to :data:`ACK_CHANNEL`, then deletes the meta of
``tt:guard:bands`` and publishes on ``tt:guard:bands:changed`` (one MULTI) ``{"invalidate": "<token>"}``. Each ingest
band feed that receives it makes its gate trust no band (it reads the bands again and finds no meta), and only then
publishes ``{"ack": "<token>", "feed": "<its id>"}`` on :data:`ACK_CHANNEL`. Guard waits for as many acknowledgements
as PUBLISH counted subscribers, at most the old meta's lease (a gate trusts nothing of the old process once it has
run out since the delete, unless that process still writes) plus a margin, and only then takes its cursor.

Why: until the new process's first bands land, the gate would otherwise filter with the old process's bands,
narrowed by prices the old process logged and never read, and the new one never reads either (they are before its
cursor): a tick after the cursor that such a band leaves out is lost. Once acknowledged, every tick goes out until
the new bands land (they carry the cursor's ``through_ns``, as before), and the cursor is taken after the
acknowledgement, so no tick after it is filtered with the old process's state. The ticks before the cursor are the
restart gap, as without bands (the catch-up of the stored books covers them). The hash itself stays: a rollout's
old guard, still running, writes its changes onto its whole set (a gate without meta trusts none of it meanwhile).
Acknowledgements go by pub/sub, not keys, because channels are shared by every database of a Redis server: a band
feed of another database receives the invalidation (and reads its own bands again, unharmed), and its
acknowledgement reaches guard all the same.
"""

from __future__ import annotations

import orjson

from common.bands import BANDS_KEY

INVALIDATE = "invalidate"  # the message's only field: the token its acknowledgements name
ACK_CHANNEL = f"{BANDS_KEY}:acks"
_TOKEN_MAX = 64
_TOKEN_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


def ack_message(token: str, feed_id: str) -> bytes:
    """A band feed's acknowledgement of the invalidation ``token``: its gate trusts no band now."""
    return orjson.dumps({"ack": token, "feed": feed_id})


def parse_ack(data: str | bytes) -> tuple[str, str] | None:
    """(token, feed id) of an acknowledgement; None when ``data`` is not one."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    token, feed = msg.get("ack"), msg.get("feed")
    return (token, feed) if isinstance(token, str) and isinstance(feed, str) else None


def invalidate_message(token: str) -> bytes:
    """The channel message asking every band feed to trust no band and acknowledge under ``token``."""
    if not _valid(token):
        raise ValueError(f"invalidation token: {token!r}")
    return orjson.dumps({INVALIDATE: token})


def parse_invalidate(data: str | bytes) -> str | None:
    """The token of an invalidation message; None when ``data`` is no invalidation (not a JSON object with an
    ``invalidate`` field). Raises ValueError on an invalidation whose token is not a short ``[0-9A-Za-z_-]``
    string."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or INVALIDATE not in msg:
        return None
    token = msg[INVALIDATE]
    if not isinstance(token, str) or not _valid(token):
        raise ValueError(f"invalidation token: {token!r:.80}")
    return token


def _valid(token: str) -> bool:
    return 0 < len(token) <= _TOKEN_MAX and all(c in _TOKEN_CHARS for c in token)
