"""Follower balances for PERCENT_OF_BALANCE when no funded balance is on record: the Insiders API
``GET /v1/wallets/{walletId}/balance``, cached briefly. A wallet that does not answer is left out
(its followers are skipped with BALANCE_UNKNOWN)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from common.config import Secret
from common.decimals import parse_decimal

log = logging.getLogger(__name__)


class InsidersBalances:
    """Balance look-ups with a short per-wallet cache (successes only)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: Secret, *, ttl_s: float,
                 timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.ttl_s = ttl_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.clock = clock
        self._cache: dict[str, tuple[Decimal, float]] = {}

    async def _fetch(self, wallet_id: str) -> Decimal | None:
        url = f"{self.base_url}/v1/wallets/{quote(wallet_id, safe='')}/balance"
        headers = {"Authorization": f"Bearer {self.token.value}"} if self.token else {}
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout) as resp:
                if resp.status != 200:
                    log.warning("balance request failed", extra={"wallet_id": wallet_id, "status": resp.status})
                    return None
                body: Any = orjson.loads(await resp.read())
            value = parse_decimal(body["usd"])
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, KeyError, TypeError,
                ValueError) as exc:
            log.warning("balance request failed", extra={"wallet_id": wallet_id, "error": repr(exc)[:200]})
            return None
        if value < 0:
            return None
        self._cache[wallet_id] = (value, self.clock() + self.ttl_s)
        return value

    async def get_many(self, wallet_ids: Sequence[str]) -> dict[str, Decimal]:
        """Balances of the wallets that answered (cached ones without a request)."""
        now = self.clock()
        out: dict[str, Decimal] = {}
        missing: list[str] = []
        for w in dict.fromkeys(wallet_ids):
            hit = self._cache.get(w)
            if hit is not None and hit[1] > now:
                out[w] = hit[0]
            else:
                missing.append(w)
        if missing:
            for w, value in zip(missing, await asyncio.gather(*(self._fetch(w) for w in missing)), strict=True):
                if value is not None:
                    out[w] = value
        return out


class NoBalances:
    """Used when ``TT_INSIDERS_API_URL`` is unset: only funded balances on record are known."""

    async def get_many(self, wallet_ids: Sequence[str]) -> dict[str, Decimal]:
        """Nothing."""
        return {}
