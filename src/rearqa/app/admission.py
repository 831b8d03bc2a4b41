"""A bounded request queue in front of the reader: never an unbounded wait.

More requests in flight than the reader can batch only lengthen everyone's wait.
`RequestQueue` lets `max_in_flight` requests work (one at a time, or with micro-batching two
batches' worth: batching.py) and `max_waiting` more wait their turn; any request beyond that is refused at once with
`QueueFull`, which the server answers with 429 and a Retry-After estimated from recent
service times. Admission is decided on the event loop (no await between check and count), so it
needs no lock.
"""
from __future__ import annotations

import asyncio
import math
import time


class QueueFull(Exception):
    """Every work and waiting slot is taken; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy (every reader slot and waiting place is taken); "
                         f"retry after {retry_after} s")
        self.retry_after = retry_after


class RequestQueue:
    """`max_in_flight` requests at work, `max_waiting` more waiting, the rest refused."""

    def __init__(self, max_in_flight: int, max_waiting: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.admitted = 0  # at work + waiting
        self.in_flight = 0
        self._slots = asyncio.Semaphore(max_in_flight)
        self._mean_s = 2.0  # running mean of service time, seeds Retry-After before any request

    @property
    def waiting(self) -> int:
        return self.admitted - self.in_flight

    def admit(self) -> "Ticket":
        """A ticket for one request, or QueueFull at once."""
        if self.admitted >= self.max_in_flight + self.max_waiting:
            ahead = self.admitted / self.max_in_flight
            raise QueueFull(max(1, math.ceil(self._mean_s * ahead)))
        self.admitted += 1
        return Ticket(self)

    def _done(self, seconds: float) -> None:
        self._mean_s = 0.8 * self._mean_s + 0.2 * seconds


class Ticket:
    """One admitted request: `await start()` waits for a work slot; `release()` (idempotent)
    gives back whatever it holds. `async with queue.admit():` does both."""

    def __init__(self, queue: RequestQueue) -> None:
        self.queue = queue
        self._started: float | None = None
        self._released = False

    async def start(self) -> None:
        await self.queue._slots.acquire()
        self._started = time.monotonic()
        self.queue.in_flight += 1

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.queue.admitted -= 1
        if self._started is not None:
            self.queue.in_flight -= 1
            self.queue._slots.release()
            self.queue._done(time.monotonic() - self._started)

    async def __aenter__(self) -> "Ticket":
        try:
            await self.start()
        except BaseException:
            self.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
