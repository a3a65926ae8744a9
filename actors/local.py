"""One shard in this process, with the app's own credentials: what `ghbot dev` and the
test harness run (a deployment's shard actor wraps the same `ShardCore`, minting tokens
through the app-auth actor instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.bot import InstallationActor
from actors.github import InstallationClients
from actors.settings import RuntimeSettings
from actors.shard import ShardCore
from ghbot.client import GitHubApp
from ghbot.config import Settings
from ghbot.journal import Journal

__all__ = ["LocalShard"]


class LocalShard:
    """A started `ShardCore` for `bot` over `journal`, its clients minting with the key.

    `options` go to `ShardCore` (`retry`, `schedule`, ...); `pace_writes` to the
    clients, which keep to a one-shard deployment's share of `max_concurrent_requests`
    (`RuntimeSettings.shard_requests`); `clock` and `sleep` to both, and to the app's
    token minting. `close`
    stops the shard and closes the clients' connection pool; the journal stays the
    caller's.
    """

    def __init__(
        self,
        bot: type[InstallationActor],
        settings: Settings,
        journal: Journal,
        *,
        vshards: int = 1,
        pace_writes: float | None = 1.0,
        max_concurrent_requests: int = 100,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **options: Any,
    ) -> None:
        bot_path = f"{bot.__module__}:{bot.__qualname__}"
        runtime = RuntimeSettings(
            bot=bot_path,
            settings=settings,
            shards=1,
            pace_writes=pace_writes,
            max_concurrent_requests=max_concurrent_requests,
        )
        app = GitHubApp.from_settings(settings, clock=clock, sleep=sleep)
        self.clients = InstallationClients(
            runtime, app.create_installation_token, clock=clock, sleep=sleep
        )
        self.shard = ShardCore(
            range(vshards),
            vshards,
            journal,
            bot,
            github_for=self.clients.for_installation,
            breaker_wait=self.clients.breaker_wait,
            clock=clock,
            sleep=sleep,
            **options,
        )

    async def start(self) -> ShardCore:
        await self.shard.start()
        return self.shard

    async def close(self) -> None:
        try:
            await self.shard.close()
        finally:
            if self.clients.options.pool is not None:
                await self.clients.options.pool.close()
