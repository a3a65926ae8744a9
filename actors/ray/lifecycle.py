"""Start the deployment's Ray actors, replace them when its version changes, stop them.

The actors are the shards that host installations (`actors.ray.shard_actor`) and the
app-auth actor (`actors.ray.app_auth_actor`). They are named and detached in the
`namespace` of the deployment (`actors.ray.names`), so every ingress replica (and the
CLI) finds the same ones, and restarted with `max_restarts=-1`: a shard killed with
`kill -9` comes back, takes new epochs (its predecessor is fenced) and resumes its
pending deliveries.

Each actor runs one version of the deployment (`RuntimeSettings.version`: the bot's
code and the settings the actors run with, not the ingress's own). An ingress replica
that starts with another version replaces the actors one by one
(`get_or_create_actors`): a shard is drained (it refuses new deliveries, which the
ingress holds for a few seconds, `actors.ray.batcher.ShardBatcher`, and finishes what
it took), then killed, and a new one of the same name takes its epochs, resumes its
pending work, and is sent what was held.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from actors.ray.app_auth_actor import AppAuthActor
from actors.ray.names import APP_AUTH_NAME, shard_name, shards_by_name
from actors.ray.shard_actor import DRAIN_TIMEOUT, ShardActor
from actors.settings import RuntimeSettings
from ghbot.errors import ConfigError
from ghbot.journal.layout import reshard_command

__all__ = ["get_or_create_actors", "kill_actors", "retire"]

log = logging.getLogger("ghbot.runtime")

#: Seconds an ingress replica replacing the shards waits for one's successor to start
#: before it replaces the next (`get_or_create_actors`).
SUCCESSOR_START = 30.0


# Ray's decorators are untyped; the actor classes stay plain so mypy checks their bodies.
RemoteShard: Any = ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(ShardActor)
RemoteAppAuth: Any = ray.remote(max_restarts=-1, num_cpus=0)(AppAuthActor)


def get_or_create_actors(settings: RuntimeSettings) -> list[Any]:
    """Return handles to the shard actors, creating them and the app-auth actor if absent.

    An actor that runs another version than `settings.version` is replaced (see the
    module), once a change of layout is checked (one refused replaces nothing; one
    allowed stops the running shards first), the app-auth actor, then each shard in
    turn, the next once the
    previous one's successor has started (up to `SUCCESSOR_START`). The version is set
    once, where the deployment is built (`build_settings`), so every replica and
    driver compares the same one; settings without one ("") replace nothing. When the number of
    shard actors changes, virtual shards move between them: then every running shard
    is drained and stopped before the new ones start, so that no two shards hold a
    virtual shard at once (a few seconds of 503s for what an ingress replica still
    routing by the old number sends, which GitHub delivers again).
    The number of virtual shards is fixed for a journal's life: a change is refused
    (`ghbot journal reshard` changes it, the deployment stopped).

    Of the actors started here, only the app-auth actor is given the private key (or
    the path to read it from); shards get neither the key, its path, nor the webhook
    secrets. Ray keeps actor arguments for restarts, so what an actor is not passed is
    in none of its arguments. The ingress replicas, Serve's, keep the webhook secrets
    and the key's path, not the key; a key given as PEM text reaches them, and Serve's
    control store, in the deployment's arguments (`docs/architecture.md`).
    """
    _reshard(settings)  # first: a layout it refuses replaces nothing, this actor neither
    app_auth = settings.for_app_auth()
    _current(
        RemoteAppAuth,
        APP_AUTH_NAME,
        (app_auth,),
        app_auth.app_auth_version() if settings.version else "",
        settings.namespace,
        drain=False,
        max_concurrency=1000,
    )
    shards = settings.for_shards()
    return [
        _current(
            RemoteShard,
            shard_name(i),
            (i, shards),
            settings.version,
            settings.namespace,
            drain=True,
            max_concurrency=10_000,
        )
        for i in range(settings.shards)
    ]


def _reshard(settings: RuntimeSettings) -> None:
    """Stop every running shard first when the deployment's layout changes (see above)."""
    named = shards_by_name(settings.namespace)
    running = list(named.values())
    if not running:
        return
    wanted = (settings.shards, settings.vshards)
    layouts = _layouts(running)
    # At least one shard must have answered: with none (all restarting), the layout is
    # unknown, and the shards are replaced rather than kept on a guess.
    # A shard missing from the wanted names (an upgrade stopped between a shard's stop
    # and its successor's start) is made by `_current`: no reason to stop the others.
    wanted_names = {shard_name(i) for i in range(settings.shards)}
    if layouts and layouts <= {wanted} and set(named) <= wanted_names:
        return
    layouts = layouts or set()
    if any(vshards != settings.vshards for _, vshards in layouts):
        raise ConfigError(
            f"vshards={settings.vshards}, but the running shards use "
            f"{sorted(v for _, v in layouts)}: the number of virtual shards is fixed for a "
            "journal's life (its streams are partitioned by it); deploy with the old value, "
            f"or stop the deployment (ghbot stop) and run `{reshard_command(settings.vshards)}`"
        )
    log.warning(
        "resharding to %d shard actors: draining and stopping the %d running first",
        settings.shards,
        len(running),
    )
    retire(named, settings.namespace)


def _layouts(running: list[Any]) -> set[tuple[int, int]] | None:
    """Return the layouts (shards, virtual shards) the running shards answer with.

    A shard that cannot answer now (dead, or restarting: its node was lost) is left out;
    Ray restarts it with the settings it had, so it is judged by the others, never
    replaced for that alone (a replica starting during a node's loss used to stop every
    shard). None when a shard is older than layouts: then they are all replaced.
    """
    layouts: set[tuple[int, int]] = set()
    for shard in running:
        try:
            call = shard.layout
        except AttributeError:  # a shard of a version before `layout`
            return None
        try:
            shards, vshards = ray.get(call.remote(), timeout=60)
        except Exception as exc:
            log.warning("a shard did not say its layout (%s)", type(exc).__name__)
            continue
        layouts.add((int(shards), int(vshards)))
    return layouts


def retire(
    shards: dict[str, Any], namespace: str, within: float = DRAIN_TIMEOUT, *, finish: bool = False
) -> int:
    """Drain the shard actors (by name) at once, up to `within` seconds, stop them, and
    wait until their names no longer name them (`_wait_gone`); return how many drained.
    What they left pending, their successors resume from the journal (`finish`: each
    runs every delivery it took first, for `ghbot stop`)."""
    # `finish` only when asked: a shard of an older version takes `within` alone.
    args = (within, True) if finish else (within,)
    refs = {name: shard.drain.remote(*args) for name, shard in shards.items()}
    drained = 0
    for name, ref in refs.items():
        try:
            drained += bool(ray.get(ref, timeout=within + 10))
        except Exception as exc:
            log.warning("%s did not drain: %s", name, type(exc).__name__)
    if drained < len(shards):
        log.warning("%d shard(s) did not drain: successors resume the rest", len(shards) - drained)
    for name, shard in shards.items():
        ray.kill(shard, no_restart=True)
        _wait_gone(name, namespace, shard)
    return drained


def _wait_gone(name: str, namespace: str, killed: Any, within: float = 30.0) -> bool:
    """Wait until `name` no longer names the actor `killed` (a killed actor frees its
    name a moment later): no actor holds it, or another does, the replacement that
    another ingress replica, replacing the same actor at the same time, has started.
    Return False if `killed` still held it after `within` seconds (logged)."""
    deadline = time.monotonic() + within
    while True:
        try:
            holder = ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        if holder._actor_id != killed._actor_id:
            return True
        if time.monotonic() > deadline:
            log.warning("%s still holds its name %.0f s after it was killed", name, within)
            return False
        time.sleep(0.1)


def _current(
    remote: Any,
    name: str,
    args: tuple[Any, ...],
    version: str,
    namespace: str,
    *,
    drain: bool,
    **options: Any,
) -> Any:
    """Return the named actor running `version`: the one there, or its replacement
    (after draining the old one, if `drain`)."""
    options |= {"name": name, "namespace": namespace, "lifetime": "detached"}
    handle = remote.options(get_if_exists=True, **options).remote(*args)
    if not version:
        return handle
    try:
        running = ray.get(handle.version.remote(), timeout=60)
    except Exception:  # dead, or older than versions: replace it
        running = None
    if running == version:
        return handle
    log.warning("replacing %s: it runs version %s, the deployment %s", name, running, version)
    if drain:
        retire({name: handle}, namespace)
    else:
        ray.kill(handle, no_restart=True)
        _wait_gone(name, namespace, handle)
    successor = remote.options(get_if_exists=True, **options).remote(*args)
    if drain:
        # Replace the next shard once this one's successor has started: processes that
        # start at once share the cores, and each successor must be up within the hold
        # of what the ingress keeps for it (`actors.ray.batcher.HOLD_FOR`).
        try:
            ray.get(successor.stats.remote(), timeout=SUCCESSOR_START)
        except Exception as exc:
            log.warning("%s: not started within %g s (%r)", name, SUCCESSOR_START, exc)
    return successor


def kill_actors(namespace: str = "ghbot", shards: int = 64) -> int:
    """Kill the deployment's detached actors (they outlive `serve.shutdown()`); return how many."""
    killed = 0
    for name in [APP_AUTH_NAME, *(shard_name(i) for i in range(shards))]:
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)
        killed += 1
    return killed


def wait_ready(shards: list[Any], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Block until every shard has started (taken its epochs; the recovery of its
    installations goes on in the background)."""
    deadline = time.monotonic() + timeout
    refs = [shard.stats.remote() for shard in shards]
    return list(ray.get(refs, timeout=max(deadline - time.monotonic(), 1.0)))
