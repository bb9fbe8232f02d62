"""RTDS load generator for benchmarks: a simulated RTDS that floods activity trades at a fixed rate.

A share of the frames (``followed_share``) come from the given leader wallets, the rest from random
wallets. The first subscribed client starts the clock; frames are paced one by one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

import orjson

from sim.polymarket.model import mixed_case
from sim.polymarket.rtds import RtdsServer

_ASSETS = [str(random.Random(i).randrange(10**76, 10**77)) for i in range(50)]
_CONDITION = "0x" + "ab" * 32


def trade_frame(rng: random.Random, wallet: str, seq: int) -> str:
    """One RTDS ``activity``/``trades`` frame text with a unique transaction hash."""
    now = time.time()
    payload: dict[str, Any] = {
        "asset": rng.choice(_ASSETS), "bio": "", "conditionId": _CONDITION, "eventSlug": "load-event",
        "icon": "", "name": "", "outcome": "Yes", "outcomeIndex": 0,
        "price": round(rng.uniform(0.02, 0.98), 2), "profileImage": "", "proxyWallet": wallet, "pseudonym": "",
        "side": rng.choice(("BUY", "SELL")), "size": round(rng.uniform(1, 500), 2), "slug": "load-market",
        "timestamp": int(now), "title": "Load market", "transactionHash": "0x" + f"{seq:064x}",
    }
    return orjson.dumps({"connection_id": "load", "payload": payload, "timestamp": int(now * 1000),
                         "topic": "activity", "type": "trades"}).decode()


async def run_load(server: RtdsServer, *, rate_per_s: float, duration_s: float, leaders: Sequence[str],
                   followed_share: float = 0.05, seed: int = 7, start_seq: int = 1) -> dict[str, Any]:
    """Emit ``rate_per_s`` frames for ``duration_s`` to the subscribers; returns counts."""
    rng = random.Random(seed)
    await server.wait_subscribed(1, timeout_s=120)
    interval = 1.0 / rate_per_s
    start = time.monotonic()
    sent = followed = 0
    seq = start_seq
    next_t = start
    while next_t - start < duration_s:
        now = time.monotonic()
        if next_t > now:
            await asyncio.sleep(next_t - now)
        if leaders and rng.random() < followed_share:
            wallet = mixed_case(rng.choice(leaders), rng)
            followed += 1
        else:
            wallet = "0x" + rng.randbytes(20).hex()
        server.publish_text(trade_frame(rng, wallet, seq))
        seq += 1
        sent += 1
        next_t += interval
    return {"sent": sent, "followed": followed, "elapsed_s": time.monotonic() - start, "next_seq": seq}
