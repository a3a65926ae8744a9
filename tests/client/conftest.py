"""Fixtures for the client tests: a fake GitHub on 127.0.0.1, a fake clock, an app.

Everything shares one `FakeClock`: the client's backoffs and rate-limit waits, the
app's JWTs and the fake's token expiry and rate-limit windows. Tests take no real time
except where they time real I/O on purpose.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiohttp import web

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, ETagCache, GitHub, GitHubApp, close_pool
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub

REPO = "octo-org/hello-world"
T = TypeVar("T")


Answer = tuple[int, dict[str, str], bytes] | Callable[[], tuple[int, dict[str, str], bytes]]


class Scripted:
    """A server that answers each request with the next scripted answer."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[dict[str, str]] = []
        #: Each request's headers as sent: every one, each name as spelled.
        self.raw: list[list[tuple[str, str]]] = []
        self.paths: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        self.raw.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        self.paths.append(request.raw_path)
        answer = self.answers.pop(0)
        # A callable answer runs as the request arrives (to change the client's state).
        status, headers, body = answer() if callable(answer) else answer
        return web.Response(status=status, headers=headers, body=body)


@asynccontextmanager
async def scripted_server() -> AsyncIterator[Scripted]:
    """A `Scripted` server on 127.0.0.1, on a free port, for the block."""
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    scripted.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield scripted
    finally:
        await runner.cleanup()


async def in_flight(fake: FakeGitHub, call: Awaitable[T], path: str) -> asyncio.Future[T]:
    """Start `call`, a request for `path`, and return it once the fake GitHub holds it."""
    started = asyncio.ensure_future(call)
    for _ in range(100_000):  # turns of the event loop, not time
        if started.done() or path in [r.path for r in fake.requests]:
            break
        await asyncio.sleep(0)
    return started


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(pem_pkcs8: bytes, clock: FakeClock) -> AppAuth:
    return AppAuth(1, pem_pkcs8, clock=clock)


@pytest.fixture
async def fake(public_pem: bytes, clock: FakeClock) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(app_id=1, public_key_pem=public_pem, clock=clock) as server:
        server.add_installation(1, "octo-org", ["hello-world", "other"])
        server.add_installation(2, "acme", ["widgets"])
        server.add_issue(REPO, "Found a bug", "It crashes")
        yield server
    await close_pool()


class Lowest(random.Random):
    """Draws the low end of every range: each backoff half its ceiling, and each wait
    GitHub named taken as named (`RetryPolicy.spread` adds nothing; its spread has
    tests of its own), so tests can say how long the client slept."""

    def uniform(self, a: float, b: float) -> float:
        return a


@pytest.fixture
def options(fake: FakeGitHub, clock: FakeClock) -> ClientOptions:
    """No write pacing (tests of pacing turn it on), a private ETag cache, fast retries
    drawn at the low end (`Lowest`)."""
    return ClientOptions(
        base_url=fake.url,
        clock=clock,
        sleep=clock.sleep,
        etags=ETagCache(),
        pace_writes=None,
        timeout=5.0,
        retry=RetryPolicy(base=0.5, rng=Lowest()),
    )


@pytest.fixture
def app(auth: AppAuth, options: ClientOptions) -> GitHubApp:
    return GitHubApp(auth, options=options)


@pytest.fixture
def installation(app: GitHubApp) -> GitHub:
    """A client for installation 1, tokens exchanged through the fake."""
    return app.installation(1)


@pytest.fixture
def token_client(fake: FakeGitHub, options: ClientOptions) -> Callable[..., GitHub]:
    """Build a client with a token issued directly by the fake for installation 1 or 2."""

    def build(installation_id: int = 1, **kwargs: Any) -> GitHub:
        token = fake.create_token(installation_id)
        return GitHub(token=token, options=kwargs.pop("options", options), **kwargs)

    return build
