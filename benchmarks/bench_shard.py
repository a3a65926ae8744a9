"""A shard's own CPU per delivery, above the handler's own work, without Ray.

Measures, in one process and one run:

- the handler's own work: what `benchmarks/bench_bot.py`'s handler does for each
  delivery (decode the payload, one comment through ghbot's GitHub client), called
  directly, `--concurrency` at a time: the floor;
- the shard: the same deliveries through `ShardCore`, as a shard actor gets them from
  the ingress (batches of `--batch`, `--concurrency` deliveries in flight): each
  journaled in SQLite (WAL, fsync) before it is taken, run by its installation's host
  in order per key, its outcome journaled after.

The fake GitHub runs in a child process (`ghbot fake-github`), so its CPU is not
counted. Reported: CPU per delivery (`time.process_time`: every thread of this
process, the journal's writer included) for both, and the difference, the shard's
cost above its handler's work (issue 13's target: at most 0.6 ms); and how the
shard's CPU splits between the journal's writer thread (SQLite's inserts, commits
and fsyncs) and the rest (the event loop: handler, mailboxes, ingest).

    python benchmarks/bench_shard.py [--deliveries 4000] [--batch 8] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from actors.github import InstallationClients
from actors.settings import RuntimeSettings
from actors.shard import ShardCore
from actors.wire import Inbound, encode_batch, to_inbound
from ghbot.client import GitHubApp, close_pool
from ghbot.config import Settings
from ghbot.events import parse
from ghbot.journal import open_journal
from ghbot.testing import app_key_pair
from ghbot.testing.payloads import example_payload
from ghbot.webhooks import parse_delivery, sign

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bot import Thanks

INSTALLATIONS = 50
ISSUES = 20  # per installation's repository
SECRET = "bench-secret"


def start_fake(public_key: Path) -> tuple[subprocess.Popen[str], str]:
    """Start `ghbot fake-github` with the installations; return it and its URL."""
    argv = [sys.executable, "-m", "ghbot.cli", "fake-github", "--port", "0"]
    argv += ["--public-key", str(public_key), "--rate-limit", "10000000"]
    argv += ["--max-concurrent", "0"]
    for n in range(INSTALLATIONS):
        argv += ["--installation", f"{n + 1}=bench{n}/repo"]
    fake = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    line = fake.stdout.readline()
    if "listening on" not in line:
        fake.kill()
        raise SystemExit(f"the fake GitHub did not start: {line!r}")
    return fake, line.rsplit(" ", 1)[1].strip()


def bodies(count: int) -> list[tuple[int, bytes]]:
    """Return `count` `issues.opened` bodies spread over the installations and issues."""
    found = []
    for i in range(count):
        n = i % INSTALLATIONS
        data = example_payload(
            "issues.opened",
            installation__id=n + 1,
            repository__full_name=f"bench{n}/repo",
            issue__number=1 + (i // INSTALLATIONS) % ISSUES,
        )
        found.append((n + 1, json.dumps(data).encode()))
    return found


async def floor(app: GitHubApp, items: list[tuple[int, bytes]], concurrency: int) -> float:
    """Run the handler's work directly; return CPU seconds per delivery."""
    clients = {n: app.installation(n) for n, _ in items}
    bot = Thanks()
    gate = asyncio.Semaphore(concurrency)

    async def one(installation: int, body: bytes, index: int) -> None:
        async with gate:
            bot.github = clients[installation]
            event = parse("issues", body, delivery_id=f"floor-{index}")
            await bot.thank(event)

    started = time.process_time()
    await asyncio.gather(*(one(n, b, i) for i, (n, b) in enumerate(items)))
    return (time.process_time() - started) / len(items)


def writer_cpu() -> float:
    """Return the CPU seconds the journal's writer threads have used so far.

    From the kernel's per-thread run time (`/proc/self/task/<tid>/schedstat`), which,
    unlike the tick-sampled figures of `stat`, is exact for a thread that runs in
    short bursts.
    """
    used = 0
    for thread in threading.enumerate():
        if thread.name.startswith("ghbot-journal-shard") and thread.native_id is not None:
            with open(f"/proc/self/task/{thread.native_id}/schedstat") as schedstat:
                used += int(schedstat.read().split()[0])
    return used / 1e9


async def shard(
    settings: Settings, items: list[Inbound], batch: int, concurrency: int
) -> tuple[float, float, float, dict[str, int]]:
    """Run the deliveries through a `ShardCore`; return CPU s, the journal writer's CPU s
    and wall s per delivery."""
    runtime = RuntimeSettings(bot="bench_bot:Thanks", settings=settings, pace_writes=None)
    app = GitHubApp.from_settings(settings, pace_writes=None)
    clients = InstallationClients(runtime, app.create_installation_token)
    journal = await open_journal(settings.journal_url, shard_count=1)
    core = ShardCore([0], 1, journal, Thanks, github_for=clients.for_installation, schedule=False)
    await core.start()
    batches = [encode_batch(items[i : i + batch]) for i in range(0, len(items), batch)]
    window = asyncio.Semaphore(max(concurrency // batch, 1))

    async def send(part: bytes) -> None:
        async with window:
            await core.ingest(part)

    cpu, writer, wall = time.process_time(), writer_cpu(), time.perf_counter()
    await asyncio.gather(*(send(b) for b in batches))
    await core.wait_idle()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    writer = writer_cpu() - writer
    stats = {k: core.stats()[k] for k in ("received", "journal_calls", "journal_appends")}
    await core.close()
    await journal.close()
    if clients.options.pool is not None:
        await clients.options.pool.close()
    return cpu / len(items), writer / len(items), wall / len(items), stats


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=8, help="deliveries per ingest call")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each")
    args = parser.parse_args()

    private, public = app_key_pair()
    workdir = Path(tempfile.mkdtemp(prefix="ghbot-bench-shard-"))
    (workdir / "app.pub.pem").write_bytes(public)
    fake, url = start_fake(workdir / "app.pub.pem")
    try:
        items = bodies(args.deliveries)
        print(f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"# {args.deliveries} issues.opened deliveries, {INSTALLATIONS} installations,")
        print(f"# batches of {args.batch}, {args.concurrency} in flight; fake GitHub at {url}")
        print(
            "run  handler-only ms  shard ms  above ms  writer ms  loop ms  shard wall ms"
            "  appends/call"
        )
        for run in range(args.repeat):
            app = GitHubApp.from_settings(  # no write pacing: the shard runs without it
                Settings(app_id=1, private_key=private, webhook_secrets=(SECRET,), api_url=url),
                pace_writes=None,
            )
            for n in range(INSTALLATIONS):  # tokens minted, issues made, before timing
                await app.tokens.get(n + 1)
                if run == 0:
                    client = app.installation(n + 1)
                    for _ in range(ISSUES):
                        path = f"/repos/bench{n}/repo/issues"
                        await client.request("POST", path, json={"title": "an issue"})
            handler = await floor(app, items, args.concurrency)
            settings = Settings(
                app_id=1,
                private_key=private,
                webhook_secrets=(SECRET,),
                api_url=url,
                journal_url=f"sqlite://{workdir}/journal-{run}",
            )
            inbound = []
            for index, (_, body) in enumerate(items):
                headers = {
                    "content-type": "application/json",
                    "x-github-event": "issues",
                    "x-github-delivery": f"run{run}-{index}",
                    "x-hub-signature-256": sign(body, SECRET),
                }
                delivery = parse_delivery(headers, body, (SECRET,))
                inbound.append(to_inbound(Thanks, delivery, 1, received_at=time.time()))
            cpu, writer, wall, stats = await shard(settings, inbound, args.batch, args.concurrency)
            per_call = stats["journal_appends"] / max(stats["journal_calls"], 1)
            print(
                f"{run + 1:>3}  {handler * 1e3:>15.3f}  {cpu * 1e3:>8.3f}  "
                f"{(cpu - handler) * 1e3:>8.3f}  {writer * 1e3:>9.3f}  "
                f"{(cpu - writer) * 1e3:>7.3f}  {wall * 1e3:>13.3f}  {per_call:>12.1f}"
            )
            assert stats["received"] == len(items), stats
            await close_pool()
    finally:
        fake.terminate()
        fake.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
