"""Guard's I/O behind the ports of ``services.guard.ports``: PostgreSQL (triggers, copy exits, perf records),
Redis (market state, the tick log, the trigger-event log and watch set), gRPC (executor, control)."""
