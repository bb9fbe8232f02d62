"""Executor: depth check, venue submission (Insiders API or paper), lifecycle, fills and positions.

The design (an order's path, the lifecycle, retries, the breaker, fills, SELLs sized here) is ``docs/executor.md``.

Layout (the router's shape: pure ``domain/``, I/O in ``adapters/`` behind ``ports``, runners on top):

- ``__main__`` reads the settings and runs ``app``, the only place that builds real clients and wires them;
  ``config`` is the settings; ``server`` and ``servicer`` are the gRPC surface.
- ``domain/``: pure rules, no I/O, no clock reads (the order lifecycle, intake and pricing, how venue answers
  are read, fill and position arithmetic, the breaker, settlement, redemption, reconciliation).
- ``ports``: the typing.Protocol interfaces the runners take from the venues.
- ``adapters/``: the Insiders API, the paper venue, PostgreSQL (orders, fills, positions after the copy), the
  book reader and the breaker's Redis mirror.
- Runners: ``admission`` (orders in, intents persisted, runners started), ``order_runner`` (one order to PLACED
  or final), ``status_tracker`` and ``placed_orders`` (placed orders queried until final), ``position_queue``
  (SELLs sized in their turn), ``journal`` (the single writer of order state), ``recovery``, ``releases``,
  ``settling``, ``redeeming``, ``reconciling``; helpers ``order_events``, ``burst_gate``, ``tracing``.
"""
