"""Domain values of the router: the leader trade, a follower's rules and state, and the decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from common.takerfee import TakerFee

ZERO = Decimal(0)
ONE = Decimal(1)
CENT = Decimal("0.01")
# Share sizes are sent with at most 2 decimals (the venue's accuracy for SELL maker amounts).
SHARE_QUANTUM = Decimal("0.01")


class Side(StrEnum):
    """Side of a trade or order."""

    BUY = "BUY"
    SELL = "SELL"


class SizingMode(StrEnum):
    """How a copied BUY is sized."""

    FIXED_USD = "FIXED_USD"
    PROPORTIONAL = "PROPORTIONAL"
    PERCENT_OF_BALANCE = "PERCENT_OF_BALANCE"


class Reason(StrEnum):
    """Machine-readable skip reasons (UPPER_SNAKE)."""

    INVALID_TRADE = "INVALID_TRADE"
    MARKET_INFO_UNAVAILABLE = "MARKET_INFO_UNAVAILABLE"
    MARKET_CLOSED = "MARKET_CLOSED"
    TRADE_TOO_OLD = "TRADE_TOO_OLD"
    PRICE_OUTSIDE_TICK_BOUNDS = "PRICE_OUTSIDE_TICK_BOUNDS"
    INVALID_SUBSCRIPTION = "INVALID_SUBSCRIPTION"
    COPY_SELLS_DISABLED = "COPY_SELLS_DISABLED"
    MARKET_DENIED = "MARKET_DENIED"
    MARKET_NOT_ALLOWED = "MARKET_NOT_ALLOWED"
    PRICE_BELOW_MIN = "PRICE_BELOW_MIN"
    PRICE_ABOVE_MAX = "PRICE_ABOVE_MAX"
    LEADER_TRADE_TOO_SMALL = "LEADER_TRADE_TOO_SMALL"
    BALANCE_UNKNOWN = "BALANCE_UNKNOWN"
    SIZE_ZERO = "SIZE_ZERO"
    SIZE_OUT_OF_RANGE = "SIZE_OUT_OF_RANGE"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    MARKET_EXPOSURE_LIMIT = "MARKET_EXPOSURE_LIMIT"
    TOTAL_EXPOSURE_LIMIT = "TOTAL_EXPOSURE_LIMIT"
    BELOW_MARKET_MINIMUM = "BELOW_MARKET_MINIMUM"
    NOTHING_HELD = "NOTHING_HELD"
    LEADER_POSITION_UNKNOWN = "LEADER_POSITION_UNKNOWN"
    SELL_BELOW_MARKET_MINIMUM = "SELL_BELOW_MARKET_MINIMUM"
    DUPLICATE_ORDER = "DUPLICATE_ORDER"
    MAX_ORDER_USD = "MAX_ORDER_USD"
    TRADE_BEFORE_ACTIVE = "TRADE_BEFORE_ACTIVE"


@dataclass(frozen=True, slots=True)
class LeaderTrade:
    """One fill of a leader's order, with decimals parsed."""

    id: str
    tx_hash: str
    wallet: str
    asset_id: str
    condition_id: str
    side: Side
    price: Decimal
    size: Decimal
    notional_usd: Decimal
    market_slug: str = ""
    event_slug: str = ""
    venue_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class MarketRules:
    """Trading rules of the traded asset's market."""

    tick_size: Decimal
    min_order_size: Decimal
    neg_risk: bool = False
    closed: bool = False
    accepting_orders: bool = True
    market_slug: str = ""
    event_slug: str = ""
    condition_id: str = ""  # from the market info (a trade may come without one)
    taker_fee: TakerFee | None = None  # None: no fee known (a BUY is then sized as if there were none)


@dataclass(frozen=True, slots=True)
class SizingRules:
    """Sizing of copied BUYs; ``None`` means unset."""

    mode: SizingMode
    fixed_usd: Decimal | None = None
    ratio: Decimal | None = None
    percent_of_balance: Decimal | None = None
    min_order_usd: Decimal | None = None
    max_order_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FilterRules:
    """Which leader trades are copied. Lists hold lower-cased entries."""

    min_price: Decimal | None = None
    max_price: Decimal | None = None
    min_leader_trade_usd: Decimal | None = None
    allowlist: tuple[str, ...] = ()
    denylist: tuple[str, ...] = ()
    copy_sells: bool = True
    max_slippage_bps: int | None = None


@dataclass(frozen=True, slots=True)
class RiskRules:
    """Risk caps; ``None`` means no cap (the API's "0")."""

    max_market_exposure_usd: Decimal | None = None
    max_total_exposure_usd: Decimal | None = None
    max_open_positions: int | None = None
    daily_loss_limit_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Follower:
    """One ACTIVE subscription, parsed once when the hot index changes."""

    subscription_id: str
    follower_user_id: str
    follower_wallet_id: str
    follower_proxy: str
    mode: str  # "LIVE" or "PAPER"
    sizing: SizingRules
    filters: FilterRules
    risk: RiskRules
    multiplier: Decimal = ONE
    invalid: str = ""  # non-empty: why the subscription cannot be routed
    active_since_ms: int = 0  # when it last became ACTIVE (Unix ms; 0: unknown): earlier BUYs are not copied
    created_ms: int = 0  # when it was created (Unix ms; 0: unknown): a SELL made before it sold none of its copies


@dataclass(frozen=True, slots=True)
class FollowerState:
    """A follower wallet's exposure, holdings and in-flight reservations when the trade arrives (the held shares
    by subscription: ``domain.holdings``)."""

    total_exposure_usd: Decimal = ZERO
    market_exposure_usd: Decimal = ZERO
    open_markets: frozenset[str] = frozenset()
    held_size: Decimal = ZERO  # the wallet's shares of the trade's asset
    realized_pnl_today_usd: Decimal = ZERO  # the lowest the wallet's realized PnL of the UTC day reached
    reserved_total_usd: Decimal = ZERO
    reserved_market_usd: Decimal = ZERO
    reserved_markets: frozenset[str] = frozenset()
    # shares the wallet's SELLs in flight may still sell: the router's copies (Redis), guard's exits, manual SELLs and
    # the copies the executor sent again re-sized (the executor's open orders: they reserve nothing in Redis)
    reserved_sell_size: Decimal = ZERO
    balance_usd: Decimal | None = None
    # each subscription's shares of held_size when a split is kept (several subscriptions bought the position);
    # None: no split kept, every subscription's copied SELL is sized on the wallet's shares
    held_parts: Mapping[str, Decimal] | None = None
    # of reserved_sell_size: each subscription's SELL copies'; the rest (exits, manual SELLs, copies not known by
    # subscription) is held back from every part
    selling_by: Mapping[str, Decimal] | None = None
    # the router's SELL copies of the asset in flight the executor has not sized yet (sent with a fraction: what they
    # will sell is not known); a SELL routed meanwhile goes out with a fraction too, sized by the executor after them
    unsized_sells: int = 0
    # the subscription whose copy opened the wallet's position in the asset (positions.subscription_id of an origin
    # COPY position); None: none did (a manual or external position, a copy of no subscription) or nothing is held
    opened_by: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Router-wide knobs and the current time for one decision."""

    now_ms: int
    max_trade_age_ms: int = 300_000  # a leader BUY older than this (venue time) is not copied
    max_exit_age_ms: int = 21_600_000  # a leader SELL older than this is not mirrored (>= max_trade_age_ms)
    marketable_buy_min_usd: Decimal = ONE
    default_max_slippage_bps: int = 200
    max_order_usd: Decimal | None = None  # the operator ceiling per order (TT_MAX_ORDER_USD); None: none


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A copy order to emit: BUY spends ``amount_usd``, SELL sells ``size`` shares (or ``sell_fraction`` of the
    position, sized by the executor once the wallet's copy BUY in flight is answered)."""

    subscription_id: str
    follower_wallet_id: str
    client_order_id: str
    side: Side
    amount_usd: Decimal | None
    size: Decimal | None
    max_slippage_bps: int
    sell_fraction: Decimal | None = None
    note: str = ""  # why it was sized below what the subscription asked for ("REASON: numbers"), "" if not


@dataclass(frozen=True, slots=True)
class Skip:
    """A follower not copied, with an UPPER_SNAKE reason and the numbers behind it."""

    subscription_id: str
    follower_wallet_id: str
    reason: Reason
    detail: str


Decision = OrderIntent | Skip
