"""RTDS (``activity`` topic) messages: routing and parsing of trade payloads into :class:`Fill`."""

from __future__ import annotations

from typing import Any

from services.ingest import model as m

ROUTE_TRADE = "TRADE"
ROUTE_SERVER_ERROR = "SERVER_ERROR"
ROUTE_OTHER = "OTHER"  # crypto prices, comments, subscription acks: liveness only

_TYPE_SOURCES = {"trades": m.RTDS_TRADES, "orders_matched": m.RTDS_ORDERS_MATCHED}


def subscribe_message(extra_topics: str = "") -> dict[str, Any]:
    """The subscribe frame: activity trades + orders_matched, plus optional ``topic:type`` liveness topics."""
    subs: list[dict[str, Any]] = [{"topic": "activity", "type": "trades"},
                                  {"topic": "activity", "type": "orders_matched"}]
    for item in filter(None, (t.strip() for t in extra_topics.split(","))):
        topic, _, typ = item.partition(":")
        subs.append({"topic": topic, "type": typ or "*"})
    return {"action": "subscribe", "subscriptions": subs}


def route(msg: dict[str, Any]) -> tuple[str, str]:
    """(route, source) of one RTDS message; routes on topic/type with a payload-shape fallback."""
    topic = msg.get("topic")
    payload = msg.get("payload")
    if topic == "activity":
        source = _TYPE_SOURCES.get(msg.get("type"))  # type: ignore[arg-type]
        return (ROUTE_TRADE, source) if source else (ROUTE_OTHER, "")
    if topic is None:
        if isinstance(payload, dict) and "proxyWallet" in payload and "transactionHash" in payload:
            return ROUTE_TRADE, m.RTDS_TRADES
        if payload is None and "message" in msg:
            return ROUTE_SERVER_ERROR, ""
    return ROUTE_OTHER, ""


def payload_of(msg: dict[str, Any]) -> dict[str, Any]:
    """The trade payload object of an activity message."""
    payload = msg.get("payload")
    if not isinstance(payload, dict):
        raise m.ParseError(m.BAD_SHAPE, "payload must be an object")
    return payload


def wallet_of(payload: dict[str, Any]) -> str:
    """The payload's wallet lower-cased, cheaply, for the target filter (validated only when followed)."""
    wallet = payload.get("proxyWallet")
    if isinstance(wallet, str):
        return wallet.lower()
    raise m.ParseError(m.MISSING_FIELD if wallet is None else m.BAD_FIELD, "proxyWallet")


def parse_trade(payload: dict[str, Any], source: str, received_ns: int,
                max_skew_ms: int = m.DEFAULT_MAX_SKEW_MS) -> m.Fill:
    """A trade payload (``trades`` and ``orders_matched`` share the schema) as a Fill; a trade that fails the
    sanity checks raises :class:`~services.ingest.model.TradeRefused`."""
    price = m.decimal(payload, "price")
    size = m.decimal(payload, "size")
    assert price is not None and size is not None
    fill = m.Fill(
        tx_hash=m.tx_hash(payload, "transactionHash"),
        wallet=m.address(payload, "proxyWallet"),
        asset_id=m.token_id(payload, "asset"),
        condition_id=m.condition_id(payload, "conditionId"),
        side=m.side(payload, "side"),
        price=price,
        size=size,
        usdc_size=None,
        fee=m.decimal(payload, "fee", required=False),
        outcome=m.text(payload, "outcome"),
        outcome_index=m.integer(payload, "outcomeIndex", default=0),
        market_slug=m.text(payload, "slug"),
        event_slug=m.text(payload, "eventSlug"),
        title=m.text(payload, "title"),
        activity_type=m.TRADE,
        source=source,
        venue_time_ms=m.seconds_as_ms(payload, "timestamp"),
        received_ns=received_ns,
    )
    m.check_trade(price, size, fill.venue_time_ms, received_ns, max_skew_ms)
    return fill
