"""Edge tests: real Envoy in front of the real control service; the local stack."""
