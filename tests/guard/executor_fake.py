"""An executor stand-in for firing tests that run guard's Firer in the test's own process."""

from __future__ import annotations

from tradingtools.execution.v1 import execution_pb2 as epb


class RecordingExecutor:
    """Takes every SubmitOrder and keeps the orders."""

    def __init__(self) -> None:
        self.orders: list[epb.Order] = []

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        self.orders.append(order)
        return epb.SubmitOrderResponse()
