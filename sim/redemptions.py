"""The fake venue's markets as the Insiders API sees them: which market and outcome each token belongs to, which
markets resolved, wallets' positions with ``redeemable``, and redemptions (``POST /v1/redeem`` with an
Idempotency-Key, ``GET /v1/redeem/{redeemId}``) that pay the winning shares $1 each into the wallet's balance.

A redemption is ``submitted`` when taken and becomes ``confirmed`` (or ``failed``) ``settle_s`` later. Shares
bought or sold outside the engine (in the trading terminal) change a wallet's positions through
:meth:`Holdings.terminal_trade`.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.decimals import ZERO, fmt

PRICE_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """The market (condition id), outcome label and outcome index of a token."""

    condition_id: str
    outcome: str
    index: int


@dataclass
class FakeRedemption:
    """One redemption the fake took."""

    redeem_id: str
    key: str
    wallet_id: str
    condition_id: str
    shares: Decimal
    tx_hash: str
    taken_at: float
    final: str = "confirmed"  # confirmed | failed

    def view(self, settle_s: float) -> dict[str, Any]:
        """As ``GET /v1/redeem/{id}`` answers now."""
        status = self.final if time.monotonic() - self.taken_at >= settle_s else "submitted"
        out: dict[str, Any] = {"redeemId": self.redeem_id, "status": status, "txHash": self.tx_hash,
                               "payoutUsd": fmt(self.shares)}
        if status == "failed":
            out["error"] = "TRANSACTION_FAILED"
        return out


@dataclass
class RedeemRecord:
    """One ``POST /v1/redeem`` as received (replays and faults included)."""

    key: str
    wallet_id: str
    condition_id: str
    status: int = 0
    outcome: str = ""  # created | replayed | fault | rejected | timeout | invalid
    arrival_ns: int = 0  # when the kernel received it (see sim.rxstamp)


class RedeemRefused(Exception):
    """A redemption the venue refuses for good (4xx)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(code)
        self.code, self.message, self.status = code, message, status


@dataclass
class Holdings:
    """Markets, resolutions and redemptions over the fake venue's ``positions`` and ``balances``."""

    positions: dict[str, dict[str, list[Decimal]]]  # the venue's: wallet → token → [size, cost]
    balances: dict[str, Decimal]
    closed_markets: set[str]  # the venue's: tokens refusing orders
    default_balance: Decimal
    settle_s: float = 0.05
    tokens: dict[str, TokenInfo] = field(default_factory=dict)
    neg_risk: dict[str, bool] = field(default_factory=dict)  # condition → neg-risk market
    winners: dict[str, str] = field(default_factory=dict)  # condition → winning token
    redemptions: dict[str, FakeRedemption] = field(default_factory=dict)  # by redeem id
    by_key: dict[str, str] = field(default_factory=dict)  # Idempotency-Key → redeem id
    records: list[RedeemRecord] = field(default_factory=list)
    fail_settlements: int = 0  # next N redemptions settle ``failed``
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def register(self, condition_id: str, tokens: Sequence[tuple[str, str]], *, neg_risk: bool = False) -> None:
        """Tell the venue a market's tokens (``(token id, outcome)`` in outcome-index order)."""
        for i, (token, outcome) in enumerate(tokens):
            self.tokens[token] = TokenInfo(condition_id.lower(), outcome, i)
        self.neg_risk[condition_id.lower()] = neg_risk

    def resolve(self, condition_id: str, winning_token: str) -> None:
        """The market resolved: its tokens take no more orders; holders of the winner can redeem."""
        cid = condition_id.lower()
        self.winners[cid] = winning_token
        self.closed_markets.update(t for t, info in self.tokens.items() if info.condition_id == cid)

    def terminal_trade(self, wallet_id: str, token: str, side: str, size: Decimal, price: Decimal) -> None:
        """Shares bought or sold outside the engine (the trading terminal): the wallet's position changes."""
        pos = self.positions.setdefault(wallet_id, {}).setdefault(token, [ZERO, ZERO])
        if side == "BUY":
            pos[0] += size
            pos[1] += size * price
            self.balances[wallet_id] = self.balances.get(wallet_id, self.default_balance) - size * price
        else:
            sold = min(size, pos[0])
            if pos[0] > 0:
                pos[1] -= pos[1] * sold / pos[0]
            pos[0] -= sold
            self.balances[wallet_id] = self.balances.get(wallet_id, self.default_balance) + sold * price

    def wallet_positions(self, wallet_id: str) -> list[dict[str, Any]]:
        """``GET /v1/wallets/{walletId}/positions`` rows: every token held, ``redeemable`` once resolved."""
        out = []
        for token, (size, cost) in self.positions.get(wallet_id, {}).items():
            if size <= 0:
                continue
            info = self.tokens.get(token)
            out.append({"tokenId": token, "conditionId": info.condition_id if info else "",
                        "outcome": info.outcome if info else "", "size": fmt(size),
                        "avgPrice": fmt((cost / size).quantize(PRICE_QUANTUM)),
                        "redeemable": info is not None and info.condition_id in self.winners,
                        "asOf": _now_iso()})
        return out

    def redeem(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """Take a redemption (a replayed key answers the first one); :class:`RedeemRefused` when there is nothing
        to redeem. The wallet's shares of the market are gone and the winners' $1 each is in its balance."""
        known = self.by_key.get(key)
        if known is not None:
            return self.redemptions[known].view(self.settle_s)
        wallet, cid = str(body.get("walletId") or ""), str(body.get("conditionId") or "").lower()
        if not wallet or not cid:
            raise RedeemRefused("INVALID_BODY", "walletId and conditionId are required")
        winner = self.winners.get(cid)
        if winner is None:
            raise RedeemRefused("MARKET_NOT_RESOLVED", f"market {cid} has not resolved")
        held = self.positions.get(wallet, {})
        shares = held.get(winner, [ZERO, ZERO])[0]
        if shares <= 0:
            raise RedeemRefused("NOTHING_TO_REDEEM", f"wallet {wallet} holds no winning shares of {cid}")
        if self.neg_risk.get(cid) and not body.get("amounts"):
            raise RedeemRefused("INVALID_AMOUNTS", "neg-risk markets need amounts per outcome index")
        for token, info in self.tokens.items():
            if info.condition_id == cid and token in held:
                held[token] = [ZERO, ZERO]
        self.balances[wallet] = self.balances.get(wallet, self.default_balance) + shares
        rid = "rd_" + hashlib.sha256(f"{key}{next(self._ids)}".encode()).hexdigest()[:20]
        r = FakeRedemption(rid, key, wallet, cid, shares, "0x" + hashlib.sha256(rid.encode()).hexdigest(),
                           time.monotonic())
        if self.fail_settlements > 0:
            self.fail_settlements -= 1
            r.final = "failed"
        self.redemptions[rid] = r
        self.by_key[key] = rid
        return r.view(self.settle_s)

    def taken(self) -> dict[str, int]:
        """Redemptions the venue made, per (wallet, condition) (a replay makes none)."""
        counts: dict[str, int] = {}
        for r in self.redemptions.values():
            k = f"{r.wallet_id}|{r.condition_id}"
            counts[k] = counts.get(k, 0) + 1
        return counts


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
