"""data-api rows (``/activity``, ``/trades`` and the v2 snake_case envelope) parsed into :class:`Fill`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.ingest import model as m

_ZERO = Decimal(0)


def rows_of(body: Any) -> list[Any]:
    """The rows of a response body: a JSON array (v1) or ``{"data": [...], "pagination": ...}`` (v2)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and "data" in body:
        data = body["data"]
        if data is None:
            return []
        if isinstance(data, list):
            return data
    raise m.ParseError(m.BAD_SHAPE, "data-api body must be an array or a {data: [...]} envelope")


def next_cursor(body: Any) -> str:
    """The v2 pagination cursor ("" when there is none or the body is v1)."""
    if isinstance(body, dict):
        pagination = body.get("pagination")
        if isinstance(pagination, dict) and pagination.get("has_more") and pagination.get("next_cursor"):
            return str(pagination["next_cursor"])
    return ""


def is_row(msg: dict[str, Any]) -> bool:
    """True when a message looks like a data-api row (as opposed to an RTDS or CLOB message)."""
    return ("proxyWallet" in msg or "proxy_wallet" in msg) and "payload" not in msg and "event_type" not in msg


def activity_type(row: dict[str, Any]) -> str:
    """The row's activity type; ``/trades`` rows carry none and are trades."""
    value = row.get("type")
    if value is None or value == "":
        return m.TRADE
    if not isinstance(value, str) or len(value) > 40:
        raise m.ParseError(m.BAD_FIELD, "type must be a string")
    return value.upper()


def parse_row(row: dict[str, Any], received_ns: int, source: str = m.DATA_API,
              max_skew_ms: int = m.DEFAULT_MAX_SKEW_MS) -> m.Fill:
    """One data-api row (v1 camelCase or v2 snake_case) as a Fill; a trade that fails the sanity checks raises
    :class:`~services.ingest.model.TradeRefused` (its ``usdcSize`` is kept as reported, its notional is
    price × size)."""
    kind = activity_type(row)
    trade = kind == m.TRADE
    price = m.decimal(row, "price", required=trade)
    size = m.decimal(row, "size", required=trade)
    fill = m.Fill(
        tx_hash=m.tx_hash(row, "transactionHash", "transaction_hash", required=trade),
        wallet=m.address(row, "proxyWallet", "proxy_wallet"),
        asset_id=m.token_id(row, "asset", "token_id", required=trade),
        condition_id=m.condition_id(row, "conditionId", "condition_id"),
        side=m.side(row, "side", required=trade),
        price=price if price is not None else _ZERO,
        size=size if size is not None else _ZERO,
        usdc_size=m.decimal(row, "usdcSize", "usdc_size", required=False),
        fee=m.decimal(row, "fee", required=False),
        outcome=m.text(row, "outcome"),
        outcome_index=m.integer(row, "outcomeIndex", "outcome_index", default=0),
        market_slug=m.text(row, "slug"),
        event_slug=m.text(row, "eventSlug", "event_slug"),
        title=m.text(row, "title"),
        activity_type=kind,
        source=source,
        venue_time_ms=m.seconds_as_ms(row, "timestamp"),
        received_ns=received_ns,
    )
    if trade:
        assert price is not None and size is not None
        m.check_trade(price, size, fill.venue_time_ms, received_ns, max_skew_ms)
    return fill
