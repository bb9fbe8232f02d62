"""The control surface: subscriptions, triggers, positions, funding and perf actions over gRPC (Envoy
transcodes REST).

Layout: ``servicer`` (proto in/out, the one error → status mapping in ``errors.status_for``) →
use cases (``subscriptions``, ``triggers``, ``positions``, ``internal``) → pure rules (``validation``,
``subscription_rules``, ``trigger_rules``, ``lifecycle``, ``pagination``, ``codec``, ``position_codec``)
and adapters (``sub_repo``, ``trigger_repo``, ``position_repo``, ``internal_repo``, ``audit``,
``idempotency``, ``hotsync``, ``readiness``).

Decisions callers can rely on:
- Auth: ``authorization: Bearer <token>``, scheme case-insensitive (RFC 7235); bare tokens, other
  schemes and several values are UNAUTHENTICATED. Health, reflection and ProbeService are open.
- Errors: INVALID_ARGUMENT messages start with the lowerCamelCase field path; unknown ids are
  NOT_FOUND; a second ACTIVE subscription per (followerWalletId, leaderProxy) is ALREADY_EXISTS;
  illegal state moves and LIVE without ``TT_INSIDERS_API_URL`` are FAILED_PRECONDITION; PostgreSQL
  or Redis down is UNAVAILABLE with nothing written.
- Idempotency: ``idempotency-key`` metadata or ``requestId`` on creates, scoped per method (any
  configured token: tokens are configured together to rotate one caller's), replayed for 24 h;
  the same key with another body is FAILED_PRECONDITION ("idempotency key reused with a different
  request").
- No-ops write nothing: pausing a PAUSED or resuming an ACTIVE subscription, deleting a STOPPED
  one, cancelling a CANCELLED trigger, a PATCH that changes nothing.
- Redis: the hot index (``common.hotindex``) follows every subscription change before the RPC
  returns and is resynced from PostgreSQL at start-up, after a failed update, every
  ``TT_TUNE_CONTROL_INDEX_FULL_RESYNC_S`` (600 s), and when the check run every
  ``TT_TUNE_CONTROL_INDEX_RESYNC_S`` (30 s) finds Redis restarted or flushed; trigger changes are
  published on ``tt:triggers:changed``.
"""
