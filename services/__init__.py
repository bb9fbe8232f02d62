"""The five Trading Tools services; each runs as `python -m services.<name>`."""

import os

# gRPC reads GRPC_EXPERIMENTS once, when grpc is first imported, and every service imports it after
# this package. Its EventEngine client path cost a service ~80 µs more CPU per streamed message it
# receives, and ~30 % more latency per hop between idle processes, than the classic client on this
# grpcio (``bench hops``' gRPC peer, 2 ms apart: 235 → 168 µs p50); an operator's own setting wins.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client")
