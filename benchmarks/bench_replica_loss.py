"""What GitHub would see when an ingress replica's process dies, or when a redeploy
replaces the ingress replicas, by Serve's controller pace, the ingress's health-check
period, its rolling update's surge and the number of ingress replicas.

    python benchmarks/bench_replica_loss.py [--repeat 3] [--intervals 0.1]
        [--health-periods 10,2] [--replicas 1]
    python benchmarks/bench_replica_loss.py --event redeploy|upgrade [--surges 0,25]
        [--installations 1] [--pace-writes S]

Serve notices a replica's dead process at its next health check of it (every
`health_check_period_s`, Serve's default 10 s; ghbot's ingress sets
`actors.ray.ingress.HEALTH_CHECK_PERIOD_S`), and its controller acts on it at its
next pass (every 0.1 s; `ghbot serve-env` once slowed it to 0.5 s). This measures
what each costs. For each pair of interval and period in turn (interleaved,
`--repeat` times), it starts a local Ray and Serve with `ghbot serve-env`'s settings
and that interval (HAProxy on port 8000, as README runs it), deploys ghbot with
`--replicas` ingress replicas checked every period and the benchmarks' bot
(`bench_bot:Thanks`, against `bench_e2e.py`'s load process, which holds the fake
GitHub), and sends signed `issues.opened` deliveries as GitHub does: 40 a second,
none waiting for another's answer, each given GitHub's 10 s to be answered. One
second in, it kills one ingress replica's process with SIGKILL; it sends until
`--after` seconds after the kill and waits for every answer.

With `--event redeploy`, one second in it deploys again instead, with one more
webhook secret (the deliveries stay signed with the first): a change of the
ingress's alone, so Serve replaces every ingress replica and ghbot no shard. Serve's
rolling update stops old replicas before it starts new ones unless the deployment
allows a surge (`max_surge_percent`, compared by `--surges`; ghbot's ingress sets
`actors.ray.ingress.MAX_SURGE_PERCENT`). With `--event upgrade` the redeploy changes
a setting the shards run with (`GHBOT_MAX_RETRIES`) instead: a new version, so the
new ingress replica also drains and replaces the shard and the app-auth actor, as a
new release of the bot's code does.

The deliveries go to `--installations` installations in turn (one by default, every
delivery to the same issue), whose writes are paced `--pace-writes` seconds apart
(`GHBOT_PACE_WRITES`; not paced by default): a shard being replaced drains first (it
lets the handlers that are writing end, and leaves what waits its turn to write to
its successor), so a backlog of paced writes would lengthen the drain if it waited
for it.

Printed per run: how many deliveries failed (any answer but 202, or none within
10 s: GitHub records a failure and does not retry by itself; `ghbot redeliver` asks
it to), by answer; when, after the kill (or the redeploy's start), the first and the
last failed one was sent; and the slowest 202 of those sent after it.

Stops what it starts: Serve (`serve.shutdown()`), its actors and its Ray.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_e2e import (  # noqa: E402
    SECRET,
    Harness,
    bench_runtime,
    keys,
    own_processes,
    start_ray_serve,
    stop_ray_serve,
)

from actors.ray.deploy import serve_environment  # noqa: E402
from actors.ray.ingress import HEALTH_CHECK_PERIOD_S, MAX_SURGE_PERCENT  # noqa: E402
from examples.demo import port_free  # noqa: E402
from ghbot.testing.payloads import example_payload  # noqa: E402
from ghbot.webhooks import sign  # noqa: E402

PORT = 8000
GITHUB_TIMEOUT = 10.0  # seconds GitHub waits for an answer
RATE = 40  # deliveries a second
INGRESS = "ray::ServeReplica:ghbot:WebhookIngress"


def body(installation: int) -> bytes:
    """An `issues.opened` of `installation`'s repository (`e2e_harness`'s `orgN/repo`)."""
    return json.dumps(
        example_payload(
            "issues.opened",
            installation__id=installation,
            repository__full_name=f"org{installation}/repo",
            issue__number=1,
        )
    ).encode()


#: The deliveries' bodies, one per installation, sent in turn (`--installations`).
BODIES: list[bytes] = [body(1)]


def deliver(n: int = 0) -> tuple[str, float]:
    """Send the `n`th signed delivery (of installation `n % len(BODIES) + 1`); return its
    status (or what failed) and the seconds taken."""
    data = BODIES[n % len(BODIES)]
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(data, SECRET),
    }
    began = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=GITHUB_TIMEOUT)
    try:
        connection.request("POST", "/webhooks", body=data, headers=headers)
        status = str(connection.getresponse().status)
    except TimeoutError:
        status = "no answer in 10 s"
    except (OSError, http.client.HTTPException) as exc:
        status = type(exc).__name__
    finally:
        connection.close()
    return status, time.monotonic() - began


def ingress_pids(harness: Harness) -> list[int]:
    """Return the pids of this run's processes titled as ghbot's ingress replica."""
    mine = own_processes(os.getpid(), but=harness.process.pid)
    return [pid for pid, name in mine.items() if name.startswith(INGRESS)]


@dataclass
class Outage:
    failed: Counter[str]
    first_failed: float | None  # seconds after the kill its delivery was sent
    last_failed: float | None
    slowest_202: float  # seconds, of the deliveries sent after the kill
    sent: int


def stream(kill: threading.Event, after: float) -> Outage:
    """Send at `RATE` a second from now until `after` s past the kill; kill 1 s in."""
    results: list[tuple[float, Future[tuple[str, float]]]] = []
    with ThreadPoolExecutor(max_workers=int(RATE * GITHUB_TIMEOUT) + 50) as pool:
        began = time.monotonic()
        killed_at: float | None = None
        n = 0
        while killed_at is None or time.monotonic() < killed_at + after:
            now = time.monotonic()
            if killed_at is None and now >= began + 1.0:
                kill.set()  # the caller's thread kills; this one goes on sending
                killed_at = now
            results.append((now, pool.submit(deliver, n)))
            n += 1
            time.sleep(max(0.0, began + n / RATE - time.monotonic()))
    assert killed_at is not None
    failed: Counter[str] = Counter()
    failed_at: list[float] = []
    slowest = 0.0
    for sent_at, future in results:
        status, took = future.result()
        if status != "202":
            failed[status] += 1
            failed_at.append(sent_at - killed_at)
        elif sent_at >= killed_at:
            slowest = max(slowest, took)
    return Outage(
        failed,
        min(failed_at, default=None),
        max(failed_at, default=None),
        slowest,
        len(results),
    )


def one_run(
    harness: Harness,
    private: Path,
    data: Path,
    interval: str,
    period: float,
    surge: int,
    args: argparse.Namespace,
) -> Outage:
    """Start Ray and Serve at `interval`, deploy with health checks every `period`
    seconds and rolling updates with a `surge`, kill an ingress replica or redeploy
    (`args.event`); return the outage."""
    replicas = args.replicas
    os.environ.update(serve_environment())
    os.environ["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] = interval
    if args.event == "kill":
        # No load balancer in front to deregister a stopping replica first (see the
        # demo): the teardown's replica stops at once. A redeploy keeps Serve's 30 s,
        # as `ghbot serve-env` does: an old replica stays reachable while it stops.
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "0"
    from ray import serve

    from actors.ray.deploy import application

    start_ray_serve(PORT)
    runtime = bench_runtime(
        private, harness.fake, data, pace_writes=args.pace_writes, ingress_replicas=replicas
    ).versioned()  # as `serve run ghbot.deploy` does: what decides which actors go
    options = {"health_check_period_s": period, "max_surge_percent": surge}
    try:
        serve.run(application(runtime, **options), name="ghbot", route_prefix="/")
        deadline = time.monotonic() + 60
        while deliver()[0] != "202" or len(ingress_pids(harness)) != replicas:
            if time.monotonic() > deadline:
                raise SystemExit(f"not {replicas} ingress replicas answering 202 within 60 s")
            time.sleep(0.2)
        time.sleep(2.0)  # settled: Serve's controller and HAProxy have seen them healthy
        victim = ingress_pids(harness)[0]
        kill = threading.Event()
        outcome: list[Outage] = []
        sender = threading.Thread(target=lambda: outcome.append(stream(kill, args.after)))
        sender.start()
        kill.wait()
        settings = runtime.settings
        try:
            if args.event == "kill":
                os.kill(victim, signal.SIGKILL)
            elif args.event == "redeploy":  # one more secret: the ingress's alone
                secrets = (*settings.webhook_secrets, "the next secret")
                new = replace(runtime, settings=replace(settings, webhook_secrets=secrets))
            else:  # a setting of the shards': a new version, every actor replaced
                retries = replace(settings, max_retries=settings.max_retries + 1)
                new = replace(runtime, settings=retries)
            if args.event != "kill":
                app = application(new.versioned(), **options)
                serve.run(app, name="ghbot", route_prefix="/")
        finally:
            sender.join()
        return outcome[0]
    finally:
        stop_ray_serve(runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each interval and period")
    parser.add_argument("--intervals", default="0.1", help="controller intervals, s")
    parser.add_argument(
        "--health-periods",
        default=f"10,{HEALTH_CHECK_PERIOD_S:g}",
        help="the ingress's health-check periods, s (Serve's default, then ghbot's)",
    )
    parser.add_argument(
        "--surges",
        default=f"{MAX_SURGE_PERCENT}",
        help="the rolling update's max_surge_percent values (ghbot's by default)",
    )
    parser.add_argument("--replicas", type=int, default=1, help="ingress replicas")
    parser.add_argument("--event", choices=("kill", "redeploy", "upgrade"), default="kill")
    parser.add_argument("--after", type=float, default=20.0, help="s sent after the event")
    parser.add_argument(
        "--installations", type=int, default=1, help="installations the deliveries go to, in turn"
    )
    parser.add_argument(
        "--pace-writes",
        type=float,
        default=None,
        help="GHBOT_PACE_WRITES, s between an installation's writes (default: not paced)",
    )
    args = parser.parse_args()
    BODIES[:] = [body(n) for n in range(1, args.installations + 1)]
    intervals = [value.strip() for value in args.intervals.split(",") if value.strip()]
    periods = [float(value) for value in args.health_periods.split(",") if value.strip()]
    surges = [int(value) for value in args.surges.split(",") if value.strip()]
    if not port_free(PORT):
        raise SystemExit(f"port {PORT}, which Serve's HAProxy ingress takes, is in use")
    work = Path(tempfile.mkdtemp(prefix="ghbot-bench-loss-"))
    private, public = keys(work)
    harness = Harness(public, installations=args.installations)
    event = {"kill": "a SIGKILL to a replica", "redeploy": "a redeploy", "upgrade": "an upgrade"}
    paced = "not paced" if args.pace_writes is None else f"paced {args.pace_writes:g} s apart"
    print(
        f"# {os.cpu_count()} cores; {args.replicas} ingress replica(s), one shard;"
        f" {args.installations} installation(s), their writes {paced};"
    )
    print(f"# {RATE} deliveries/s from 1 s before {event[args.event]} to {args.after:g} s after")
    columns = "interval s  period s  surge %  run  sent  failed  first/last failed sent at s"
    print(f"{columns}  slowest 202 s  failed by answer")
    try:
        for run in range(args.repeat):
            for interval, period, surge in itertools.product(intervals, periods, surges):
                data = work / f"journal-{interval}-{period:g}-{surge}-{run}"
                out = one_run(harness, private, data, interval, period, surge, args)
                span = (
                    f"{out.first_failed:.2f} / {out.last_failed:.2f}"
                    if out.first_failed is not None and out.last_failed is not None
                    else "-"
                )
                print(
                    f"{interval:>10}  {period:>8g}  {surge:>7}  {run + 1:>3}  {out.sent:>4}"
                    f"  {sum(out.failed.values()):>6}"
                    f"  {span:>27}  {out.slowest_202:>13.2f}  {dict(out.failed)}",
                    flush=True,
                )
                if out.last_failed is not None and out.last_failed > args.after - 3:
                    print("#   failures until the end: --after was too short for this run")
    finally:
        harness.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"# port {PORT} free afterwards: {port_free(PORT)}")


if __name__ == "__main__":
    main()
