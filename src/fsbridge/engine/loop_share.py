"""A fair share of the event loop for work that runs on it beside intake: routing yields after
every so many bytes it handled, so one sender's large batch never holds other senders' answers."""

from __future__ import annotations

import asyncio


class LoopShare:
    """Routing runs on the event loop that intake answers on: after every YIELD_BYTES of event bodies
    parsed or routed it lets the loop answer what waits, so a batch of large events (a sender of
    1 MiB values) never holds other senders' 202s for its whole length. Small events never yield."""

    YIELD_BYTES = 256 * 1024

    def __init__(self) -> None:
        self._since = 0

    async def after(self, size: int) -> None:
        self._since += size
        if self._since >= self.YIELD_BYTES:
            self._since = 0
            await asyncio.sleep(0)
