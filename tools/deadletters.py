"""Print the dead letters the services set aside (``tt:dlq:*``), decoded: one JSON line per entry with its stream,
when it was set aside, the cursor it had in the stream it came from, the error, what the service said it means
(``effect``), and the item itself: a leader trade, a routed trade's copies with their followers, an order event, a
market resolution. Read-only: it changes nothing. What each stream means and what to do is in docs/operations.md
("Dead letters").

``python -m tools.deadletters [stream ...]`` (default: every ``tt:dlq:*`` stream); ``REDIS_URL``, else ``make up``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from common.config import run_dir
from common.routed import parse_routed
from common.streams import LEADER_TRADES, MARKET_RESOLUTIONS, ORDER_EVENTS, ROUTED_TRADES
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

PREFIX = "tt:dlq:"


def _message(cls: type[Message]) -> Callable[[bytes], dict[str, Any]]:
    def decode(payload: bytes) -> dict[str, Any]:
        return MessageToDict(cls.FromString(payload), preserving_proto_field_name=True)
    return decode


def routed_trade(payload: bytes) -> dict[str, Any]:
    """A routed trade's copies, one line per follower (the orders' shared fields once)."""
    routed = parse_routed(payload)
    orders = [{"client_order_id": o.client_order_id, "subscription_id": o.subscription_id,
               "follower_wallet_id": o.follower_wallet_id, "follower_proxy": o.follower_proxy,
               "side": cpb.Side.Name(o.side), "amount_usd": o.amount_usd, "size": o.size,
               "sell_fraction": o.sell_fraction} for o in routed.orders]
    first = routed.orders[0] if routed.orders else epb.Order()
    return {"leader_trade_id": routed.trade.id or first.leader_trade_id, "asset_id": first.asset_id,
            "condition_id": first.condition_id, "routed_time_ns": str(first.routed_time_ns),
            "copies": len(orders), "orders": orders}


# what each dead-letter stream holds: the consumers' (tt:dlq:<consumer>, default names) and the logs' own
# (tt:dlq:<log>: entries too large to serve, or unreadable)
DECODERS: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "router": _message(mpb.LeaderTradeEvent), "executor": routed_trade,
    "executor-resolutions": _message(mpb.MarketResolution), "guard-orders": _message(epb.OrderEvent),
    LEADER_TRADES: _message(mpb.LeaderTradeEvent), ROUTED_TRADES: routed_trade,
    MARKET_RESOLUTIONS: _message(mpb.MarketResolution), ORDER_EVENTS: _message(epb.OrderEvent),
}


def _text(value: bytes) -> str:
    return value.decode(errors="replace")


def entry(stream: str, entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One dead letter as printed: its text fields, and its payload decoded (or its size, when it cannot be)."""
    ms = int(entry_id.split("-", 1)[0])
    out: dict[str, Any] = {"stream": stream, "id": entry_id,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))}
    out.update({_text(k): _text(v) for k, v in fields.items() if k != b"p"})
    payload = fields.get(b"p", b"")
    decode = DECODERS.get(stream.removeprefix(PREFIX))
    try:
        out["item"] = decode(payload) if decode is not None else {"bytes": len(payload)}
    except DecodeError:
        out["item"] = {"bytes": len(payload), "undecodable": True}
    return out


def dead_letters(client: Any, streams: Sequence[str], count: int) -> Iterator[dict[str, Any]]:
    """Every entry of ``streams`` (default: each ``tt:dlq:*`` stream), oldest first, up to ``count`` per stream."""
    names = list(streams) or sorted(_text(k) for k in client.scan_iter(match=f"{PREFIX}*", _type="stream"))
    for name in names:
        for entry_id, fields in client.xrange(name, count=count):
            yield entry(name, _text(entry_id), fields)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the dead letters as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m tools.deadletters", description=__doc__)
    parser.add_argument("streams", nargs="*", metavar="stream", help="e.g. tt:dlq:executor (default: every tt:dlq:*)")
    parser.add_argument("--count", type=int, default=1000, help="most entries per stream, oldest first")
    parser.add_argument("--redis-url", default="", help="default: REDIS_URL, else make up's")
    args = parser.parse_args(argv)
    url = (args.redis_url or os.environ.get("REDIS_URL", "").strip()
           or (run_dir() / "redis_url").read_text().strip())
    client = redis.Redis.from_url(url)
    try:
        for item in dead_letters(client, args.streams, args.count):
            sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
