"""Operate a running deployment from a driver: stats, dead letters, replays.

Connect to the cluster first (`ray.init(address="auto")`, done by the CLI); the
functions find the deployment's shard actors by name in its namespace.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.ray.runtime import APP_AUTH_NAME, DRAIN_TIMEOUT, retire, running_shards, shard_name
from ghbot.errors import ShardDraining, UsageError

__all__ = [
    "DeploymentNotFound",
    "dead_letters",
    "replay",
    "require_shards",
    "shards",
    "stats",
    "stop",
    "sweep",
]

#: Seconds to wait for the shards' answers; a stuck shard raises `GetTimeoutError`.
TIMEOUT = 60.0


class DeploymentNotFound(UsageError):
    """The namespace holds no shard actors: no deployment runs there (or it was deleted)."""


def shards(namespace: str = "ghbot") -> list[Any]:
    """Return handles to the deployment's shard actors, in index order."""
    return running_shards(namespace)


def require_shards(namespace: str = "ghbot") -> list[Any]:
    """Return the deployment's shard handles; raise `DeploymentNotFound` if it has none.

    The other functions here answer an empty list for a namespace without a
    deployment; call this first where "nothing" and "nowhere" must be told apart.
    """
    found = shards(namespace)
    if not found:
        raise DeploymentNotFound(
            f"no ghbot deployment in Ray namespace {namespace!r} "
            f"(no actor named {shard_name(0)!r}); check the namespace"
        )
    return found


def stats(namespace: str = "ghbot") -> list[dict[str, Any]]:
    """Return every shard's counters."""
    return list(ray.get([shard.stats.remote() for shard in shards(namespace)], timeout=TIMEOUT))


def dead_letters(namespace: str = "ghbot") -> list[dict[str, Any]]:
    """Return every dead letter of the deployment, oldest first."""
    found: list[dict[str, Any]] = []
    refs = [shard.dead_letters.remote() for shard in shards(namespace)]
    for batch in ray.get(refs, timeout=TIMEOUT):
        found.extend(batch)
    return sorted(found, key=lambda d: d["at"])


def replay(namespace: str, delivery_id: str, handler: str | None = None) -> int:
    """Run a dead letter's handlers again (one `handler`, or all); return how many.

    Raise `ShardDraining` (as itself, not wrapped in Ray's error) if the shard holding
    it is being replaced.
    """
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
    try:
        return sum(ray.get(refs, timeout=TIMEOUT))
    except ShardDraining as exc:  # Ray's `RayTaskError`, made an instance of its cause
        cause = getattr(exc, "cause", exc)
        raise ShardDraining(cause.installation_id, cause.operation) from None


def sweep(namespace: str = "ghbot") -> dict[str, Any]:
    """Have the app-auth actor sweep for failed deliveries now; return what it did."""
    try:
        app_auth = ray.get_actor(APP_AUTH_NAME, namespace=namespace)
    except ValueError:
        raise DeploymentNotFound(
            f"no ghbot deployment in Ray namespace {namespace!r} (no actor named "
            f"{APP_AUTH_NAME!r}); check the namespace"
        ) from None
    ref: Any = app_auth.sweep.remote()
    found: dict[str, Any] = ray.get(ref, timeout=TIMEOUT)
    return found


def stop(
    namespace: str = "ghbot", app: str = "default", within: float = DRAIN_TIMEOUT
) -> dict[str, Any]:
    """Stop a deployment: its Serve application, then each shard drained, then its actors.

    Deleting the application first stops new deliveries at the door (GitHub's
    deliveries fail meanwhile, and the next deployment's redelivery sweep has them
    sent again). Each shard then finishes what it took, within `within` seconds (what
    is left stays pending in the journal for the next deployment), and the shards and
    the app-auth actor, which outlive `serve.shutdown()`, are killed.
    """
    from ray import serve

    deleted = app in serve.status().applications
    if deleted:
        serve.delete(app)
    handles = shards(namespace)
    named = {shard_name(i): shard for i, shard in enumerate(handles)}
    drained = retire(named, namespace, within, finish=True)
    killed = len(handles)
    try:
        ray.kill(ray.get_actor(APP_AUTH_NAME, namespace=namespace), no_restart=True)
        killed += 1
    except ValueError:
        pass
    return {
        "app_deleted": deleted,
        "drained": drained,
        "shards": len(handles),
        "killed": killed,
    }
