"""Who may call control's gRPC services.

- SubscriptionService, TriggerService and PositionService (the REST surface Envoy transcodes, the Insiders
  backend's API) take the backend's ``CONTROL_API_TOKEN``, and only that.
- InternalControlService (guard's performance actions) takes the internal token, like every other
  service's port, and only that: the backend's token does not open it.
- ProbeService, health and reflection are open.

The check itself (constant-time, every token compared, UNAUTHENTICATED with a challenge) is
``common.grpcauth``; the caller's token id (never the token) is ``current_token_id()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from common.grpcauth import CHALLENGE, TokenCheck, current_token_id, service_of
from tradingtools.control.v1 import control_pb2 as pb

__all__ = ["CHALLENGE", "PUBLIC_SERVICES", "TokenCheck", "current_token_id", "service_checks", "service_of"]

PUBLIC_SERVICES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name
                        for name in ("SubscriptionService", "TriggerService", "PositionService"))
PROBE_SERVICE = pb.DESCRIPTOR.services_by_name["ProbeService"].full_name


def service_checks(control_tokens: Iterable[str]) -> Mapping[str, TokenCheck | None]:
    """The gates other than the internal token's: the public services' and the open probe."""
    check = TokenCheck(control_tokens)
    return {**{name: check for name in PUBLIC_SERVICES}, PROBE_SERVICE: None}
