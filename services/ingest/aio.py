"""asyncio helpers."""

from __future__ import annotations

from common.cancel import reraise_if_cancelling

__all__ = ["reraise_if_cancelling"]
