"""Redeploying rolls the new code and settings to every actor, under load, losing nothing.

`serve run` again with a changed bot (here `Greeter` → `GreeterV2`, same namespace and
journal): the new ingress replica replaces each actor that runs another version
(drained first), while deliveries keep coming. Every acknowledged delivery is handled
exactly once, those sent after the switch by the new code, and `ghbot status` shows
the version each shard runs. The same for a change of the number of shard actors
(virtual shards move), and for a webhook secret's rotation and more ingress replicas
(no shard replaced).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NamedTuple

import aiohttp
import pytest

from actors.ray.batcher import HOLD_FOR, RETRY_EVERY
from tests.cluster.conftest import (
    comments,
    eventually,
    ingress_replica_states,
    install,
    payload,
    send,
)

pytestmark = pytest.mark.cluster

REPO = "upgrade/repo"
INSTALLATION = 1400


class Refused(NamedTuple):
    """A delivery the ingress answered 503: its GUID, the answer, seconds it took."""

    guid: str
    answer: dict[str, Any]
    wait: float


async def _deliver(
    url: str,
    guids: list[str],
    acked: list[str],
    secret: str = "cluster-test-secret",
    unavailable: list[Refused] | None = None,
) -> None:
    """Send each delivery until it is acknowledged; a 503 is retried, as GitHub would
    (and added to `unavailable`, with its answer and how long it took)."""
    async with aiohttp.ClientSession() as session:

        async def one(guid: str, number: int) -> None:
            data = payload(
                "issues.opened", installation=INSTALLATION, repo=REPO, issue__number=number
            )
            for _ in range(200):
                started = time.monotonic()
                status, answer = await send(
                    url, "issues", data, guid=guid, session=session, secret=secret
                )
                if status in (200, 202):
                    acked.append(guid)
                    return
                assert status == 503, status
                if unavailable is not None:
                    unavailable.append(Refused(guid, answer, time.monotonic() - started))
                await asyncio.sleep(0.2)
            raise AssertionError(f"{guid} never acknowledged")

        for start in range(0, len(guids), 4):  # a steady stream, 4 in flight
            batch = guids[start : start + 4]
            await asyncio.gather(*(one(g, 1 + (start + i) % 5) for i, g in enumerate(batch)))


async def _deliver_during(
    work: Callable[[], object],
    url: str,
    acked: list[str],
    secret: str = "cluster-test-secret",
    unavailable: list[Refused] | None = None,
) -> list[str]:
    """Run `work` (a redeploy) in a thread while deliveries go on, 4 at a time every 50
    ms, from half a second before it starts to a second after it ends (a redeploy takes
    seconds); return their GUIDs."""
    sent: list[str] = []
    done = asyncio.Event()

    async def stream() -> None:
        while not done.is_set():
            batch = [str(uuid.uuid4()) for _ in range(4)]
            sent.extend(batch)
            await _deliver(url, batch, acked, secret, unavailable)
            await asyncio.sleep(0.05)

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(0.5)
    await asyncio.to_thread(work)
    await asyncio.sleep(1.0)
    done.set()
    await streaming
    return sent


@contextmanager
def _sampling_replica_states(samples: list[dict[str, int]]) -> Iterator[None]:
    """Add the ingress's replica states (`ingress_replica_states`) to `samples` every
    0.1 s while the block runs, and once more after it; raise what stopped the
    sampling early, if anything did."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def sample() -> None:
        try:
            while not stop.wait(0.1):
                samples.append(ingress_replica_states())
        except BaseException as exc:  # re-raised in the test's thread, below
            failed.append(exc)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
    if failed:
        raise AssertionError("sampling the replica states failed") from failed[0]
    samples.append(ingress_replica_states())


async def test_a_redeploy_reaches_every_shard_under_load(
    deploy: Any, fake: Any, tmp_path: Any
) -> None:
    from actors.ray.admin import stats

    install(fake, INSTALLATION, REPO, issues=5)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    common = {
        "namespace": namespace,
        "journal_url": f"sqlite://{tmp_path}/upgrade-journal",
        # As README asks for in production: Serve replaces them one at a time, the
        # first new one replacing the actors while the other old one answers (holding
        # what goes to a shard being replaced until its successor takes it).
        "ingress_replicas": 2,
    }
    first = deploy("tests.cluster.bots:Greeter", **common)
    old_versions = {s["version"] for s in stats(namespace)}

    after = [str(uuid.uuid4()) for _ in range(20)]
    acked: list[str] = []
    unavailable: list[Refused] = []
    samples: list[dict[str, int]] = []

    def redeploy() -> None:
        with _sampling_replica_states(samples):
            deploy("tests.cluster.bots:GreeterV2", **common)

    # The redeploy, while the stream goes on: `serve run` returns once the new
    # replicas are up, and so once the first of them has replaced the actors.
    before = await _deliver_during(redeploy, first.url, acked, unavailable=unavailable)
    # The old replica held what it sent to the shard being replaced, and its successor
    # took it: none answered 503 without being held for the whole hold (before the
    # ingress held such batches, about 2 s of deliveries were). One held that long is
    # the hold's documented limit (CHANGELOG's known gaps: a successor slower to start
    # than the hold). One 503 of 324 came in a CI run on a loaded machine (its wait
    # not recorded), and one of 316, at once, in a user-style run: the ingress wrote
    # to a connection the old shard had reset and uvloop raised `RuntimeError`, fixed
    # in the channel (`tests/runtime/test_channel.py`, `..._torn_down_...`).
    unheld = [r for r in unavailable if r.wait < HOLD_FOR - 2 * RETRY_EVERY]
    assert unheld == [], f"{len(unheld)} of {len(before)} answered 503 unheld: {unheld}"
    if unavailable:  # in pytest's warnings summary, where a CI log shows it
        warnings.warn(
            f"{len(unavailable)} held for the whole {HOLD_FOR:g} s hold, then 503: {unavailable}",
            stacklevel=1,
        )
    assert samples[-1].get("RUNNING") == 2, samples[-1]
    # Serve's rolling update replaces one replica at a time: one was running to answer
    # at every sample, also while a new one was starting (and replacing the actors).
    assert len(samples) >= 3, samples
    assert all(s.get("RUNNING", 0) >= 1 for s in samples), samples
    assert any(s.get("RUNNING", 0) >= 1 and s.get("STARTING", 0) >= 1 for s in samples), samples
    await _deliver(first.url, after, acked)

    shards = sorted(stats(namespace), key=lambda s: s["created_at"])
    versions = {s["version"] for s in shards}
    assert len(versions) == 1 and versions.isdisjoint(old_versions) and "" not in versions
    # One shard replaced at a time: the second successor was made once the first had
    # started (side by side, on a slow machine, neither started within the hold).
    assert shards[1]["created_at"] >= shards[0]["started_at"] > 0, shards

    def bodies() -> list[str]:
        return [c["body"] for c in comments(fake, REPO)]

    wanted = set(before + after)
    await eventually(lambda: {b.rsplit(" ", 1)[1] for b in bodies()} >= wanted, within=120)
    found = bodies()
    by_guid: dict[str, list[str]] = {}
    for body in found:
        by_guid.setdefault(body.rsplit(" ", 1)[1], []).append(body)
    assert set(by_guid) == wanted  # nothing handled that was not sent
    assert all(len(handled) == 1 for handled in by_guid.values()), "a delivery ran twice"
    assert all(by_guid[g] == [f"hello again {g}"] for g in after)  # the new code's


async def test_two_replicas_replacing_the_same_actors_at_once_end_with_one_set(
    deploy: Any, fake: Any
) -> None:
    """Two ingress replicas of a new version that start together (a scale-up and an
    upgrade in one deploy, say) each replace the old version's actors: they end up
    with the same new actors, on the new version, and neither waits on a name the
    other has already given to its replacement."""
    import ray

    from actors.ray.admin import stats
    from actors.ray.lifecycle import _wait_gone, get_or_create_actors
    from actors.ray.names import APP_AUTH_NAME, shard_name

    runtime = deploy("tests.cluster.bots:Greeter").runtime
    new = replace(runtime, version=f"{runtime.version}-next")
    # What a third replica that looked before the other two replaced it would hold.
    stale = ray.get_actor(shard_name(0), namespace=runtime.namespace)
    took: list[float] = []

    def start_a_replica() -> list[str]:
        began = time.monotonic()
        handles = get_or_create_actors(new)  # what a new replica's constructor does
        took.append(round(time.monotonic() - began, 2))
        return [handle._actor_id.hex() for handle in handles]

    first, second = await asyncio.gather(
        asyncio.to_thread(start_a_replica), asyncio.to_thread(start_a_replica)
    )
    print(f"\nthe two replicas' replacements took {sorted(took)} s")
    assert first == second
    assert [s["version"] for s in stats(runtime.namespace)] == [new.version] * runtime.shards
    app_auth = ray.get_actor(APP_AUTH_NAME, namespace=runtime.namespace)
    assert ray_get(app_auth.version.remote()) == new.for_app_auth().app_auth_version()
    # That third replica's wait for the old shard's name ends at once: the name is the
    # new shard's now (it used to wait 30 s for the name to be free).
    assert _wait_gone(shard_name(0), runtime.namespace, stale, within=5.0)
    assert ray_get(ray.get_actor(shard_name(0), namespace=runtime.namespace).version.remote()) == (
        new.version
    )


async def test_a_new_sweep_interval_replaces_the_app_auth_actor_and_no_shard(
    deploy: Any, fake: Any, tmp_path: Any
) -> None:
    """`GHBOT_REDELIVER_EVERY` is the app-auth actor's alone: a redeploy with another
    interval replaces it (its sweeps start anew) and keeps every shard running."""
    import ray

    from actors.ray.admin import shards
    from actors.ray.names import APP_AUTH_NAME

    namespace = f"t-{uuid.uuid4().hex[:8]}"
    common = {"namespace": namespace, "journal_url": f"sqlite://{tmp_path}/sweep-journal"}
    deploy("tests.cluster.bots:Greeter", **common)
    pids = [ray_get(s.pid.remote()) for s in shards(namespace)]
    before = ray.get_actor(APP_AUTH_NAME, namespace=namespace)
    again = deploy("tests.cluster.bots:Greeter", redeliver_every=3600, **common)
    after = ray.get_actor(APP_AUTH_NAME, namespace=namespace)
    assert after._actor_id != before._actor_id
    assert ray_get(after.version.remote()) == again.runtime.for_app_auth().app_auth_version()
    assert [ray_get(s.pid.remote()) for s in shards(namespace)] == pids


def _handled_once(fake: Any, wanted: set[str]) -> dict[str, list[str]]:
    """Return each GUID's comments; check every wanted one was handled exactly once."""
    by_guid: dict[str, list[str]] = {}
    for comment in comments(fake, REPO):
        by_guid.setdefault(comment["body"].rsplit(" ", 1)[1], []).append(comment["body"])
    assert set(by_guid) >= wanted
    assert all(len(by_guid[g]) == 1 for g in wanted), "a delivery ran twice"
    return by_guid


async def test_more_shard_actors_on_a_redeploy_move_virtual_shards_losing_nothing(
    deploy: Any, fake: Any, tmp_path: Any
) -> None:
    from actors.ray.admin import stats

    install(fake, INSTALLATION, REPO, issues=5)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    common = {
        "namespace": namespace,
        "journal_url": f"sqlite://{tmp_path}/reshard-journal",
        "vshards": 4,
    }
    first = deploy("tests.cluster.bots:Greeter", shards=1, **common)
    assert [s["vshards"] for s in stats(namespace)] == [[0, 1, 2, 3]]
    guids = [str(uuid.uuid4()) for _ in range(60)]
    acked: list[str] = []
    stream = asyncio.create_task(_deliver(first.url, guids, acked))
    await eventually(lambda: len(acked) >= 12, within=60)
    await asyncio.to_thread(deploy, "tests.cluster.bots:Greeter", shards=2, **common)
    await stream
    assert sorted(s["vshards"] for s in stats(namespace)) == [[0, 2], [1, 3]]
    await eventually(lambda: len(comments(fake, REPO)) >= len(guids), within=120)
    _handled_once(fake, set(guids))

    # The number of virtual shards is fixed for the journal's life: refused, and the
    # running shards are left as they were, and the app-auth actor too (replaced by the
    # refused settings, its sweeps routed by 8 virtual shards to shards that do not run).
    import ray
    from ray import serve

    from actors.ray.names import APP_AUTH_NAME

    app_auth = ray.get_actor(APP_AUTH_NAME, namespace=namespace)._actor_id
    with pytest.raises(Exception, match="Failed to update the deployments"):
        await asyncio.to_thread(
            deploy, "tests.cluster.bots:Greeter", shards=2, **{**common, "vshards": 8}
        )
    message = serve.status().applications["ghbot"].deployments["WebhookIngress"].message
    assert "number of virtual shards is fixed" in message
    assert sorted(s["vshards"] for s in stats(namespace)) == [[0, 2], [1, 3]]
    assert ray.get_actor(APP_AUTH_NAME, namespace=namespace)._actor_id == app_auth


async def test_a_webhook_secret_rotates_and_the_ingress_scales_without_a_delivery_refused(
    deploy: Any, fake: Any, tmp_path: Any
) -> None:
    """Neither the webhook secrets nor the ingress's replica count are in the actors'
    version: the shards and the app-auth actor keep running through both redeploys."""
    import ray

    from actors.ray.admin import shards
    from actors.ray.names import APP_AUTH_NAME

    install(fake, INSTALLATION, REPO, issues=5)
    common = {
        "namespace": f"t-{uuid.uuid4().hex[:8]}",
        "journal_url": f"sqlite://{tmp_path}/rotate-journal",
    }
    first = deploy("tests.cluster.bots:Greeter", webhook_secrets=("old",), **common)
    app_auth = ray.get_actor(APP_AUTH_NAME, namespace=common["namespace"])
    pids = [ray_get(s.pid.remote()) for s in shards(common["namespace"])]
    acked: list[str] = []
    # 1. Add the new secret while GitHub still signs with the old one.
    old = await _deliver_during(
        lambda: deploy("tests.cluster.bots:Greeter", webhook_secrets=("new", "old"), **common),
        first.url,
        acked,
        secret="old",
    )
    # 2. GitHub switches to the new secret. 3. Remove the old one, and scale the
    # ingress to two replicas (what README asks for in production) on the way, while
    # deliveries keep coming.
    new = [str(uuid.uuid4()) for _ in range(10)]
    await _deliver(first.url, new, acked, secret="new")
    unavailable: list[Refused] = []
    new += await _deliver_during(
        lambda: deploy(
            "tests.cluster.bots:Greeter", webhook_secrets=("new",), ingress_replicas=2, **common
        ),
        first.url,
        acked,
        secret="new",
        unavailable=unavailable,
    )
    states = ingress_replica_states()
    assert states.get("RUNNING") == 2, states
    print(f"\n{len(old)} and {len(new)} deliveries around the two redeploys; answered 503")
    print(f"(and sent again) while scaling the ingress: {len(unavailable)}")
    data = payload("issues.opened", installation=INSTALLATION, repo=REPO, issue__number=1)
    assert (await send(first.url, "issues", data, secret="old"))[0] == 401

    assert [ray_get(s.pid.remote()) for s in shards(common["namespace"])] == pids
    # The same app-auth actor (a replaced one is another actor under the same name).
    again = ray.get_actor(APP_AUTH_NAME, namespace=common["namespace"])
    assert again._actor_id == app_auth._actor_id
    await eventually(lambda: len(comments(fake, REPO)) >= len(old) + len(new), within=120)
    _handled_once(fake, set(old + new))


def ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref, timeout=60)
