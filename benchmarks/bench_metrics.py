"""What ghbot's metrics cost a shard per handled delivery, with and without an SDK.

A shard records four instruments for each delivery it handles: its comment's
`ghbot_api_requests_total` and `ghbot_api_request_duration_seconds`
(`ghbot.metrics.api_request`), the token lookup's `ghbot_token_cache_lookups_total`,
and the delivery's `ghbot_webhook_processing_seconds`. This times those four calls,
`--calls` times, in two child processes:

- the floor: no meter provider set, so the instruments are the OpenTelemetry API's
  proxies and each call does nothing (ghbot outside Ray with no SDK);
- the SDK: OpenTelemetry's SDK `MeterProvider` set, as `install_ray_metrics` sets it
  in every ghbot Ray process, with a reader that is never collected during the
  timing (recording costs the same whatever the reader; Ray's export every 5 s is
  not counted here).

Printed: CPU µs per delivery (`time.process_time`) for each, and the difference,
to set against the shard's CPU per delivery that `bench_e2e.py` reports.

    python benchmarks/bench_metrics.py [--calls 200000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def measure(calls: int, sdk: bool) -> float:
    """Return the CPU µs of one delivery's four instrument calls, in this process."""
    if sdk:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        otel_metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    from ghbot import metrics

    for _ in range(1000):  # warm up: the label sets and the SDK's storage made
        record(metrics)
    started = time.process_time()
    for _ in range(calls):
        record(metrics)
    return (time.process_time() - started) / calls * 1e6


def record(metrics: ModuleType) -> None:
    """What a shard records for one handled delivery (see the module), as it calls it."""
    metrics.api_request("POST", 201, 0.012)
    metrics.token_cache_lookups.add(1, metrics.CACHE_HIT)
    metrics.webhook_processing.record(0.02, metrics.event_label("issues"))


def child(calls: int, sdk: bool) -> float:
    """Run `measure` in a new process (a meter provider can be set once a process)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_metrics; "
        f"print(json.dumps(bench_metrics.measure({calls}, {sdk})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=HERE.parent
    ).stdout
    return float(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 calls")
    args = parser.parse_args()
    calls = 20_000 if args.quick else args.calls
    print(f"# {platform.machine()}, Python {platform.python_version()}, {calls} deliveries")
    floor, sdk = child(calls, sdk=False), child(calls, sdk=True)
    print("                           µs a delivery")
    print(f"no meter provider (floor)  {floor:13.2f}")
    print(f"OpenTelemetry SDK          {sdk:13.2f}")
    print(f"SDK - floor                {sdk - floor:13.2f}   ({sdk / max(floor, 1e-9):.0f}x)")


if __name__ == "__main__":
    main()
