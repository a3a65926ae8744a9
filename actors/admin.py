"""Operate a running deployment from a driver: stats, dead letters, replays.

Connect to the cluster first (`ray.init(address="auto")`, done by the CLI); the
functions find the deployment's shard actors by name in its namespace.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.runtime import shard_name

__all__ = ["dead_letters", "replay", "shards", "stats"]


def shards(namespace: str = "ghbot", limit: int = 64) -> list[Any]:
    """Return handles to the deployment's shard actors, in index order."""
    found = []
    for index in range(limit):
        try:
            found.append(ray.get_actor(shard_name(index), namespace=namespace))
        except ValueError:
            break
    return found


def stats(namespace: str = "ghbot") -> list[dict[str, Any]]:
    """Return every shard's counters."""
    return list(ray.get([shard.stats.remote() for shard in shards(namespace)]))


def dead_letters(namespace: str = "ghbot") -> list[dict[str, Any]]:
    """Return every dead letter of the deployment, oldest first."""
    found: list[dict[str, Any]] = []
    for batch in ray.get([shard.dead_letters.remote() for shard in shards(namespace)]):
        found.extend(batch)
    return sorted(found, key=lambda d: d["at"])


def replay(namespace: str, delivery_id: str, handler: str | None = None) -> int:
    """Run a dead letter's handlers again (one `handler`, or all); return how many."""
    handles = shards(namespace)
    owners = {
        (d["shard"], d["installation_id"])
        for d in dead_letters(namespace)
        if d["delivery_id"] == delivery_id
    }
    refs = [
        handles[shard].replay.remote(installation_id, delivery_id, handler)
        for shard, installation_id in owners
    ]
    return sum(ray.get(refs))
