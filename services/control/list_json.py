"""The REST body of a subscription list page, printed here instead of by Envoy (pure, no I/O).

``GET /subscriptions`` returns ``google.api.HttpBody`` holding the proto3 JSON of a
ListSubscriptionsResponse exactly as Envoy's transcoder printed it (``envoy/envoy.yaml.tmpl``
print options: lowerCamelCase names, fields without presence always printed, unset fields with
presence left out, enums by name, int64 as strings, Timestamps in RFC 3339, no whitespace).
Values come from ``json_format.MessageToDict`` with those options; keys are put in field
declaration order (the transcoder's order) and ``<`` / ``>`` are escaped as the transcoder does, so
the body is byte for byte what Envoy printed for the same response.

Like ``list_cache`` for the gRPC page, each subscription is cached *without its stats* as two
fragments per (id, row version): everything up to ``"stats":`` and everything after the stats
object; a page joins, per row, head + the live stats object + tail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.control.list_cache import VersionedLru
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

JsonParts = tuple[bytes, bytes]

STATS_NUMBER = spb.Subscription.DESCRIPTOR.fields_by_name["stats"].number
_STATS_KEY = b'"stats":'
_WELL_KNOWN = ("google.protobuf.",)  # Timestamp & co. print as scalars, never as objects


def _ordered(descriptor: Descriptor | Any, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` (a MessageToDict object of ``descriptor``) with its keys in declaration order, deeply."""
    out: dict[str, Any] = {}
    for field in descriptor.fields:
        name = field.json_name
        if name not in obj:
            continue
        value = obj[name]
        nested = field.message_type
        if nested is not None and not nested.full_name.startswith(_WELL_KNOWN) and not nested.GetOptions().map_entry:
            value = [_ordered(nested, v) for v in value] if field.is_repeated else _ordered(nested, value)
        out[name] = value
    return out


def json_object(msg: Message) -> dict[str, Any]:
    """The proto3 JSON object of ``msg`` as the transcoder prints it (keys in declaration order)."""
    return _ordered(msg.DESCRIPTOR, json_format.MessageToDict(msg, always_print_fields_with_no_presence=True))


def dumps(obj: Any) -> bytes:
    """Compact JSON, with ``<`` and ``>`` escaped like the transcoder (they only occur inside strings)."""
    return orjson.dumps(obj).replace(b"<", b"\\u003c").replace(b">", b"\\u003e")


def message_json(msg: Message) -> bytes:
    """The transcoder's JSON of ``msg``."""
    return dumps(json_object(msg))


def parts_of(sub: spb.Subscription) -> JsonParts:
    """``sub``'s JSON without stats, cut where the stats object goes: (``{…,"stats":``, ``,…}``)."""
    copy = spb.Subscription()
    copy.CopyFrom(sub)
    copy.ClearField("stats")
    obj = json_object(copy)
    numbers = {f.json_name: f.number for f in spb.Subscription.DESCRIPTOR.fields}
    head = dumps({k: v for k, v in obj.items() if numbers[k] < STATS_NUMBER})[1:-1]
    tail = dumps({k: v for k, v in obj.items() if numbers[k] > STATS_NUMBER})[1:-1]
    return b"{" + head + (b"," if head else b"") + _STATS_KEY, (b"," if tail else b"") + tail + b"}"


def stats_json(stats: spb.Stats) -> bytes:
    """The stats object of a list row."""
    return message_json(stats)


def item(parts: JsonParts, stats: bytes) -> bytes:
    """One subscription's JSON from its ``parts_of`` and its ``stats_json``."""
    return parts[0] + stats + parts[1]


_OPEN = b'{"subscriptions":['
_CLOSE = b'],"nextPageToken":'


def page_json(items: Iterable[bytes], next_page_token: str) -> bytes:
    """A ListSubscriptionsResponse's JSON from its subscriptions' JSON and the next page's token."""
    return b"".join((_OPEN, b",".join(items), _CLOSE, dumps(next_page_token), b"}"))


def page_json_of_rows(rows: Iterable[tuple[JsonParts, bytes]], next_page_token: str) -> bytes:
    """Like :func:`page_json` from (``parts_of``, ``stats_json``) pairs, in one join: a 500-row page is
    ~0.6 MB, and every intermediate copy of it costs page faults as well as the copy."""
    out = [_OPEN]
    append = out.append
    for (head, tail), stats in rows:
        append(head)
        append(stats)
        append(tail)
        append(b",")
    if len(out) > 1:
        out.pop()  # the last comma
    out += (_CLOSE, dumps(next_page_token), b"}")
    return b"".join(out)


def response_json(response: pb.ListSubscriptionsResponse) -> bytes:
    """The JSON of a whole decoded response, assembled from the same fragments (the uncached path)."""
    return page_json((item(parts_of(s), stats_json(s.stats)) if s.HasField("stats") else message_json(s)
                      for s in response.subscriptions), response.next_page_token)


class SubscriptionJsonCache(VersionedLru[JsonParts]):
    """LRU of (id → version, JSON parts); a lookup at another version misses."""

    def put(self, sub: spb.Subscription, version: int) -> JsonParts:
        """Remember ``sub`` as read at ``version`` (an older version never replaces a newer one)."""
        return self.remember(sub.id, version, parts_of(sub))
