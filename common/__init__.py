"""Shared foundation of every Trading Tools service: settings, logging, telemetry, gRPC, storage."""
