"""Guard: take-profit / stop-loss / trailing / ladder / OCO triggers and performance rules.

Layout (the router's shape: pure ``domain/``, I/O in ``adapters/`` behind ``ports``, runners on top):

- ``__main__`` reads the settings and runs ``app``; ``app`` is the only place that builds real clients
  (PostgreSQL pool, Redis, gRPC channels) and wires the adapters into the runners; ``config`` is the
  settings; ``server`` serves ``GuardService.StreamTriggerEvents`` from the trigger-event log.
- ``domain/``: pure logic, no I/O, no clock reads (the trigger model and rows, the trigger index every tick
  runs through, tick reading, SELL sizing and building, copy-exit plans, perf rules).
- ``ports``: the typing.Protocol interfaces the runners take (trigger rows, copy exits, perf records,
  executor, control, market state, publishers, tick sources).
- ``adapters/``: the ports' implementations over PostgreSQL, Redis and gRPC.
- Runners, which tie domain and ports together: ``coordinator`` (:class:`~services.guard.coordinator.Guard`:
  ticks → engine → fires, holds, resolutions), ``firing`` (a fire recorded, then its SELL sent exactly once),
  ``order_flow`` (order events settle SELLs and register / resize / close copy exits), ``trigger_changes``
  (control's changes reloaded into the engine), ``trigger_sync`` and ``tick_feed`` (the notification and tick
  consumers), ``perf_monitor`` (loss-stop / profit-scale decisions and unrealized PnL); ``loops`` holds
  their background-task helpers.
"""
