"""Write pacing under a burst: how long a burst of deliveries takes to land whole.

Issue 9's figure: 600 `issues.opened` over 20 installations, each answered with one
comment, against a FakeGitHub that answers an installation's write arriving under 1 s
after its previous one with a secondary-limit 403 (`retry-after: 60`), through ghbot
on a local Ray with `pace_writes` 1 s. Pacing that holds GitHub's interval lands it in
about 30 s (30 writes an installation, one a second) with no secondary-limit answer;
each one drawn costs its installation a minute.

The load generator and the fake are `e2e_harness.Harness`, run here on a thread of
their own; the deployment is started as `bench_e2e.py` starts it, on Serve's own proxy.

    python benchmarks/bench_burst.py [--deliveries 600] [--installations 20] [--pace 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

# Run as a script: its own folder is on the path, and holds both.
from bench_e2e import SECRET, bench_runtime, free_port, keys, start_ray_serve, stop_ray_serve
from e2e_harness import Harness

T = TypeVar("T")


class HarnessThread:
    """The harness (fake GitHub and load generator) on its own event loop and thread."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="harness", daemon=True)
        self.thread.start()
        self.url: str = self.run(harness.start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the harness's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.harness.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def burst(args: argparse.Namespace, private: Path, load: HarnessThread) -> dict[str, Any]:
    """Deploy ghbot with `--pace` on a new local Ray, send the burst, return the results."""
    from ray import serve

    from actors.ray.deploy import application

    port = free_port()
    start_ray_serve(port)
    runtime = bench_runtime(
        private,
        load.url,
        private.parent / "journal",
        shards=args.shards,
        vshards=args.shards,
        pace_writes=args.pace or None,
        redeliver_every=0,
    )
    try:
        serve.run(application(runtime), name="ghbot", route_prefix="/")
        target = f"http://127.0.0.1:{port}"
        # `Harness.run` waits for every comment, up to 120 s.
        return load.run(load.harness.run(target, args.deliveries, args.concurrency, 0))
    finally:
        stop_ray_serve(runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=600)
    parser.add_argument("--installations", type=int, default=20)
    parser.add_argument("--pace", type=float, default=1.0, help="GHBOT_PACE_WRITES; 0: off")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="the spacing the fake enforces (s)"
    )
    parser.add_argument("--retry-after", type=int, default=60, help="the fake's penalty (s)")
    parser.add_argument("--concurrency", type=int, default=32, help="deliveries in flight")
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        private, public = keys(Path(tmp))
        harness = Harness(public.read_bytes(), args.installations, SECRET)
        harness.fake.write_interval = args.interval
        harness.fake.writes.retry_after = args.retry_after
        load = HarnessThread(harness)
        try:
            result = burst(args, private, load)
        finally:
            load.close()
    per_installation = args.deliveries / args.installations
    result["secondary_limits"] = harness.fake.secondary_limits
    result["writes_per_installation"] = per_installation
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"# {args.deliveries} issues.opened over {args.installations} installations, "
        f"pace {args.pace:g} s; the fake refuses writes under {args.interval:g} s apart "
        f"with retry-after {args.retry_after} s"
    )
    print(
        f"landed {result['handled']}/{args.deliveries} in {result['seconds']:.1f} s "
        f"(first send to last comment; {per_installation:g} writes an installation x "
        f"{args.pace:g} s = {per_installation * args.pace:.0f} s), "
        f"secondary-limit answers: {result['secondary_limits']}, "
        f"acks {result['statuses']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"# took {time.monotonic() - started:.0f} s with Ray's start and stop")
