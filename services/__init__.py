"""The five Trading Tools services; each runs as `python -m services.<name>`."""

import os

# gRPC reads GRPC_EXPERIMENTS once, when grpc is first imported, and every service imports it after
# this package. On this grpcio, its EventEngine client cost a process that reads a stream ~80 µs more
# CPU per message (2,500 messages 2 ms apart: 0.58 s against 0.37 s) and 10-30 % more latency per hop
# between idle processes than the classic client (``bench hops`` measures both); an operator's own
# setting wins.
GRPC_EXPERIMENTS = "-event_engine_client"
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
