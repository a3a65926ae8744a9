"""The demo: ghbot on a local Ray, against a fake GitHub, with real signed webhooks.

    make demo        (or: python -m examples.demo [--deliveries 600])

It generates an app key, starts `FakeGitHub` (the GitHub API, in this process), sets
the variables a real deployment reads (GITHUB_APP_ID, GITHUB_PRIVATE_KEY,
GITHUB_WEBHOOK_SECRET, GITHUB_API_URL, GHBOT_JOURNAL_URL), starts a local Ray without
its dashboard and deploys `ghbot.deploy bot=examples.greeter:Greeter` on Serve's HAProxy
ingress at 127.0.0.1:8000 — what `serve run ghbot.deploy bot=examples.greeter:Greeter`
does. Then it sends GitHub's own example payloads, signed, to `POST /webhooks`
(with some redeliveries and one forged signature). Then it has the fake GitHub log a
few more deliveries as failed, as during an outage, and sweeps: ghbot asks GitHub to
redeliver what it never journaled. It waits for the bot, prints what happened, and
stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from actors.ray.deploy import serve_environment
from ghbot.testing import FakeGitHub, FakeGitHubThread, app_key_pair
from ghbot.testing.payloads import EXAMPLES
from ghbot.webhooks import sign

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = EXAMPLES
DATA = ROOT / "data" / "demo"
SECRET = "demo-webhook-secret"  # noqa: S105 - the demo's own, not a real secret
APP_ID = 4242
PORT = 8000
# What the demo sends, by GitHub's example payloads: the bot answers the first two.
KINDS = ("issues.opened", "pull_request.opened", "issue_comment.created", "push", "issues.labeled")
LOST = 12  # issues.opened deliveries GitHub fails to deliver during the simulated outage


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def deliveries(count: int, installations: int) -> list[tuple[str, str, bytes]]:
    """Return (event, GUID, body) for `count` deliveries built from real payloads."""
    rng = random.Random(7)
    templates = {kind: json.loads((FIXTURES / f"{kind}.json").read_text()) for kind in KINDS}
    made = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        installation = rng.randrange(installations) + 1
        data = json.loads(json.dumps(templates[kind]))
        data["installation"] = {"id": installation}
        repo = data["repository"]
        repo["full_name"], repo["name"] = f"demo-org-{installation}/app", "app"
        repo["owner"]["login"] = f"demo-org-{installation}"
        for key in ("issue", "pull_request"):
            if key in data:
                data[key]["number"] = 1 if key == "issue" else 2
        made.append((kind.split(".")[0], str(uuid.uuid4()), json.dumps(data).encode()))
    return made


def bar(done: int, total: int, started: float, width: int = 32) -> None:
    filled = width * done // total
    rate = done / max(time.monotonic() - started, 1e-6)
    sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:6.0f}/s")
    sys.stdout.flush()


async def send_all(items: list[tuple[str, str, bytes]], redeliver: int) -> dict[str, int]:
    """Send every delivery (and `redeliver` of them twice), 16 at a time; count answers."""
    counts: dict[str, int] = {}
    queue = items + items[:redeliver]
    done, started = 0, time.monotonic()

    async def post(
        session: aiohttp.ClientSession, event: str, guid: str, body: bytes, secret: str
    ) -> None:
        nonlocal done
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/demo",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": sign(body, secret),
        }
        async with session.post(
            f"http://127.0.0.1:{PORT}/webhooks", data=body, headers=headers
        ) as r:
            counts[str(r.status)] = counts.get(str(r.status), 0) + 1
        done += 1
        if done % max(len(queue) // 40, 1) == 0:
            bar(done, len(queue) + 1, started)

    async with aiohttp.ClientSession() as session:
        slots = asyncio.Semaphore(16)

        async def limited(event: str, guid: str, body: bytes) -> None:
            async with slots:
                await post(session, event, guid, body, SECRET)

        await asyncio.gather(*(limited(*item) for item in queue))
        event, _, body = items[0]
        await post(session, event, "forged-" + str(uuid.uuid4()), body, "not-the-secret")
    bar(done, len(queue) + 1, started)
    print()
    return counts


def outage(fake: FakeGitHubThread, installations: int) -> int:
    """Have the fake GitHub log `LOST` deliveries as failed: the bot was unreachable.

    GitHub keeps such deliveries and redelivers one when asked, to the app's webhook
    URL, signed; it never retries by itself.
    """
    made = deliveries(LOST * len(KINDS), installations)
    lost = [item for n, item in enumerate(made) if n % len(KINDS) == 0]  # issues.opened
    log = fake.fake.deliveries

    async def record() -> None:
        log.webhook_url, log.webhook_secret = f"http://127.0.0.1:{PORT}/webhooks", SECRET
        for event, guid, body in lost:
            data = json.loads(body)
            installation = data["installation"]["id"]
            log.add(event, data, guid=guid, installation_id=installation, status_code=502)

    fake.run(record())
    return len(lost)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=600)
    parser.add_argument("--installations", type=int, default=25)
    args = parser.parse_args()
    if not port_free(PORT):
        print(f"Port {PORT} is taken; stop what listens there (Serve's ingress uses it).")
        return 2
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    private, public = app_key_pair()
    (DATA / "app.pem").write_bytes(private)

    print("Starting the fake GitHub ...")
    fake = FakeGitHub.start_in_thread(app_id=APP_ID, public_key_pem=public)

    async def arrange() -> None:
        for n in range(1, args.installations + 1):
            fake.fake.add_installation(n, f"demo-org-{n}", ["app"])
            fake.fake.add_issue(f"demo-org-{n}/app", "An issue")
            fake.fake.add_pull_request(f"demo-org-{n}/app", "A pull request")

    fake.run(arrange())
    os.environ.update(
        GITHUB_APP_ID=str(APP_ID),
        GITHUB_PRIVATE_KEY=str(DATA / "app.pem"),
        GITHUB_WEBHOOK_SECRET=SECRET,
        GITHUB_API_URL=fake.url,
        GHBOT_JOURNAL_URL=f"sqlite://{DATA / 'journal'}",
        GHBOT_PACE_WRITES="0",
        GHBOT_REDELIVER_EVERY="0",  # the demo sweeps once, below, when it is due
        LOG_LEVEL="WARNING",
        # What `ghbot serve-env` prints: Serve's settings for this machine's cores.
        **serve_environment(),
        # Throughput-optimized Serve keeps a stopping ingress replica reachable this long
        # (30 s by default) so an external load balancer can deregister it first; the
        # demo has none in front of Serve and stops only once every answer is in, so its
        # replica stops at once (serve.shutdown() otherwise gives up on the controller
        # after 30 s: "Controller failed to shut down within 30.0s").
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0",
    )
    import ray
    from ray import serve

    import ghbot
    from actors.ray.admin import dead_letters, stats, sweep
    from actors.ray.admin import shards as admin_shards
    from actors.ray.lifecycle import kill_actors

    print("Starting a local Ray (no dashboard) and deploying the Greeter bot ...")
    ray.init(
        address="local",  # a new local Ray, never one found running
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    app = ghbot.deploy({"bot": "examples.greeter:Greeter"})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        serve.run(app, name="ghbot", route_prefix="/")
        items = deliveries(args.deliveries, args.installations)
        redeliver = len(items) // 20
        print(f"Sending {len(items)} signed deliveries, {redeliver} redeliveries, 1 forged:")
        started = time.monotonic()
        counts = asyncio.run(send_all(items, redeliver))
        lost = outage(fake, args.installations)
        print(
            f"GitHub failed to deliver {lost} more (an outage); sweeping as `ghbot redeliver` does:"
        )
        swept = sweep()
        print(
            f"  {swept['failed']} failed deliveries found, {swept['held']} already journaled, "
            f"{len(swept['redelivered'])} redelivered by GitHub on request"
        )
        print("Waiting for the handlers ...")
        shards = admin_shards()
        ray.get([s.wait_idle.remote(120.0) for s in shards])
        elapsed = time.monotonic() - started
        summary = stats()
        dead = dead_letters()
    finally:
        print("Stopping Serve and Ray ...")
        serve.shutdown()  # type: ignore[no-untyped-call]
        kill_actors()
        ray.shutdown()

    async def results() -> tuple[int, int]:
        writes = [r for r in fake.fake.requests if r.method == "POST"]
        return (
            sum(r.path.endswith("/comments") for r in writes),
            sum(r.path.endswith("/labels") for r in writes),
        )

    comments, labels = fake.run(results())
    fake.stop()
    journal_bytes = sum(f.stat().st_size for f in (DATA / "journal").glob("*") if f.is_file())
    handled = sum(s["received"] for s in summary)
    print()
    print(f"  answers         {counts}  (202 new, 200 redelivered, 401 forged)")
    duplicates = sum(s["duplicates"] for s in summary)
    print(f"  journaled       {handled} deliveries, {duplicates} duplicates")
    print(f"  swept back      {len(swept['redelivered'])} deliveries GitHub had failed to deliver")
    print(f"  comments made   {comments}  (one per issues.opened, redelivered ones included)")
    print(f"  labels added    {labels}  (one per pull_request.opened)")
    print(f"  dead letters    {len(dead)}")
    print(f"  journal         {journal_bytes / 1024:.0f} KiB in {DATA / 'journal'}")
    print(f"  time            {elapsed:.1f} s from first send to all handled")
    expected = sum(1 for n in range(len(items)) if KINDS[n % len(KINDS)] == "issues.opened")
    expected += lost
    ok = counts.get("202") == len(items) and comments == expected and not dead
    ok = ok and len(swept["redelivered"]) == lost
    print("Demo finished: " + ("everything was handled exactly once." if ok else "see above."))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
