"""Run a `FakeGitHub` on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ghbot.testing.server import FakeGitHub

__all__ = ["FakeGitHubThread"]

T = TypeVar("T")


class FakeGitHubThread:
    """A handle on a fake running in a thread: `url`, `fake`, `run`, `stop`.

    Arrange state through `fake` before requests start, or through `run` (which runs a
    coroutine on the fake's loop) while they are in flight.
    """

    def __init__(
        self, fake: FakeGitHub, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self.fake = fake
        self._loop = loop
        self._thread = thread

    @classmethod
    def start(cls, factory: Callable[[], FakeGitHub], timeout: float = 10.0) -> FakeGitHubThread:
        """Start the fake `factory` builds; raise what its start raised."""
        started: concurrent.futures.Future[FakeGitHubThread] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                fake = loop.run_until_complete(factory().start())
            except BaseException as exc:
                started.set_exception(exc)
                loop.close()
                return
            handle = cls(fake, loop, threading.current_thread())
            started.set_result(handle)
            loop.run_forever()
            loop.run_until_complete(fake.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        threading.Thread(target=main, name="fake-github", daemon=True).start()
        return started.result(timeout)

    @property
    def url(self) -> str:
        """The fake's base URL."""
        return self.fake.url

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        """Run `coro` on the fake's loop and return its result."""

        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the fake and wait for its thread to end (idempotent)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> FakeGitHubThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeGitHubThread({self.url!r})"
