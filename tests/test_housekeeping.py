"""The housekeeping loop stops only once the periodic work it started is done: `clew serve` closes
the store right after, and a tick still running in its thread would meet a closed store."""

from __future__ import annotations

import asyncio
import threading

from clew.components.base import BaseComponent
from clew.server import housekeeping


class Slow(BaseComponent):
    name = "slow"
    interval = 10**9

    def __init__(self) -> None:
        self.entered, self.release, self.done = threading.Event(), threading.Event(), threading.Event()

    def tick(self, now: int) -> None:
        self.entered.set()
        self.release.wait(30)
        self.done.set()


def test_cancelling_the_housekeeping_waits_for_the_tick_in_flight() -> None:
    slow = Slow()

    async def scenario() -> list[str]:
        order: list[str] = []
        task = asyncio.create_task(housekeeping([(slow, slow.interval)]))
        await asyncio.to_thread(slow.entered.wait, 30)
        task.cancel()
        await asyncio.sleep(0.2)
        order.append("cancelled, tick done" if slow.done.is_set() else "cancelled, tick running")
        assert not task.done()  # still waiting for the tick's thread
        slow.release.set()
        try:
            await task
        except asyncio.CancelledError:
            order.append("stopped")
        order.append("tick done" if slow.done.is_set() else "tick running")
        return order

    assert asyncio.run(scenario()) == ["cancelled, tick running", "stopped", "tick done"]
