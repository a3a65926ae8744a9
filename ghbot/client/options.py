"""What every client of one app shares: settings, clock, caches; and per-installation budgets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from ghbot import __version__
from ghbot.budget import DEFAULT_MARGIN, Budget
from ghbot.client.etag import SHARED_ETAGS, ETagCache
from ghbot.client.pool import Pool
from ghbot.config import DEFAULT_API_URL, Settings
from ghbot.ratelimit import GitHubClock
from ghbot.retry import RetryPolicy

__all__ = ["DEFAULT_OPTIONS", "Budgets", "ClientOptions"]

#: The longest a connection to GitHub may take before the request fails unsent.
CONNECT_TIMEOUT = 10.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Settings a `GitHub` client reads; one instance is shared by many clients.

    - `timeout`: seconds for one HTTP exchange (connect, send, read); the connection
      itself (TCP and TLS) must be made within `CONNECT_TIMEOUT` s or half of
      `timeout`, whichever is less: a request whose connection timed out so was never
      sent, and costs no budget (a stall before it, resolving the host's name, is a
      plain timeout, its unit kept).
    - `retry`: backoff for 5xx answers (but 501, "not implemented", a lasting answer),
      timeouts and dropped connections.
    - `margin`: share of each installation's primary budget kept back.
    - `pace_writes`: seconds from the answer to one of an installation's mutating
      requests to the next one's send, so at least that much between their arrivals at
      GitHub (which asks for 1 s); None turns pacing off.
    - `max_rate_limit_wait`: the longest a request sleeps in-line for a rate limit
      GitHub answered (`retry-after`, a reset, a paused installation). Longer waits
      raise `RateLimited` at once, so the caller can park the work instead of holding
      it. The same holds for a budget the client itself counts as spent (its reset,
      or open leases settling): waited out in-line when near, else raised at once.
    - `max_rate_limit_waits`: how many rate-limit waits one request sits through.
    - `max_redirects`: hops followed before giving up.
    - `etags`: the conditional-request cache, or None for no caching.
    - `pool`: a connection pool to use instead of the running loop's shared one.
    - `clock`, `sleep`: injected so tests run without real waiting (epoch seconds).
    """

    base_url: str = DEFAULT_API_URL
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    margin: float = DEFAULT_MARGIN
    pace_writes: float | None = 1.0
    max_rate_limit_wait: float = 60.0
    max_rate_limit_waits: int = 3
    max_redirects: int = 5
    etags: ETagCache | None = SHARED_ETAGS
    pool: Pool | None = None
    clock: Clock = time.time
    sleep: Sleep = asyncio.sleep
    user_agent: str = f"ghbot/{__version__}"
    client_timeout: aiohttp.ClientTimeout = field(init=False, repr=False, compare=False)
    base_headers: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        # A connect timeout of its own: with `total` alone, a connection that never comes
        # fails as a plain timeout, indistinguishable from an answer that never came.
        connect = min(CONNECT_TIMEOUT, self.timeout / 2)
        timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=connect)
        object.__setattr__(self, "client_timeout", timeout)
        object.__setattr__(
            self,
            "base_headers",
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": self.user_agent,
            },
        )

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> ClientOptions:
        """Build options from validated `Settings` (API URL, timeout, retries, margin)."""
        base = cls(
            base_url=settings.api_url,
            timeout=settings.request_timeout,
            retry=RetryPolicy(max_retries=settings.max_retries),
            margin=settings.rate_limit_margin,
        )
        return base.replace(**changes) if changes else base

    def replace(self, **changes: Any) -> ClientOptions:
        """Return a copy with `changes` applied."""
        return replace(self, **changes)


DEFAULT_OPTIONS = ClientOptions()


class Budgets:
    """One installation's primary-limit budgets, one per resource (core, search, graphql).

    Share one `Budgets` among every client of an installation; budgets are made on
    first use with the same margin.
    https://docs.github.com/en/rest/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user
    """

    __slots__ = ("_by_resource", "clock", "margin")

    def __init__(self, *, margin: float = DEFAULT_MARGIN) -> None:
        self.margin = margin
        self._by_resource: dict[str, Budget] = {}
        #: GitHub's clock against the local one, learned from the answers (the budgets
        #: compare their resets, GitHub's, with it).
        self.clock = GitHubClock()

    def __repr__(self) -> str:
        return f"Budgets({list(self._by_resource.values())!r})"

    def get(self, resource: str = "core") -> Budget:
        """Return the budget of `resource`, creating it on first use."""
        budget = self._by_resource.get(resource)
        if budget is None:
            budget = Budget(margin=self.margin, resource=resource, clock=self.clock)
            self._by_resource[resource] = budget
        return budget

    @property
    def core(self) -> Budget:
        """The REST budget most requests spend."""
        return self.get("core")
