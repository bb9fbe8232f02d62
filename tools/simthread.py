"""The simulator on its own event loop in a background thread, scriptable from any thread.

The simulated Polymarket (RTDS, CLOB ws + REST, data-api), the Insiders API fake and a webhook receiver for
the engine's alerts (:mod:`sim.webhook`) are asyncio servers whose state (books, trades, faults) must only be
touched on their loop. ``SimThread`` runs that loop in a daemon thread and hands work to it: :meth:`call`
runs a plain function there and returns its result, :meth:`run` runs a coroutine there. The demo and the
end-to-end tests script the simulator through these two, from ordinary (blocking) code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop

from sim.insiders import InsidersFake
from sim.polymarket import PolymarketSim
from sim.webhook import WebhookReceiver

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SimPorts:
    """Where the simulator listens (0 = a free port)."""

    rtds: int = 0
    clob: int = 0
    data_api: int = 0
    insiders: int = 0
    webhook: int = 0


class SimThread:
    """A started :class:`PolymarketSim` plus :class:`InsidersFake` on one loop in a background thread."""

    def __init__(self, *, seed: int | None = 1, host: str = "127.0.0.1", ports: SimPorts | None = None,
                 insiders_token: str = "insiders-sim-token", settle_s: float = 0.05) -> None:
        self.host = host
        self.ports = ports or SimPorts()
        self.insiders_token = insiders_token
        self.sim = PolymarketSim(seed=seed)
        self.sim.data.strict_user_agent = True
        self.insiders = InsidersFake(self.sim.books, token=insiders_token, host=host, port=self.ports.insiders,
                                     settle_s=settle_s)
        self.sim.venue = self.insiders.holdings
        self.webhook = WebhookReceiver(secret="whsec-" + secrets.token_hex(16), host=host, port=self.ports.webhook)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> SimThread:
        """Start the loop thread and every server; returns once they listen (raises what they raised)."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name="simulator", daemon=True)
        self._thread.start()
        started.result(timeout=timeout_s)
        return self

    def _main(self, started: concurrent.futures.Future[None]) -> None:
        loop = uvloop.new_event_loop()  # the services' loop: the simulator shares their machine, so it costs less
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(started))
        finally:
            loop.close()

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        try:
            await self.sim.start(self.host, rtds_port=self.ports.rtds, clob_port=self.ports.clob,
                                 data_port=self.ports.data_api)
            await self.insiders.start()
            await self.webhook.start()
        except Exception as exc:  # noqa: BLE001 - handed to the starting thread, which raises it
            started.set_exception(exc)
            await self._close()
            return
        started.set_result(None)
        await self._stop.wait()
        await self._close()

    async def _close(self) -> None:
        for stop in (self.webhook.stop, self.insiders.stop, self.sim.stop):
            with contextlib.suppress(Exception):  # closing what is left must go on
                await stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every server and the loop thread (safe to repeat)."""
        loop, thread, stop = self._loop, self._thread, self._stop
        if loop is None or thread is None or stop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout_s)

    @property
    def running(self) -> bool:
        """Whether the loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- scripting ------------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, timeout_s: float = 10.0, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the simulator's loop and return its result."""

        async def invoke() -> T:
            return fn(*args, **kwargs)

        return self.run(invoke(), timeout_s=timeout_s)

    def run(self, coro: Awaitable[T], timeout_s: float = 60.0) -> T:
        """Run a coroutine on the simulator's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the simulator is not started")

        async def wrap() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrap(), self._loop)
        return future.result(timeout_s)

    def env(self) -> dict[str, str]:
        """The ``TT_*`` variables that point every service at this simulator."""
        out = self.sim.env()
        out["TT_INSIDERS_API_URL"] = self.insiders.url
        out["TT_INSIDERS_API_TOKEN"] = self.insiders_token
        return out

    def webhook_env(self) -> dict[str, str]:
        """``TT_ALERT_WEBHOOK_URL`` / ``_SECRET`` of the local webhook receiver (the engine's alerts land there)."""
        return {"TT_ALERT_WEBHOOK_URL": self.webhook.url, "TT_ALERT_WEBHOOK_SECRET": self.webhook.secret}
