"""The worker node's raylet killed mid-stream, as a Ray driver of its own: run by
tests/faults/test_process_kills.py on a cluster of two raylets (tests/cluster/test_two_nodes.py).

    python tests/faults/raylet_kill_job.py --address HOST:PORT --journal-url postgresql://…

Deploys `tests.faults.labeler:Labeler` with a PostgreSQL journal and a FakeGitHub, its
two shards placed on the second (worker) node by a soft node affinity (what Ray does
with an actor whose node died: a soft affinity lets it start elsewhere; a hard one
would not; with `--split`, shard 0 on the head by a hard one, the head never being
killed), Serve's proxy on the head. It streams signed deliveries through the proxy,
kills the worker node's raylet with SIGKILL (found by the node id it was started with), and
streams on until every answer has been 2xx for a second; sends again what was not
acknowledged, waits for the shards, and checks the history (`tests.history.check`).
Prints one line, `RESULT {json}`, last: where each actor ran before and after, the
answers, the time from the kill to the last failed answer, and the history's figures
or what broke it. Exits 0 once it has printed it, 1 if the scenario could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from actors.ray.lifecycle import RemoteAppAuth, RemoteShard, _wait_gone, kill_actors, wait_ready  # noqa: E402
from actors.ray.names import APP_AUTH_NAME, shard_name  # noqa: E402
from actors.settings import RuntimeSettings  # noqa: E402
from ghbot.config import Settings  # noqa: E402
from ghbot.journal import open_journal  # noqa: E402
from ghbot.testing import FakeGitHub, app_key_pair  # noqa: E402
from tests.cluster.conftest import APP_ID, SECRET, free_port  # noqa: E402
from tests.faults.http_stream import (  # noqa: E402
    BOT,
    HttpSender,
    delivery,
    effects,
    install_all,
    label_requests,
)
from tests.history import History, check, journaled  # noqa: E402

NAMESPACE = "ghbot-raylet-kill"
VSHARDS = 4
INSTALLATIONS = (8001, 8002, 8003, 8004)  # vshards 1, 2, 3, 0: two per shard
RATE = 40.0


def _nodes() -> tuple[str, str]:
    """Return (head node id, worker node id) once two nodes are alive."""
    deadline = time.monotonic() + 30
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
        if len(alive) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    heads = [n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"]]
    workers = [n["NodeID"] for n in alive if n["NodeID"] not in heads]
    if len(heads) != 1 or not workers:
        raise RuntimeError(f"want a head and a worker node, found {len(alive)} alive")
    return heads[0], workers[0]


def _placement() -> dict[str, tuple[str, int]]:
    """Return (node id, pid) of every alive actor, by name (or class, for Serve's)."""
    # ray.util.state needs the dashboard, which this cluster runs without.
    from ray._private import state

    return {
        actor["Name"] or actor["ActorClassName"]: (actor["Address"]["NodeID"], int(actor["Pid"]))
        for actor in state.actors(actor_state_name="ALIVE").values()
    }


def _raylet_pid(node_id: str) -> int:
    """Return the pid of the raylet of `node_id` (its command line names the node)."""
    flag = f"--node_id={node_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/raylet") and flag in argv:
            return int(entry.name)
    raise RuntimeError(f"no raylet process with {flag.decode()}")


def _create_actors(runtime: RuntimeSettings, targets: list[str], head: str) -> list[Any]:
    """Create the app-auth actor, and shard `i` with an affinity to node `targets[i]`.

    A shard meant for the worker gets a soft affinity, so that it can start again on
    the head once the worker's raylet is killed. A soft affinity may place it elsewhere
    (the worker just joined: the scheduler may not count it yet); such a shard is
    stopped and made again, up to 10 times. A shard meant for the head, which is never
    killed, gets a hard one: with a soft one, a CI run once saw shard 0 placed off the
    head 10 times in a row.
    """
    common: dict[str, Any] = {
        "namespace": runtime.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
    }
    RemoteAppAuth.options(name=APP_AUTH_NAME, max_concurrency=1000, **common).remote(
        runtime.for_app_auth()
    )
    shards = []
    for i in range(runtime.shards):
        for _ in range(10):
            shard = RemoteShard.options(
                name=shard_name(i),
                max_concurrency=10_000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    targets[i], soft=targets[i] != head
                ),
                **common,
            ).remote(i, runtime.for_shards())
            if ray.get(shard.node_id.remote(), timeout=60) == targets[i]:
                break
            ray.kill(shard, no_restart=True)
            _wait_gone(shard_name(i), runtime.namespace, shard)
            time.sleep(1.0)
        else:  # not a killed actor's handle, whose first call fails as if the kill did
            raise RuntimeError(f"{shard_name(i)} was placed off its node 10 times in a row")
        shards.append(shard)
    return shards


async def _scenario(
    url: str, fake: Any, journal_url: str, worker: str, before: float, after: float
) -> dict[str, Any]:
    history = History()
    result: dict[str, Any] = {}
    n = 0
    sent_at: dict[str, float] = {}
    killed_at = 0.0

    def make() -> Any:
        nonlocal n
        n += 1
        item = delivery(INSTALLATIONS[n % len(INSTALLATIONS)], n // len(INSTALLATIONS))
        sent_at[item.guid] = time.monotonic()
        return item

    async with HttpSender(url, SECRET, history) as sender:
        start = time.monotonic()
        await sender.stream(make, rate=RATE, until=lambda: time.monotonic() > start + before)
        raylet = _raylet_pid(worker)
        os.kill(raylet, signal.SIGKILL)
        killed_at = time.monotonic()
        answered = len(sender.log)

        def recovered() -> bool:
            now = time.monotonic()
            if now > killed_at + 120:
                raise TimeoutError("no steady 2xx 120 s after the raylet's kill")
            return now > killed_at + after and sender.steady_since(killed_at, 1.0)

        await sender.stream(make, rate=RATE, until=recovered)
        failed = sender.failed_since(killed_at)
        result["answers_after_kill"] = dict(Counter(s for _, s in sender.log[answered:]))
        result["recovered_in_s"] = round(failed[-1][0] - killed_at, 2) if failed else 0.0
        result["resent"] = await sender.resend()
        result["unacknowledged"] = len(sender.unacknowledged())
    shards = [ray.get_actor(shard_name(i), namespace=NAMESPACE) for i in range(2)]
    result["idle"] = ray.get([s.wait_idle.remote(60.0) for s in shards], timeout=90)
    history.effects = effects(fake, INSTALLATIONS)
    journal = await open_journal(journal_url, shard_count=VSHARDS)
    try:
        found = await journaled(journal, INSTALLATIONS, vshards=VSHARDS)
    finally:
        await journal.close()
    try:
        result["history"] = check(history, found)
    except AssertionError as exc:
        result["history_broken"] = str(exc)[:3000]
        unfinished = [g for g in found.received if found.completed[g] < 1]
        result["unfinished"] = {
            g: {
                "stream": found.received[g][0],
                "shard": int(found.received[g][0][0].removeprefix("inst-")) % VSHARDS % 2,
                "answers": history.answers_of.get(g),
                "first_sent_s": round(sent_at[g] - killed_at, 2) if g in sent_at else None,
            }
            for g in unfinished
        }
    asked = label_requests(fake)
    result["handler_runs_repeated"] = sum(n - 1 for n in asked.values() if n > 1)
    return result


def run(
    address: str, journal_url: str, before: float, after: float, split: bool = False
) -> dict[str, Any]:
    """Run the scenario on the cluster at `address`; return what was observed.

    The shards both run on the worker node, or with `split` shard 0 on the head and
    shard 1 on the worker (the layout of the one run that lost a delivery before the
    ingest was shielded from its caller going away: docs/reliability.md).
    """
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    pem, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=APP_ID, public_key_pem=public)
    runtime = RuntimeSettings(
        bot=BOT,
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
        redeliver_every=0,
    )
    try:
        head, worker = _nodes()
        install_all(fake, INSTALLATIONS)
        targets = [head, worker] if split else [worker, worker]
        wait_ready(_create_actors(runtime, targets, head), timeout=60)
        port = free_port()
        # One proxy, on the head: both raylets share this machine's ports.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        from actors.ray.ingress import WebhookDeployment

        serve.run(WebhookDeployment.bind(runtime), name="ghbot", route_prefix="/")
        placed_before = _placement()
        result = asyncio.run(
            _scenario(f"http://127.0.0.1:{port}", fake, journal_url, worker, before, after)
        )
        placed_after = _placement()

        def where(placed: dict[str, tuple[str, int]], name: str) -> str | None:
            found = placed.get(name)
            return None if found is None else "head" if found[0] == head else "worker"

        ingress = next((k for k in placed_before if "WebhookIngress" in k), "")
        names = {"shard 0": shard_name(0), "shard 1": shard_name(1)}
        names |= {"app-auth": APP_AUTH_NAME, "ingress": ingress}
        result["before"] = {k: where(placed_before, v) for k, v in names.items()}
        ingress_after = next((k for k in placed_after if "WebhookIngress" in k), "")
        names["ingress"] = ingress_after
        result["after"] = {k: where(placed_after, v) for k, v in names.items()}
        result["shard_pids_changed"] = [
            placed_before.get(shard_name(i), ("", 0))[1]
            != placed_after.get(shard_name(i), ("", 0))[1]
            for i in range(2)
        ]
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        result["worker_alive"] = any(n["NodeID"] == worker and n["Alive"] for n in nodes)
        return result
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
    parser.add_argument("--journal-url", required=True, help="postgresql://…")
    parser.add_argument("--before", type=float, default=2.0, help="seconds streamed before")
    parser.add_argument("--after", type=float, default=3.0, help="at least, after the kill")
    parser.add_argument("--split", action="store_true", help="shard 0 on the head node")
    args = parser.parse_args()
    try:
        result = run(args.address, args.journal_url, args.before, args.after, args.split)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
