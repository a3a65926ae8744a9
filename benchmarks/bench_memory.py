"""Memory of idle activated installations: RSS of the shard actors for 10,000 of them.

Starts a local Ray (no dashboard, no Serve), the shard and app-auth actors with the
SQLite journal, and sends each of `--installations` installations one delivery
(a `push`, which the bot has no handler for, so it is journaled as received and
completed) straight to its shard in batches. Every installation is then activated:
its host, bot instance, GitHub client, budget, breaker and progress are in memory.
Prints the shards' RSS before and after, and the cost per installation.

    python benchmarks/bench_memory.py [--installations 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from actors.ray.lifecycle import get_or_create_actors, kill_actors, wait_ready
from actors.runtime_events import DeliveryReceived
from actors.settings import RuntimeSettings
from actors.wire import Inbound, encode_batch, vshard_of
from ghbot.config import Settings
from ghbot.testing import app_key_pair
from ghbot.testing.payloads import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
PUSH = json.loads((EXAMPLES / "push.json").read_text())


def delivery(installation: int, vshards: int) -> Inbound:
    body = json.dumps({**PUSH, "installation": {"id": installation}}).encode()
    return Inbound(
        installation_id=installation,
        vshard=vshard_of(installation, vshards),
        received=DeliveryReceived(
            delivery_id=str(uuid.uuid4()), event="push", body=body, received_at=time.time()
        ),
        completed=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installations", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    import ray

    pem, _ = app_key_pair()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = RuntimeSettings(
            bot="benchmarks.bench_bot:Thanks",
            settings=Settings(
                app_id=1,
                private_key=pem,
                webhook_secrets=("s",),
                api_url="http://127.0.0.1:9",
                journal_url=f"sqlite://{tmp}/journal",
                log_level="WARNING",
            ),
            shards=args.shards,
            vshards=args.shards,
            namespace="ghbot-memory",
        )
        ray.init(
            address="local",  # a new local Ray, never one found running
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
        try:
            shards = get_or_create_actors(runtime)
            wait_ready(shards)
            # Warm the code paths (imports, first activation) before the baseline.
            for i, shard in enumerate(shards):
                ray.get(shard.ingest.remote(encode_batch([delivery(10**9 + i, args.shards)])))
            before = ray.get([s.rss.remote() for s in shards])
            by_shard: dict[int, list[Inbound]] = {}
            for n in range(1, args.installations + 1):
                item = delivery(n, args.shards)
                by_shard.setdefault(item.vshard % args.shards, []).append(item)
            started = time.monotonic()
            for index, items in by_shard.items():
                for i in range(0, len(items), 256):
                    ray.get(shards[index].ingest.remote(encode_batch(items[i : i + 256])))
            elapsed = time.monotonic() - started
            stats = ray.get([s.stats.remote() for s in shards])
            after = ray.get([s.rss.remote() for s in shards])
        finally:
            kill_actors(runtime.namespace, runtime.shards)
            ray.shutdown()
    active = sum(s["active"] for s in stats)
    grown = sum(after) - sum(before)
    print(f"# {args.installations} installations over {args.shards} shards, in {elapsed:.1f} s")
    print(f"shard RSS before  {sum(before) / 2**20:8.1f} MiB  {[round(b / 2**20) for b in before]}")
    print(f"shard RSS after   {sum(after) / 2**20:8.1f} MiB  {[round(a / 2**20) for a in after]}")
    print(f"active installations {active}")
    print(f"per installation  {grown / max(active, 1) / 1024:8.1f} KiB  (goal <= 25 KB)")


if __name__ == "__main__":
    main()
