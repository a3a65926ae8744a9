"""Where a quota lease's task, wherever it runs, asks for its write's turn and its token.

Both are picklable (they travel in the lease, `actors.quota.QuotaLease`) and find the
actor they ask by name at each call, so an actor replaced meanwhile is not asked, its
successor is.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.ray.names import APP_AUTH_NAME, shard_name
from actors.wire import shard_of, vshard_of
from ghbot import telemetry
from ghbot.errors import ShardDraining

__all__ = ["AppAuthTokens", "ShardTurns"]


@dataclass(frozen=True)
class ShardTurns:
    """Where a quota lease's task asks for its writes' turns (`actors.quota.TurnSource`):
    the shard actor holding the installation, found by name, so a shard replaced
    meanwhile is not asked, its successor is. Picklable (it travels in the lease)."""

    namespace: str
    shards: int
    vshards: int
    #: Seconds to keep asking while the shard is being replaced (refused or gone).
    within: float = 60.0

    async def __call__(self, installation_id: int) -> None:
        name = shard_name(shard_of(vshard_of(installation_id, self.vshards), self.shards))
        deadline = time.monotonic() + self.within
        while True:
            try:
                actor = await asyncio.to_thread(ray.get_actor, name, namespace=self.namespace)
                await actor.grant_write.remote(installation_id)
                return
            # Not found (its successor starting), gone, or draining (Ray's RayTaskError,
            # made an instance of its cause): ask again.
            except (RayActorError, ValueError, ShardDraining):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)


@dataclass(frozen=True)
class AppAuthTokens:
    """Where a quota lease's task gets its installation's next token
    (`actors.quota.LeaseTokens`): the app-auth actor, found by name, so one replaced
    meanwhile is not asked, its successor is. Picklable (it travels in the lease)."""

    namespace: str

    async def __call__(self, installation_id: int, force: bool) -> Any:
        actor = await asyncio.to_thread(ray.get_actor, APP_AUTH_NAME, namespace=self.namespace)
        return await actor.lease_token.remote(
            installation_id, force=force, traceparent=telemetry.current_traceparent()
        )
