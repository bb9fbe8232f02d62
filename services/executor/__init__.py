"""Executor: depth check, venue submission (Insiders API or paper), lifecycle, fills and positions.

Flow: ``RouterService.StreamRoutedTrades`` (or, with ``TT_EXECUTOR_ROUTED_SOURCE=log``, the router's
log ``tt:stream:routed_trades`` read from Redis by ``common.logread.read_log_items``; the trades that arrived together
go as one batch) → :mod:`fanout` (prepare each order: venue, staleness, depth check
and limit price; persist the intents in growing chunks; start a runner per new order) →
:mod:`engine` (submit, settle; then :mod:`tracker` polls the placed order, one scheduler for all of them,
at most ``TT_EXECUTOR_MAX_STATUS_QUERIES`` queries at once; every change through :func:`lifecycle.apply`, persisted by
:mod:`journal` with its OrderEvent in an outbox, then appended to ``tt:stream:order_events``, served
as ``ExecutorService.StreamOrderEvents``, one event per message, and ``StreamOrderEventBatches``, the events
that were ready together per message: what guard reads). Under load the journal starts a transaction at most every
``TT_EXECUTOR_JOURNAL_MIN_INTERVAL_S``, so the orders that moved meanwhile share it. The per-order
Redis commands (book reads, cursor saves, event appends, reservation releases) go over one pipelined
connection (:mod:`common.fastredis`), single-order intent inserts over a dedicated one (:mod:`intents`).

Decisions worth knowing:

- **Intent before POST.** An order's row is inserted (``ON CONFLICT DO NOTHING``) before its first
  POST; a conflict means it was handled already and is resumed, never sent again.
- **Ambiguity is settled by query.** A timeout, a dropped connection or an unreadable answer makes
  the order UNKNOWN; ``GET ?clientOrderId`` settles it; three consecutive not-found make it LOST
  (reservation released). After a restart, an order persisted in SUBMITTING whose POST is not
  known to have left is queried the same way; only if the venue still has never heard of it after
  three queries, and the order is younger than ``TT_EXECUTOR_RESUBMIT_MAX_AGE_S``, is it POSTed
  again with the same Idempotency-Key (otherwise LOST).
- **A placed order the venue no longer finds** (``ORDER_NOT_FOUND`` by its venue order id and by its
  client order id, ``TT_EXECUTOR_LOST_AFTER`` queries in a row over at least
  ``TT_EXECUTOR_PLACED_LOST_AFTER_S``) is cancelled by its venue order id first: a venue that still has it
  ends it there (CANCELLED with what filled), so it cannot fill after its reservation is released. Only
  a 404 to the cancel too ends it LOST ``PLACED_ORDER_NOT_FOUND`` (:mod:`placed`): its fills so far stay
  booked, the rest of its reservation is released, instead of being queried for ever.
- **Retries** only for 425/429/5xx/disconnects, with backoff, same Idempotency-Key, behind the
  breaker. When the fast retries end after a retryable answer, the order is settled by query
  rather than failed; an order whose last POST was *answered* with 5xx/425/429 was not taken when
  the venue says not-found, so after the not-founds it is POSTed again (same key: the venue can
  only ever return the original order) while younger than ``TT_EXECUTOR_RESUBMIT_MAX_AGE_S``; past
  that it ends FAILED ``VENUE_UNAVAILABLE``. A timeout (truly unknown) ends LOST after three
  not-found once too old to re-POST.
- **Breaker** (per venue; state mirrored in ``tt:breaker:{venue}``): 5 consecutive failures open it
  for 60 s, then one half-open probe. An order (new, retrying or re-POSTing) meeting a refusing
  breaker waits at the gate for the open period to end or the probe's verdict, until it is
  ``max(TT_EXECUTOR_RESUBMIT_MAX_AGE_S, TT_EXECUTOR_BREAKER_WAIT_S)`` old (from its creation);
  then it ends FAILED ``BREAKER_OPEN``, or, if an earlier attempt may have reached the venue, is
  settled by query. (Chosen over failing new orders at once: a storm shorter than the resubmit
  window should cost latency, not copies; the age bound keeps a late copy from going out.)
- **Fills are booked when final** (``confirmed``, a resting order's growing match, or a
  cancellation after a partial match): fills row, position and subscription stats in the journal's
  transaction; ``tt:watch:positions`` follows positions opened and closed.
- **Depth check** applies to copies (skip below 50 % within the slippage); exits and GTC orders go
  out for whatever fills within the limit.
- **BUY minimum at the limit**: a USD BUY whose amount buys fewer shares at its limit price (best ask +
  slippage) than the order's ``min_order_size`` ends REJECTED ``BUY_BELOW_MARKET_MINIMUM`` (the router
  checked the minimum at the leader's price; a maker fill far below the ask passes there). No minimum
  on the order (market unknown): not checked.
- **Copies declined here are skips** (``store.SKIP_REASONS``: thin or missing book, stale, nothing held,
  below the market minimum): besides the REJECTED order, a ``copy_skips`` row and the subscription's
  ``skipped`` count, as the router's skips have, in the same transaction (once per leader trade and
  subscription).
- **SELLs sized here** (``sell_fraction``, sent by the router while the wallet's copy BUY was in flight):
  the intent is stored without a size; the order waits (:mod:`sequence`, at most 120 s) until the
  wallet's earlier orders on the asset are final (the orders of a batch take their places in stream
  order, kept across restarts in ``orders.arrival_ns``), then, one SELL of the position at a time, sells
  that fraction of the position held less what SELLs under way may still sell (:mod:`sellsize`: the
  router's rules), or ends REJECTED (NOTHING_HELD, SELL_BELOW_MARKET_MINIMUM). BUYs of the position that
  arrive after it wait until it has its size. Sized, it reserves its shares, and its resubmit window
  counts from then (staleness is checked on arrival), as a held BUY's does from its release. Not sent
  yet at a restart (NEW), it is sized again. Orders that will not run here (refused, dead-lettered,
  given up by the tracker) give their places back.
"""
