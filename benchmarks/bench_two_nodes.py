"""ghbot across two raylets with a PostgreSQL journal: throughput, latency, placement.

    python benchmarks/bench_two_nodes.py [--deliveries 4000] [--concurrency 32]

Starts a Ray cluster of its own on this machine with `ray start` (a head and a second
node, one CPU each, no dashboard, in a temporary directory of its own), deploys ghbot
as `bench_e2e.py` does (the benchmarks' bot, `bench_bot:Thanks`, one comment per
delivery) with shard 0 pinned to the head and shard 1 to the second node, the journal
in a schema of its own of the PostgreSQL at GHBOT_TEST_POSTGRES_URL (or `--journal`),
and sends signed `issues.opened` deliveries through Serve's proxy on the head with
`bench_e2e.py`'s load process (which holds the fake GitHub). Prints the row as
`bench_e2e.py` does, where each actor ran, and how many deliveries each shard took.
Stops the cluster's processes by pid (never `ray stop`) and drops its schema.

Both raylets share this machine's two cores: the figure shows that the work spreads
over nodes with one PostgreSQL journal, not what two machines would do. (Ordering and
exactly-once across two nodes are checked by tests/cluster/test_two_nodes.py; here,
every delivery's comment is counted.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_e2e import Harness, bench_runtime, free_port, keys, row, speeds  # noqa: E402

from actors.ray.deploy import serve_environment  # noqa: E402

# The two-node test's own teardown: its processes stopped by pid, its schema dropped.
from tests.cluster.test_two_nodes import _drop_schema as drop_schema  # noqa: E402
from tests.cluster.test_two_nodes import _stop as stop_cluster  # noqa: E402

RAY = Path(sys.executable).with_name("ray")


def start_cluster(temp_dir: Path) -> tuple[str, dict[str, str]]:
    """Start a head and a second raylet; return the GCS address and their environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    # A token of this cluster's own for every process (see tests/cluster/test_two_nodes.py).
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env |= serve_environment()  # as `ghbot serve-env` prints them for this machine
    port = free_port()
    common = ["--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    head = ["--head", f"--port={port}", "--include-dashboard=false"]
    for args in (
        [*head, f"--ray-client-server-port={free_port()}"],
        [f"--address=127.0.0.1:{port}"],
    ):
        args = [*args, *common, f"--dashboard-agent-listen-port={free_port()}"]
        started = subprocess.run(
            [str(RAY), "start", *args], env=env, capture_output=True, text=True, timeout=90
        )
        if started.returncode != 0:
            raise RuntimeError(f"ray start {args}:\n{started.stderr[-3000:]}")
    return f"127.0.0.1:{port}", env


def run(args: argparse.Namespace, address: str, env: dict[str, str], journal: str) -> None:
    from dataclasses import replace

    import ray
    from ray import serve
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.ray.admin import stats
    from actors.ray.deploy import application
    from actors.ray.lifecycle import RemoteAppAuth, RemoteShard, kill_actors, wait_ready
    from actors.ray.names import APP_AUTH_NAME, shard_name

    folder = Path(tempfile.mkdtemp(prefix="ghbot-bench2n-"))
    private, public = keys(folder)
    harness = Harness(public, args.installations)
    ray.init(address=address, log_to_driver=False)
    runtime = bench_runtime(
        private, harness.fake, folder / "unused", shards=2, vshards=4, pace_writes=None
    )
    runtime = replace(
        runtime, settings=replace(runtime.settings, journal_url=journal), namespace="bench2n"
    )
    try:
        head = ray.get_runtime_context().get_node_id()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        worker = next(n for n in nodes if n != head)
        common: dict[str, Any] = {
            "namespace": runtime.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
        }
        RemoteAppAuth.options(name=APP_AUTH_NAME, max_concurrency=1000, **common).remote(
            runtime.for_app_auth()
        )
        shards = [
            RemoteShard.options(
                name=shard_name(i),
                max_concurrency=10_000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                **common,
            ).remote(i, runtime.for_shards())
            for i, node in enumerate([head, worker])
        ]
        wait_ready(shards, timeout=60)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(runtime), name="ghbot", route_prefix="/")
        result = harness.load(
            f"http://127.0.0.1:{port}", args.deliveries, args.concurrency, args.warmup
        )
        placed = {
            a["Name"] or a["ActorClassName"]: "head" if a["Address"]["NodeID"] == head else "node 2"
            for a in ray._private.state.actors(actor_state_name="ALIVE").values()
        }
        taken = {f"shard {s['index']}": s["received"] for s in stats(runtime.namespace)}
        print(
            f"# {args.deliveries} deliveries, {args.warmup} warm-up, {args.concurrency} in flight"
        )
        print("# placement:", {k: v for k, v in placed.items() if "ghbot" in k or "Webhook" in k})
        print("# deliveries taken (warm-up included):", taken)
        print(row("ghbot-2n", result, speeds([result])[0]))
        print("# cpu ms: the machine's CPU per delivery outside the load process")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        kill_actors(runtime.namespace, runtime.shards)
        ray.shutdown()
        harness.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument("--journal", default=os.environ.get("GHBOT_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    if not args.journal.startswith("postgres"):
        # Skipped, as bench_e2e skips Probot without Node: `make bench` goes on.
        print("# skipped: needs a PostgreSQL journal (--journal URL or GHBOT_TEST_POSTGRES_URL)")
        return
    schema = f"ghbot_bench2n_{uuid.uuid4().hex[:8]}"
    journal = f"{args.journal}{'&' if '?' in args.journal else '?'}schema={schema}"
    temp_dir = Path(tempfile.mkdtemp(prefix="ghbot2n-", dir="/tmp"))
    try:
        address, env = start_cluster(temp_dir)
        # This driver joins with the cluster's token (read when Ray is imported).
        os.environ.update({k: v for k, v in env.items() if k.startswith("RAY_")})
        run(args, address, env, journal)
    finally:
        left = stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        drop_schema(args.journal, schema)
        if left:
            print(f"# processes of the cluster survived: {left}", file=sys.stderr)


if __name__ == "__main__":
    main()
