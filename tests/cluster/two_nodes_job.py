"""The two-node scenario, as a Ray driver of its own: run by tests/cluster/test_two_nodes.py.

    python tests/cluster/two_nodes_job.py --address HOST:PORT --journal-url postgresql://…

Connects to a running Ray cluster of (at least) two nodes, deploys ghbot with the
PostgreSQL journal and a FakeGitHub as the API, pins shard 0 to one node and shard 1
to the other, sends signed real payloads through Serve's HTTP proxy, and checks what
happened: each delivery commented exactly once, each journaled exactly once and
completed. Prints one line, `RESULT {json}`, last; exits 0 once it has printed it
(the test judges the result), 1 if the scenario could not run. Always removes what it
deployed (Serve, the detached actors, the fake); the caller stops the cluster and
drops the schema.

It runs in its own process because the test session already has a Ray of its own in
the test process, and a process joins one Ray cluster at most.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests.cluster` importable
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from actors.ray.lifecycle import RemoteAppAuth, RemoteShard, kill_actors, wait_ready  # noqa: E402
from actors.ray.names import APP_AUTH_NAME, shard_name  # noqa: E402
from actors.runtime_events import stream_name  # noqa: E402
from actors.settings import RuntimeSettings  # noqa: E402
from ghbot.config import Settings  # noqa: E402
from ghbot.journal import open_journal  # noqa: E402
from ghbot.testing import FakeGitHub, app_key_pair  # noqa: E402
from tests.cluster.conftest import (  # noqa: E402
    APP_ID,
    SECRET,
    comments,
    free_port,
    install,
    payload,
    send,
)

NAMESPACE = "ghbot-two-nodes"
VSHARDS = 4
# installation -> vshard (id % 4) -> shard (vshard % 2): two installations per shard.
INSTALLATIONS = (2001, 2002, 2003, 2004)


def _alive_nodes(want: int, within: float) -> list[str]:
    """Return the ids of the cluster's alive nodes once there are `want` of them."""
    deadline = time.monotonic() + within
    while True:
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])  # type: ignore[no-untyped-call]
        if len(nodes) >= want or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def _placement() -> dict[str, str]:
    """Return the node id of every alive actor, by actor name (or class for Serve's)."""
    # ray.util.state needs the dashboard, which this cluster runs without; the GCS
    # actor table (what `ray list actors` reads) is reachable from any driver.
    from ray._private import state

    placed: dict[str, str] = {}
    for actor in state.actors(actor_state_name="ALIVE").values():
        key = actor["Name"] or actor["ActorClassName"]
        placed[key] = actor["Address"]["NodeID"]
    return placed


def _create_actors(runtime: RuntimeSettings, nodes: list[str]) -> list[Any]:
    """Create the app-auth actor and the shards, shard i hard-pinned to nodes[i].

    The ingress's `get_or_create_actors` then finds them by name (same options).
    """
    common: dict[str, Any] = {
        "namespace": runtime.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
    }
    RemoteAppAuth.options(name=APP_AUTH_NAME, max_concurrency=1000, **common).remote(
        runtime.for_app_auth()
    )
    return [
        RemoteShard.options(
            name=shard_name(i),
            max_concurrency=10_000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i], soft=False),
            **common,
        ).remote(i, runtime.for_shards())
        for i in range(runtime.shards)
    ]


async def _send_all(url: str, per_installation: int) -> tuple[dict[int, list[str]], list[int]]:
    """Send `per_installation` new issues to each installation, then one redelivery each.

    Return the GUIDs sent per installation and every HTTP status, in order.
    """
    sent: dict[int, list[str]] = {i: [] for i in INSTALLATIONS}
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def one(installation: int, guid: str) -> None:
            data = payload(
                "issues.opened",
                installation=installation,
                repo=f"two/repo-{installation}",
                issue__number=1,
            )
            status, _ = await send(url, "issues", data, guid=guid, session=session)
            statuses.append(status)

        for installation in INSTALLATIONS:
            sent[installation] = [str(uuid.uuid4()) for _ in range(per_installation)]
        await asyncio.gather(*(one(i, g) for i in INSTALLATIONS for g in sent[i]))
        # GitHub's redelivery of a GUID already journaled: acknowledged, not run again.
        await asyncio.gather(*(one(i, sent[i][0]) for i in INSTALLATIONS))
    return sent, statuses


def _hello_counts(fake: Any) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for installation in INSTALLATIONS:
        for comment in comments(fake, f"two/repo-{installation}"):
            counts[comment["body"].removeprefix("hello ")] += 1
    return counts


async def _journaled(journal_url: str, sent: dict[int, list[str]]) -> dict[str, Any]:
    """Read each installation's stream back; count deliveries received and completed."""
    journal = await open_journal(journal_url, shard_count=VSHARDS)
    try:
        found: dict[str, Any] = {}
        for installation, guids in sent.items():
            records = await journal.read(stream_name(installation), shard=installation % VSHARDS)
            received = [r.delivery_guid for r in records if r.type == "DeliveryReceived"]
            completed = [r for r in records if r.type == "DeliveryCompleted"]
            found[str(installation)] = {
                "received": len(received),
                "distinct": len(set(received)),
                "completed": len(completed),
                "guids_match": set(received) == set(guids),
            }
        return found
    finally:
        await journal.close()


def run(address: str, journal_url: str, per_installation: int) -> dict[str, Any]:
    """Run the scenario on the cluster at `address`; return what was observed."""
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    pem, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=APP_ID, public_key_pem=public)
    runtime = RuntimeSettings(
        bot="tests.cluster.bots:Greeter",
        settings=Settings(
            app_id=APP_ID,
            private_key=pem,
            webhook_secrets=(SECRET,),
            api_url=fake.url,
            journal_url=journal_url,
        ),
        namespace=NAMESPACE,
        shards=2,
        vshards=VSHARDS,
        pace_writes=None,
    )
    try:
        nodes = _alive_nodes(2, within=30)
        if len(nodes) < 2:
            return {"error": f"the cluster has {len(nodes)} alive node(s), not 2"}
        for installation in INSTALLATIONS:
            install(fake, installation, f"two/repo-{installation}")
        shards = _create_actors(runtime, nodes)
        wait_ready(shards, timeout=60)
        port = free_port()
        # One proxy (on the head): both raylets share this machine, so a proxy per node
        # would bind the same port twice.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        from actors.ray.ingress import WebhookDeployment

        serve.run(WebhookDeployment.bind(runtime), name="ghbot", route_prefix="/")
        url = f"http://127.0.0.1:{port}"

        sent, statuses = asyncio.run(_send_all(url, per_installation))
        every = {g for guids in sent.values() for g in guids}
        deadline = time.monotonic() + 60
        while not every <= set(_hello_counts(fake)) and time.monotonic() < deadline:
            time.sleep(0.2)
        idle = ray.get([shard.wait_idle.remote(30.0) for shard in shards])
        time.sleep(0.5)  # a duplicate run would show up by now
        counts = _hello_counts(fake)
        placed = _placement()
        stats = ray.get([shard.stats.remote() for shard in shards])
        return {
            "nodes": nodes,
            "shard_nodes": [placed.get(shard_name(i)) for i in range(runtime.shards)],
            "app_auth_node": placed.get(APP_AUTH_NAME),
            "ingress_nodes": sorted(
                {node for name, node in placed.items() if "WebhookIngress" in name}
            ),
            "sent": len(every),
            "statuses": dict(collections.Counter(statuses)),
            "shard_received": [s["received"] for s in stats],
            "shard_duplicates": [s["duplicates"] for s in stats],
            "shard_channel_batches": [s["channel_batches"] for s in stats],
            "idle": idle,
            "missing": sorted(every - set(counts)),
            "handled_more_than_once": sorted(g for g, n in counts.items() if n > 1),
            "unexpected_comments": sorted(set(counts) - every),
            "journal": asyncio.run(_journaled(journal_url, sent)),
            "per_installation": per_installation,
        }
    finally:
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            kill_actors(NAMESPACE, runtime.shards)
            fake.stop()
            ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the cluster's GCS, HOST:PORT")
    parser.add_argument("--journal-url", required=True, help="postgresql://…?schema=…")
    parser.add_argument("--per-installation", type=int, default=5)
    args = parser.parse_args()
    result = run(args.address, args.journal_url, args.per_installation)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
