"""One aiohttp connection pool per event loop, shared by every `GitHub` client on it.

Thousands of installation clients must be cheap, so none of them owns a session: they
all borrow the loop's `Pool` (one `aiohttp.ClientSession` over one `TCPConnector`, and
one semaphore that caps the requests in flight through this pool, by default at
GitHub's limit of 100 for a whole app).

The cap is per pool, so per process: an app that calls GitHub from several processes
must split GitHub's 100 between them. The Ray runtime does (each shard actor and the
app-auth actor get a share that adds up to `GHBOT_MAX_CONCURRENT_REQUESTS`; see
`actors.settings.RuntimeSettings.shard_requests`).
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import aiohttp

from ghbot.errors import UsageError

__all__ = ["MAX_CONCURRENCY", "Pool", "close_pool", "current_pool"]

#: GitHub allows at most 100 concurrent requests (REST and GraphQL together).
MAX_CONCURRENCY = 100


class Pool:
    """A session and a cap on requests in flight for the GitHub clients that share it.

    `session` is created lazily inside the running loop. Pass your own `session` to
    share one you already have; `close` then leaves it open.
    """

    __slots__ = ("_closer", "_own", "_session", "max_concurrency", "semaphore")

    def __init__(
        self,
        *,
        max_concurrency: int = MAX_CONCURRENCY,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise UsageError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self._session = session
        self._own = session is None
        self._closer: AsyncGenerator[None, None] | None = None

    def __repr__(self) -> str:
        return f"Pool(max_concurrency={self.max_concurrency})"

    @property
    def session(self) -> aiohttp.ClientSession:
        """Return the pool's session, creating it on first use (inside the loop)."""
        session = self._session
        if session is None or (self._own and session.closed):
            connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0)
            session = aiohttp.ClientSession(connector=connector)
            self._session = session
        return session

    async def close(self) -> None:
        """Close the session if the pool created it; a later request opens a new one.

        A session you gave is left open, and the pool goes on using it.
        """
        if not self._own:
            return
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


_pools: dict[int, tuple[asyncio.AbstractEventLoop, Pool]] = {}


def current_pool() -> Pool:
    """Return the running loop's shared pool, creating it on first use.

    The pool is closed when the loop shuts down its asynchronous generators (what
    `asyncio.run` and `asyncio.Runner` do on exit), or earlier by `close_pool`.
    Must be called from a coroutine.
    """
    loop = asyncio.get_running_loop()
    entry = _pools.get(id(loop))
    if entry is not None and entry[0] is loop:
        return entry[1]
    pool = Pool()
    _pools[id(loop)] = (loop, pool)
    pool._closer = _close_with_loop(loop, pool)
    return pool


async def close_pool() -> None:
    """Close the running loop's shared pool (idempotent)."""
    loop = asyncio.get_running_loop()
    entry = _pools.pop(id(loop), None)
    if entry is not None and entry[0] is loop:
        await entry[1].close()


def _close_with_loop(loop: asyncio.AbstractEventLoop, pool: Pool) -> AsyncGenerator[None, None]:
    # An asynchronous generator started inside the loop is registered with it (the
    # firstiter hook), and `loop.shutdown_asyncgens()` closes it: its `finally` is the
    # only portable hook that runs inside the loop just before the loop stops.
    async def closer() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if _pools.get(id(loop), (None, None))[1] is pool:
                del _pools[id(loop)]
            await pool.close()

    gen = closer()
    step = gen.__anext__()
    with contextlib.suppress(StopIteration):
        step.send(None)
    return gen
