"""Token exchange p95, API call p95 and token cache hit rate, read from ghbot's own metrics.

The operations targets: an installation token exchange under 200 ms at p95, and more
than 90 % of token lookups answered from the cache. This benchmark drives ghbot's
client (`GitHubApp`: its JWT, its token cache, one `GitHub` client per installation,
as each shard holds them) with a mix of deliveries, and reports the three figures
from the metrics ghbot records (`ghbot_token_request_duration_seconds`,
`ghbot_api_request_duration_seconds`, `ghbot_token_cache_lookups_total`), read
through an OpenTelemetry SDK in-memory reader: the numbers an operator's dashboard
would show, quantiles estimated from the histogram's buckets as Prometheus's
`histogram_quantile` does.

The mix: `--installations` installations, deliveries arriving at random (Poisson) at
`--rate` per second for `--seconds`, each for an installation drawn with Zipf-like
popularity (exponent 1.1: a few busy installations, a long tail of quiet ones that
find their token expired). Each delivery does what a handler does: GET the
repository, then POST an issue. Tokens are made to expire within the run: the fake
issues tokens valid `--token-lifetime` s, and ghbot replaces a token 5 minutes before
it expires, so with the default 330 s each token serves 30 s; a real token serves
55 minutes, so the hit rate here is a low bound of what the same mix gets from
GitHub. The fake GitHub runs in its own process at nice 19 and answers at once unless
`--latency` is given; GitHub's own answer time adds to the p95s measured here.
Write pacing is off (GitHub's 1 s between writes would queue the busiest
installations' writes, which is not what this measures).

    python benchmarks/bench_tokens.py [--quick] [--seconds S] [--rate R]
        [--installations N] [--token-lifetime L] [--latency D]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHub, GitHubApp, close_pool
from ghbot.testing.keys import app_key_pair

APP_ID = 1
TARGET_TOKEN_P95 = 0.200  # seconds
TARGET_HIT_RATE = 0.90


@dataclass(frozen=True)
class Figures:
    token_p95: float
    token_count: int
    api_p95: float
    api_count: int
    hits: float
    misses: float
    refreshes: dict[str, float]
    token_errors: float
    deliveries: int
    failed: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float:
    """Estimate the `q` quantile from bucket counts, as Prometheus's histogram_quantile.

    `counts[i]` counts values in (bounds[i-1], bounds[i]]; the last counts those above
    every bound. Linear within the bucket; a quantile in the last bucket is the
    highest bound.
    """
    total = sum(counts)
    if not total:
        return float("nan")
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if seen + count >= rank and count:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _merged(points: Iterable[HistogramDataPoint]) -> tuple[list[float], list[int]]:
    bounds: list[float] = []
    counts: list[int] = []
    for point in points:
        bounds = list(point.explicit_bounds)
        counts = [a + b for a, b in itertools.zip_longest(counts, point.bucket_counts, fillvalue=0)]
    return bounds, counts


def read(reader: InMemoryMetricReader, deliveries: int, failed: int) -> Figures:
    """Read the figures from ghbot's metrics as the reader holds them now."""
    histograms: dict[str, list[HistogramDataPoint]] = {}
    sums: dict[str, list[NumberDataPoint]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if isinstance(metric.data, Histogram):
                    histograms[metric.name] = list(metric.data.data_points)
                elif isinstance(metric.data, Sum):
                    sums[metric.name] = [
                        p for p in metric.data.data_points if isinstance(p, NumberDataPoint)
                    ]

    def total(name: str, **labels: str) -> float:
        return sum(
            p.value
            for p in sums.get(name, [])
            if labels.items() <= dict(p.attributes or {}).items()
        )

    token = _merged(histograms.get("ghbot_token_request_duration_seconds", []))
    api = _merged(histograms.get("ghbot_api_request_duration_seconds", []))
    refreshes: dict[str, float] = {}
    for p in sums.get("ghbot_token_refreshes_total", []):
        kind = str(dict(p.attributes or {}).get("kind"))
        refreshes[kind] = refreshes.get(kind, 0.0) + p.value
    return Figures(
        token_p95=quantile(0.95, *token),
        token_count=sum(token[1]),
        api_p95=quantile(0.95, *api),
        api_count=sum(api[1]),
        hits=total("ghbot_token_cache_lookups_total", result="hit"),
        misses=total("ghbot_token_cache_lookups_total", result="miss"),
        refreshes=refreshes,
        token_errors=total("ghbot_token_requests_total", outcome="error"),
        deliveries=deliveries,
        failed=failed,
    )


def start_fake(args: argparse.Namespace, public_key: Path) -> tuple[subprocess.Popen[str], str]:
    """Start `ghbot fake-github` at nice 19 with every installation; return it and its URL."""
    command = [sys.executable, "-m", "ghbot.cli", "fake-github", "--port", "0"]
    command += ["--public-key", str(public_key), "--app-id", str(APP_ID)]
    command += ["--rate-limit", "1000000000", "--max-concurrent", "0"]
    command += ["--token-lifetime", str(args.token_lifetime), "--latency", str(args.latency)]
    for n in range(1, args.installations + 1):
        command += ["--installation", f"{n}=org{n}/repo"]
    nice = ["nice", "-n", "19"] if os.name == "posix" else []
    process = subprocess.Popen([*nice, *command], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().split()[-1]


async def drive(app: GitHubApp, args: argparse.Namespace) -> tuple[int, int]:
    """Send the mix; return how many deliveries ran and how many of them failed."""
    rng = random.Random(args.seed)
    ids = list(range(1, args.installations + 1))
    weights = [1 / n**1.1 for n in ids]
    clients: dict[int, GitHub] = {}
    failed = 0

    async def delivery(installation_id: int, n: int) -> None:
        nonlocal failed
        gh = clients.get(installation_id)
        if gh is None:
            gh = clients[installation_id] = app.installation(installation_id)
        repo = f"org{installation_id}/repo"
        try:
            await gh.request("GET", f"/repos/{repo}")
            await gh.request("POST", f"/repos/{repo}/issues", json={"title": f"delivery {n}"})
        except Exception as exc:
            failed += 1
            print(f"delivery {n} failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    due = start
    for n in itertools.count():
        due += rng.expovariate(args.rate)
        if due - start >= args.seconds:
            break
        await asyncio.sleep(max(0.0, due - loop.time()))
        (installation_id,) = rng.choices(ids, weights)
        tasks.append(asyncio.create_task(delivery(installation_id, n)))
    await asyncio.gather(*tasks)
    return len(tasks), failed


def report(figures: Figures, args: argparse.Namespace) -> list[str]:
    token_ok = figures.token_p95 < TARGET_TOKEN_P95
    hit_ok = figures.hit_rate > TARGET_HIT_RATE
    refreshes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(figures.refreshes.items()))
    return [
        f"deliveries {figures.deliveries} ({figures.failed} failed), "
        f"API calls {figures.api_count}, token exchanges {figures.token_count} "
        f"({figures.token_errors:.0f} failed), refreshes: {refreshes or 'none'}",
        "figure                     measured   target   met",
        f"token exchange p95        {figures.token_p95 * 1000:>7.1f} ms  < 200 ms  "
        f"{'yes' if token_ok else 'NO'}",
        f"API call p95              {figures.api_p95 * 1000:>7.1f} ms        -",
        f"token cache hit rate      {figures.hit_rate * 100:>7.1f} %     > 90 %  "
        f"{'yes' if hit_ok else 'NO'}",
        f"(hits {figures.hits:.0f}, misses {figures.misses:.0f}; p95s estimated from the "
        "histogram buckets, 5 ms ... 30 s)",
    ]


async def bench(args: argparse.Namespace, url: str, private: bytes) -> Figures:
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    options = ClientOptions(base_url=url, pace_writes=None, etags=None)
    app = GitHubApp(AppAuth(APP_ID, private, clock=options.clock), options=options)
    try:
        deliveries, failed = await drive(app, args)
    finally:
        await close_pool()
    return read(reader, deliveries, failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s at 40/s, tokens serve 10 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=float, default=None, help="deliveries per second")
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument("--token-lifetime", type=float, default=None, help="seconds")
    parser.add_argument("--latency", type=float, default=0.0, help="fake's answer delay, s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.seconds = args.seconds or (30.0 if args.quick else 120.0)
    args.rate = args.rate or (40.0 if args.quick else 50.0)
    args.token_lifetime = args.token_lifetime or (310.0 if args.quick else 330.0)
    private, public = app_key_pair()
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "app.pub.pem"
        key.write_bytes(public)
        process, url = start_fake(args, key)
        try:
            started = time.monotonic()
            figures = asyncio.run(bench(args, url, private))
            took = time.monotonic() - started
        finally:
            process.terminate()
            process.wait()
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(
        f"{python}, {os.cpu_count()} CPUs; {args.installations} installations, "
        f"{args.rate:g} deliveries/s for {args.seconds:g} s ({took:.0f} s in all), "
        f"tokens valid {args.token_lifetime:g} s (each serves "
        f"{args.token_lifetime - 300:g} s), fake latency {args.latency * 1000:g} ms"
    )
    print("\n".join(report(figures, args)))
    return 1 if figures.failed else 0


if __name__ == "__main__":
    sys.exit(main())
