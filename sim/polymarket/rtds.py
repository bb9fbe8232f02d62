"""Simulated RTDS (``wss://ws-live-data.polymarket.com``): activity trades / orders_matched and more.

Behaves like the venue where it matters to a client: a subscription needs ``"action"``; an entry
without ``type`` gets ``{"message": "Invalid request body"}``; ``PING``/``ping`` is answered with an
empty frame; frames carry ``connection_id``, ``payload``, ``timestamp`` (ms), ``topic``, ``type``.
Faults: :meth:`stall` (data stops, keep-alives continue), :meth:`disconnect_all`, :meth:`send_raw`.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import orjson

from sim.polymarket.wsbase import WsClient, WsServer


class RtdsServer(WsServer):
    """The RTDS websocket."""

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0
        self.subscribes = 0
        self.published = 0
        self.dropped = 0
        self.answer_pings = True

    async def on_connect(self, client: WsClient) -> None:
        client.conn_id = base64.b64encode(os.urandom(13)).decode()  # type: ignore[attr-defined]

    async def on_text(self, client: WsClient, text: str) -> None:
        stripped = text.strip()
        if stripped in ("PING", "ping"):
            self.pings += 1
            if self.answer_pings:
                client.send("")
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict) or msg.get("action") not in ("subscribe", "unsubscribe"):
            return  # the venue ignores a subscription without an action
        subs = msg.get("subscriptions")
        if not isinstance(subs, list) or not all(isinstance(s, dict) and "topic" in s and "type" in s
                                                  for s in subs):
            client.send(orjson.dumps({"message": "Invalid request body"}).decode())
            return
        for sub in subs:
            key = (sub["topic"], sub["type"])
            if msg["action"] == "subscribe":
                client.subs.add(key)
                self.subscribes += 1
            else:
                client.subs.discard(key)

    @staticmethod
    def subscribed(client: WsClient, topic: str, typ: str) -> bool:
        """True when the client asked for ``topic``/``typ``."""
        return (topic, typ) in client.subs or (topic, "*") in client.subs

    def publish(self, topic: str, typ: str, payload: dict[str, Any], *, timestamp_ms: int | None = None) -> int:
        """Send a frame to the subscribers of ``topic``/``typ``; returns how many got it (0 while stalled)."""
        self.published += 1
        if self.stalled:
            self.dropped += 1
            return 0
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        sent = 0
        for client in list(self.clients):
            if self.subscribed(client, topic, typ):
                frame = {"connection_id": getattr(client, "conn_id", ""), "payload": payload, "timestamp": ts,
                         "topic": topic, "type": typ}
                client.send(orjson.dumps(frame).decode())
                sent += 1
        return sent

    def publish_text(self, text: str, topic: str = "activity", typ: str = "trades") -> int:
        """Send a ready-made frame text to the subscribers of ``topic``/``typ`` (replay, load)."""
        if self.stalled:
            self.dropped += 1
            return 0
        sent = 0
        for client in list(self.clients):
            if self.subscribed(client, topic, typ):
                client.send(text)
                sent += 1
        return sent

    async def wait_subscribed(self, n: int = 1, timeout_s: float = 10.0) -> None:
        """Wait until ``n`` clients subscribed to activity trades."""
        await self.wait_clients(n, timeout_s=timeout_s,
                                ready=lambda c: self.subscribed(c, "activity", "trades"))
