"""Name the deployment's actors in Ray, and find them by those names.

Actors are named and detached in the `namespace` of the deployment, so every ingress
replica (and the CLI) finds the same ones, whichever process made them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

__all__ = [
    "APP_AUTH_NAME",
    "find_shard",
    "running_shards",
    "shard_name",
    "shards_by_name",
]

APP_AUTH_NAME = "ghbot-app-auth"

#: The most shard actors a deployment may have (`GHBOT_SHARDS`).
MAX_SHARDS = 64


def shard_name(index: int) -> str:
    """Return the Ray name of shard actor `index`."""
    return f"ghbot-shard-{index}"


async def find_shard(index: int, namespace: str) -> Any:
    """Return a handle to the actor named as shard `index` now (its successor, once a
    shard is replaced); raise `ValueError` while none is."""
    return await asyncio.to_thread(ray.get_actor, shard_name(index), namespace=namespace)


def running_shards(namespace: str) -> list[Any]:
    """Return handles to the deployment's shard actors there, in index order."""
    return list(shards_by_name(namespace).values())


def shards_by_name(namespace: str) -> dict[str, Any]:
    """Return the deployment's shard actors there by name, in index order: every index
    up to `MAX_SHARDS`, as an upgrade stopped between a shard's stop and its
    successor's start leaves a gap, and the shards past it run all the same."""
    found = {}
    for index in range(MAX_SHARDS):
        name = shard_name(index)
        try:
            found[name] = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
    return found
