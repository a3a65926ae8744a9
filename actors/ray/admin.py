"""Operate a running deployment from a driver: stats, dead letters, replays.

Connect to the cluster first (`ray.init(address="auto")`, done by the CLI); the
functions find the deployment's shard actors by name in its namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ray

from actors.ray.lifecycle import retire
from actors.ray.names import APP_AUTH_NAME, running_shards, shard_name, shards_by_name
from actors.ray.shard_actor import DRAIN_TIMEOUT
from ghbot.errors import GhBotError, UsageError

__all__ = [
    "DeploymentNotFound",
    "dead_letters",
    "ingress_app",
    "replay",
    "require_shards",
    "shards",
    "stats",
    "stop",
    "sweep",
]

#: Seconds to wait for the shards' answers; a stuck shard raises `GetTimeoutError`.
TIMEOUT = 60.0
#: Seconds to wait for a sweep asked for by hand: it waits for a scheduled one running,
#: and its asks to GitHub are paced writes (`GHBOT_PACE_WRITES`, a second apart by
#: default) counted against 500 an hour, so after an outage it takes minutes.
SWEEP_TIMEOUT = 3600.0


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
    return list(_get([shard.stats.remote() for shard in shards(namespace)]))


def dead_letters(namespace: str = "ghbot") -> list[dict[str, Any]]:
    """Return every dead letter of the deployment, oldest first."""
    found: list[dict[str, Any]] = []
    refs = [shard.dead_letters.remote() for shard in shards(namespace)]
    for batch in _get(refs):
        found.extend(batch)
    return sorted(found, key=lambda d: d["at"])


def replay(namespace: str, delivery_id: str, handler: str | None = None) -> int:
    """Run a dead letter's handlers again (one `handler`, or all); return how many.

    Raise `ShardDraining` if the shard holding it is being replaced.
    """
    handles = shards_by_name(namespace)  # by the index each dead letter names
    owners = {
        (d["shard"], d["installation_id"])
        for d in dead_letters(namespace)
        if d["delivery_id"] == delivery_id
    }
    refs = [
        handles[shard_name(shard)].replay.remote(installation_id, delivery_id, handler)
        for shard, installation_id in owners
    ]
    return sum(_get(refs))


def sweep(namespace: str = "ghbot", lookback: float | None = None) -> dict[str, Any]:
    """Have the app-auth actor sweep for failed deliveries now, `lookback` seconds back
    (None: its own 6 hours); return what it did."""
    try:
        app_auth = ray.get_actor(APP_AUTH_NAME, namespace=namespace)
    except ValueError:
        raise DeploymentNotFound(
            f"no ghbot deployment in Ray namespace {namespace!r} (no actor named "
            f"{APP_AUTH_NAME!r}); check the namespace"
        ) from None
    ref: Any = app_auth.sweep.remote(lookback)
    found: dict[str, Any] = _get(ref, SWEEP_TIMEOUT)
    return found


def _get(refs: Any, timeout: float = TIMEOUT) -> Any:
    """`ray.get` with `timeout`; a ghbot error an actor raised is raised as itself.

    Ray raises its `RayTaskError` made an instance of the cause's class, whose text is
    the actor's traceback (its first line names the actor and its pid, not the error):
    the CLI prints an error's own message as its one line.
    """
    try:
        return ray.get(refs, timeout=timeout)
    except GhBotError as exc:
        raise getattr(exc, "cause", exc) from None


#: The Serve deployment of ghbot's ingress, by which `stop` finds its application.
INGRESS_DEPLOYMENT = "WebhookIngress"


def ingress_app(asked: str | None, applications: Mapping[str, Iterable[str]]) -> str | None:
    """Return the Serve application `stop` deletes, of `applications` (name: the names of
    its deployments); None if there is none to delete.

    `asked` if it runs ghbot's ingress (a deployment named `INGRESS_DEPLOYMENT`). Not
    asked: the one application running it (`serve run` names it ``default``,
    `deploy/serve.yaml` ``ghbot``). None when no application runs the ingress and
    none is `asked` or the one asked is not there (deleted already: only the actors
    are left). Raises `UsageError`, before
    anything is stopped, for an `asked` application that does not run the ingress
    (someone else's: Serve may run other applications beside ghbot's), for an `asked`
    that is not there while the ingress runs under another name, and, not asked, for
    several applications running it.
    """
    ours = sorted(name for name, names in applications.items() if INGRESS_DEPLOYMENT in names)
    if asked is not None and asked in ours:
        return asked
    named = ", ".join(repr(name) for name in ours)
    if asked is not None and asked in applications:
        where = f"; ghbot's ingress runs as {named}" if ours else ""
        raise UsageError(
            f"the Serve application {asked!r} does not run ghbot's ingress "
            f"({INGRESS_DEPLOYMENT}){where}: nothing stopped"
        )
    if not ours:
        return None
    if asked is not None:
        raise UsageError(
            f"no Serve application {asked!r}; ghbot's ingress runs as {named}: nothing stopped"
        )
    if len(ours) > 1:
        raise UsageError(
            f"ghbot's ingress runs in {len(ours)} Serve applications ({named}): "
            "name one with --app; nothing stopped"
        )
    return ours[0]


def stop(
    namespace: str = "ghbot", app: str | None = None, within: float = DRAIN_TIMEOUT
) -> dict[str, Any]:
    """Stop a deployment: its Serve application, then each shard drained, then its actors.

    Deleting the application first stops new deliveries at the door (GitHub's
    deliveries fail meanwhile, and the next deployment's redelivery sweep has them
    sent again, those of the last 6 hours: `ghbot redeliver --since` reaches further).
    Each shard then finishes what it took, within `within` seconds (what is left,
    handlers still running then included, stays pending in the journal for the next
    deployment, which runs them from the start), and the shards and
    the app-auth actor, which outlive `serve.shutdown()`, are killed. `app` names the
    application; by default the one running ghbot's ingress (`ingress_app`).
    """
    from ray import serve

    applications = serve.status().applications
    chosen = ingress_app(app, {name: list(s.deployments) for name, s in applications.items()})
    if chosen is not None:
        serve.delete(chosen)
    named = shards_by_name(namespace)
    drained = retire(named, namespace, within, finish=True)
    killed = len(named)
    try:
        ray.kill(ray.get_actor(APP_AUTH_NAME, namespace=namespace), no_restart=True)
        killed += 1
    except ValueError:
        pass
    return {
        "app": chosen,
        "app_deleted": chosen is not None,
        "drained": drained,
        "shards": len(named),
        "killed": killed,
    }
