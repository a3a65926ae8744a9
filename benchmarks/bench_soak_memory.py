"""Memory over a steady run: RSS of every actor, minute by minute (issue 9).

Deploys ghbot as `bench_e2e.py` does (a new local Ray, Serve's own proxy, the SQLite
journal, `benchmarks.bench_bot:Thanks`, which comments on every new issue) and sends
`--rate` signed `issues.opened` webhooks a second for `--minutes`, spread uniformly
over `--installations` installations. A `--dead-share` of them name an issue the fake
GitHub does not have: their comment gets a 404 on every attempt and they end
dead-lettered. Before the clock starts, every installation gets one delivery, so
each is active and has its token.

The fake GitHub and the load generator run in another process at nice 19 (Ray's
workers run at nice 15). Every minute the driver records the RSS of every shard and
of the app-auth actor (their `rss()`, after a garbage collection) and of the ingress
replica, Serve's proxy and controller (from /proc), and prints a table with the
first and last minute and the difference.

    python benchmarks/bench_soak_memory.py --minutes 10 --rate 80 [--installations 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_e2e import (  # noqa: E402 - a script's sibling
    SECRET,
    bench_runtime,
    free_port,
    keys,
    start_ray_serve,
    stop_ray_serve,
)
from e2e_harness import Harness, _host_port, _read_response  # noqa: E402

#: Processes read from /proc, by what Ray names them.
PROCESSES = {
    "ingress replica": "ServeReplica:ghbot:",
    "serve proxy": "ProxyActor",
    "serve controller": "ServeController",
}
MISSING_ISSUE = 404404


# --- the load side (its own process) -----------------------------------------------


class SoakLoad(Harness):
    """The e2e harness's fake GitHub, with a paced load of random installations."""

    def __init__(self, public_key: bytes, installations: int, dead_share: float) -> None:
        super().__init__(public_key, installations, SECRET)
        self.dead_share = dead_share
        self.rng = random.Random(9)

    def delivery(self, installation: int, *, dead: bool) -> tuple[bytes, str]:
        """Return the signed request of one `issues.opened` for `installation`."""
        body, guid = self.body(installation - 1)
        if dead:
            data = json.loads(body)
            data["issue"]["number"] = MISSING_ISSUE
            body = json.dumps(data).encode()
        return body, guid

    async def paced(self, target: str, rate: float, seconds: float, warmup: bool) -> Any:
        """Send at `rate` a second for `seconds` (or one to each installation, faster)."""
        host, port = _host_port(target)
        queue: asyncio.Queue[tuple[bytes, str] | None] = asyncio.Queue()
        statuses: dict[int, int] = {}
        acks: list[float] = []

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                while (item := await queue.get()) is not None:
                    request, _guid = self._request(host, port, *item)
                    started = time.monotonic()
                    writer.write(request)
                    status, close = await _read_response(reader)
                    acks.append(time.monotonic() - started)
                    statuses[status] = statuses.get(status, 0) + 1
                    if close:
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
            finally:
                writer.close()

        workers = [asyncio.ensure_future(worker()) for _ in range(32)]
        began, sent, most_queued, dead = time.monotonic(), 0, 0, 0
        total = self.installations if warmup else int(rate * seconds)
        while sent < total:
            due = min(int((time.monotonic() - began) * rate) + 1, total)
            while sent < due:
                if warmup:
                    installation = sent + 1
                    is_dead = False
                else:
                    installation = self.rng.randrange(self.installations) + 1
                    is_dead = self.rng.random() < self.dead_share
                dead += is_dead
                queue.put_nowait(self.delivery(installation, dead=is_dead))
                sent += 1
            most_queued = max(most_queued, queue.qsize())
            await asyncio.sleep(0.01)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        acks.sort()
        return {
            "sent": sent,
            "dead_sent": dead,
            "seconds": time.monotonic() - began,
            "statuses": statuses,
            "most_queued": most_queued,
            "ack_ms_p50": acks[len(acks) // 2] * 1000 if acks else None,
            "ack_ms_p99": acks[int(len(acks) * 0.99)] * 1000 if acks else None,
            "comments": len(self.commented),
        }


async def load_main(args: argparse.Namespace) -> None:
    load = SoakLoad(Path(args.public_key).read_bytes(), args.installations, args.dead_share)
    load.expected = 10**9  # never "done": the soak counts comments, it does not wait
    print(json.dumps({"fake": await load.start()}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        result = await load.paced(
            command["target"], command["rate"], command["seconds"], command["warmup"]
        )
        print(json.dumps(result), flush=True)
    await load.fake.stop()


# --- the driver: Ray, Serve, ghbot, and the samples -----------------------------------


class LoadProcess:
    """The nice-19 process holding the fake GitHub and the load generator."""

    def __init__(self, public: Path, args: argparse.Namespace) -> None:
        # fmt: off
        command = [
            "nice", "-n", "19", sys.executable, __file__, "--load",
            "--public-key", str(public), "--installations", str(args.installations),
            "--dead-share", str(args.dead_share),
        ]
        # fmt: on
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.fake: str = self.read()["fake"]

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load process exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, target: str, rate: float, seconds: float, *, warmup: bool) -> None:
        assert self.process.stdin is not None
        command = {"target": target, "rate": rate, "seconds": seconds, "warmup": warmup}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def proc_rss(pid: int) -> int:
    """Return a process's resident memory in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def find_pids() -> dict[str, int]:
    """Return the pid of each of `PROCESSES`, found by Ray's process titles."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                title = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for name, marker in PROCESSES.items():
            if title.startswith("ray::") and marker in title:
                found[name] = int(entry)
    return found


def sample(shards: list[Any], app_auth: Any, pids: dict[str, int]) -> dict[str, Any]:
    """RSS (MiB) of every actor, and the shards' counters."""
    import ray

    rss = ray.get([s.rss.remote() for s in shards] + [app_auth.rss.remote()], timeout=60)
    stats = ray.get([s.stats.remote() for s in shards], timeout=60)
    row: dict[str, Any] = {f"shard {i}": rss[i] / 2**20 for i in range(len(shards))}
    row["app-auth"] = rss[-1] / 2**20
    row.update({name: proc_rss(pid) / 2**20 for name, pid in pids.items()})
    row["active"] = sum(s["active"] for s in stats)
    row["received"] = sum(s["received"] for s in stats)
    row["busy"] = sum(s["busy"] for s in stats)
    return row


def soak(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    import ray
    from ray import serve

    from actors.ray.deploy import application
    from actors.ray.lifecycle import get_or_create_actors, wait_ready
    from actors.ray.names import APP_AUTH_NAME

    private, public = keys(tmp)
    load = LoadProcess(public, args)
    port = free_port()
    start_ray_serve(port)
    runtime = bench_runtime(
        private,
        load.fake,
        tmp / "journal",
        log_level="ERROR",
        shards=args.shards,
        vshards=args.shards,
        namespace="ghbot-soak",
    )
    target = f"http://127.0.0.1:{port}"
    try:
        serve.run(application(runtime), name="ghbot", route_prefix="/")
        shards = get_or_create_actors(runtime)
        wait_ready(shards)
        app_auth = ray.get_actor(APP_AUTH_NAME, namespace=runtime.namespace)
        load.send(target, 200.0, 0, warmup=True)
        warm = load.read()
        print(f"# warm-up: {warm}", flush=True)
        ray.get([s.wait_idle.remote(120.0) for s in shards])
        pids = find_pids()
        samples = [{"minute": 0, **sample(shards, app_auth, pids)}]
        print(json.dumps(samples[-1]), flush=True)
        load.send(target, args.rate, args.minutes * 60.0, warmup=False)
        began = time.monotonic()
        for minute in range(1, args.minutes + 1):
            time.sleep(max(began + minute * 60.0 - time.monotonic(), 0.0))
            samples.append({"minute": minute, **sample(shards, app_auth, pids)})
            print(json.dumps(samples[-1]), flush=True)
        result = load.read()
        ray.get([s.wait_idle.remote(120.0) for s in shards])
        dead = sum(len(d) for d in ray.get([s.dead_letters.remote() for s in shards]))
        result["dead_letters"] = dead
        return samples, result
    finally:
        load.close()
        stop_ray_serve(runtime)


def report(args: argparse.Namespace, samples: list[dict[str, Any]], result: dict[str, Any]) -> None:
    first, last = samples[1], samples[-1]
    names = [k for k in first if k not in ("minute", "active", "received", "busy")]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"# {args.minutes} min at {args.rate}/s over {args.installations} installations,"
        f" {args.shards} shards, dead share {args.dead_share}"
    )
    print(f"# load: {result}")
    print(
        f"{'actor':<18}{'start':>9}{'minute 1':>10}{'last':>9}{'last - 1':>10}{'min':>9}{'max':>9}"
    )
    for name in names:
        values = [s[name] for s in samples[1:]]
        print(
            f"{name:<18}{samples[0][name]:>9.1f}{first[name]:>10.1f}{last[name]:>9.1f}"
            f"{last[name] - first[name]:>+10.1f}{min(values):>9.1f}{max(values):>9.1f}"
        )
    print(f"active installations: minute 1 {first['active']}, last {last['active']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--installations", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--dead-share", type=float, default=0.005)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--public-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        asyncio.run(load_main(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        samples, result = soak(args, Path(tmp))
    report(args, samples, result)


if __name__ == "__main__":
    main()
