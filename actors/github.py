"""GitHub clients for installation actors, with tokens minted by the app-auth actor.

The private key lives only in the app-auth actor (`TokenMinter`). A shard keeps an
`InstallationTokens` cache whose `mint` is a Ray call to that actor, so tokens are
cached where they are used, refreshed single-flight, and never journaled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.runtime_events import NO_INSTALLATION
from actors.settings import RuntimeSettings
from ghbot.auth import InstallationToken
from ghbot.breaker import CircuitBreaker, State
from ghbot.client import ClientOptions, GitHub, GitHubApp, InstallationTokens
from ghbot.client.pool import Pool
from ghbot.retry import RetryPolicy
from ghbot.telemetry import current_traceparent

__all__ = ["InstallationClients", "TokenMinter", "installation_clients"]


class TokenMinter:
    """The app's side: sign JWTs and exchange them for installation tokens."""

    def __init__(self, settings: RuntimeSettings) -> None:
        # The app's own writes (redelivery requests) are paced like an installation's,
        # and its requests in flight are its share of the app's concurrency limit.
        self.app = GitHubApp.from_settings(
            settings.settings,
            pace_writes=settings.pace_writes,
            pool=Pool(max_concurrency=settings.app_auth_requests),
        )

    async def token(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        """Return a token for the installation; `force` mints a new one."""
        if force:
            return await self.app.create_installation_token(installation_id)
        return await self.app.tokens.get(installation_id)

    async def cached_token(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        """Return the installation's token from this process's cache (`force`: one
        other than the token just refused, unless that one is seconds old), one
        exchange at a time: what quota leases' tasks ask for."""
        return await self.app.tokens.get(installation_id, force=force)

    async def app_get(self, path: str) -> Any:
        """GET an app-level endpoint with the JWT and return its JSON."""
        return (await self.app.gh.request("GET", path)).data


class InstallationClients:
    """Make each installation's client: its own budgets, breaker and write pacing.

    `clock` and `sleep` are the clients' time (token expiry, rate-limit waits, write
    pacing, breakers): the test harness passes a fake clock so none of them waits.
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        mint: Any,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        # Every client of the shard shares one pool: its share of the app's limit on
        # requests in flight (`RuntimeSettings.shard_requests`).
        self.options = ClientOptions.from_settings(
            settings.settings,
            pace_writes=settings.pace_writes,
            pool=Pool(max_concurrency=settings.shard_requests),
            clock=clock,
            sleep=sleep,
        )
        self.tokens = InstallationTokens(mint, ttl=settings.settings.token_cache_ttl, clock=clock)
        self.retry = RetryPolicy(max_retries=settings.settings.max_retries)

    def for_installation(self, installation_id: int) -> GitHub | None:
        """Return the installation's client (None for app-level events, id 0)."""
        if installation_id == NO_INSTALLATION:
            return None
        name = f"installation {installation_id}"
        return GitHub(
            tokens=self.tokens,
            installation_id=installation_id,
            options=self.options,
            breaker=CircuitBreaker(name=name, on_change=self._logger(name)),
        )

    def breaker_wait(self, github: GitHub | None) -> float:
        """Return how long the installation's open breaker keeps its deliveries waiting."""
        if github is None or github.breaker is None:
            return 0.0
        return github.breaker.retry_after(self.options.clock())

    @staticmethod
    def _logger(name: str) -> Any:
        """Log a breaker's changes; nothing is kept (a shard lives for months)."""
        import logging

        log = logging.getLogger("ghbot.breaker")

        def changed(old: State, new: State) -> None:
            log.warning("%s: circuit %s -> %s", name, old.value, new.value)

        return changed


def installation_clients(
    settings: RuntimeSettings, app_auth: Callable[[], Any]
) -> InstallationClients:
    """Return the client factory of a shard whose tokens come from the app-auth actor.

    `app_auth()` returns the actor's handle, looked up for each token minted (once an
    hour per installation), so an app-auth actor replaced by an upgrade is found.
    """

    async def mint(installation_id: int) -> InstallationToken:
        # The lookup's span goes along: the JWT signed and the exchange join its trace.
        token: InstallationToken = await app_auth().token.remote(
            installation_id, force=True, traceparent=current_traceparent()
        )
        return token

    return InstallationClients(settings, mint)
