"""Simulators of the outside world (Polymarket feeds and REST; the Insiders API is added alongside)."""
