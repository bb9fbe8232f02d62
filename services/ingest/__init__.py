"""Ingest: Polymarket leader-trade feeds (RTDS + data-api) and the CLOB book feed, normalised and streamed."""
