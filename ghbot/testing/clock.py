"""A clock for tests: `sleep` moves time forward at once instead of waiting."""

from __future__ import annotations

import asyncio
import time

__all__ = ["FakeClock"]


class FakeClock:
    """Epoch seconds that move only by `advance` or `sleep`.

    Pass `clock` and `clock.sleep` to `ClientOptions` (and the same clock to `AppAuth`
    and `FakeGitHub`) so backoffs, rate-limit waits and token expiry take no real time.
    `sleeps` lists every requested sleep, for assertions.
    """

    __slots__ = ("now", "sleeps")

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock({self.now:.3f}, {len(self.sleeps)} sleeps)"

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, move time forward, and let other tasks run once."""
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)
