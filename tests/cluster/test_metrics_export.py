"""ghbot's OpenTelemetry metrics on Ray's own metrics export port, on a real local Ray.

The port (``ray.nodes()[i]["MetricsExportPort"]``) is the Prometheus endpoint Ray's
monitoring guide has users scrape; the session's Ray runs without its dashboard, and
application metrics are served there all the same, named ``ray_<name>``, about 15 s
after they are recorded (ghbot pushes every 5 s, Ray's agent reads its workers every
10 s or so).
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import ray

from tests.cluster.conftest import (
    Scrape,
    comments,
    eventually,
    increase,
    install,
    payload,
    scrape_metrics,
    send,
    series,
    series_key,
)

WITHIN = 120.0  # seconds for a point to reach the export port; usually ~15


def _values(scrape: Scrape, name: str, **labels: str) -> list[float]:
    return [v for _, v in series(scrape, name, labels)]


async def _until(check: Callable[[Scrape], list[str]], within: float = WITHIN) -> Scrape:
    """Scrape until `check` finds nothing wrong; fail with what it found after `within` s."""
    deadline = time.monotonic() + within
    while True:
        scrape = await asyncio.to_thread(scrape_metrics)
        wrong = check(scrape)
        if not wrong:
            return scrape
        if time.monotonic() > deadline:
            raise AssertionError(f"after {within} s on Ray's metrics export port: {wrong}")
        await asyncio.sleep(3)


@ray.remote(num_cpus=0)
class Probe:
    """A Ray process recording through the OpenTelemetry API, as ghbot's actors do."""

    def __init__(self) -> None:
        from actors.ray.metrics import install_ray_metrics

        assert install_ray_metrics()
        assert install_ray_metrics()  # a second call changes nothing

    def record(self) -> None:
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = metrics.get_meter("ghbot-test")
        meter.create_counter("ghbot_test_probe_total").add(3, {"k": "v"})
        histogram = meter.create_histogram(
            "ghbot_test_probe_seconds", unit="s", explicit_bucket_boundaries_advisory=(0.1, 1.0)
        )
        for value in (0.05, 0.3, 0.3, 4.0):
            histogram.record(value, {"k": "v"})
        level = meter.create_up_down_counter("ghbot_test_probe_level")
        level.add(5, {"k": "v"})
        level.add(-3, {"k": "v"})

        def ratio(options: CallbackOptions) -> list[Observation]:
            return [Observation(0.25, {"k": "v"})]

        meter.create_observable_gauge("ghbot_test_probe_ratio", callbacks=[ratio])


async def test_any_instrument_reaches_rays_metrics_export(ray_serve: str) -> None:
    probe = Probe.remote()  # type: ignore[attr-defined]
    try:
        await probe.record.remote()

        def check(scrape: Scrape) -> list[str]:
            wrong: list[tuple[str, object]] = []
            if _values(scrape, "ghbot_test_probe_total", k="v") != [3.0]:
                wrong.append(("counter", _values(scrape, "ghbot_test_probe_total")))
            buckets = {
                got["le"]: v for got, v in series(scrape, "ghbot_test_probe_seconds_bucket", {})
            }
            if buckets != {"0.1": 1.0, "1.0": 3.0, "+Inf": 4.0}:
                wrong.append(("histogram buckets", buckets))
            if _values(scrape, "ghbot_test_probe_seconds_count", k="v") != [4.0]:
                wrong.append(("histogram count", _values(scrape, "ghbot_test_probe_seconds_count")))
            if not all(v > 0 for v in _values(scrape, "ghbot_test_probe_seconds_sum", k="v")):
                wrong.append(("histogram sum", _values(scrape, "ghbot_test_probe_seconds_sum")))
            if _values(scrape, "ghbot_test_probe_level", k="v") != [2.0]:
                wrong.append(("up-down counter", _values(scrape, "ghbot_test_probe_level")))
            if _values(scrape, "ghbot_test_probe_ratio", k="v") != [0.25]:
                wrong.append(("gauge", _values(scrape, "ghbot_test_probe_ratio")))
            return [f"{what}: {got}" for what, got in wrong]

        scrape = await _until(check)
        (labels, _), *_ = series(scrape, "ghbot_test_probe_total", {})
        assert {"WorkerId", "SessionName"} <= labels.keys()  # Ray's per-process labels
    finally:
        ray.kill(probe)


def _defined_metrics() -> set[str] | None:
    """Return the names `ghbot.metrics` defines, or None before that module exists."""
    try:
        module = importlib.import_module("ghbot.metrics")
    except ModuleNotFoundError as exc:
        if exc.name != "ghbot.metrics":
            raise
        return None
    names = set(getattr(module, "LABELS", {}))
    names |= {v.name for v in vars(module).values() if isinstance(getattr(v, "name", None), str)}
    return names


GOOD = 4  # signed deliveries whose handler comments through the fake GitHub
FRESH = 5.0  # seconds a minted token counts as fresh (`InstallationTokens.fresh_window`)

# Each metric of the issue's table: what must hold once the deliveries below are in.
Check = Callable[[Scrape, Scrape], bool]
EXPECTED: dict[str, Check] = {
    "ghbot_webhooks_received_total": lambda b, a: (
        increase(b, a, "ghbot_webhooks_received_total", event="issues") >= GOOD + 1
    ),
    "ghbot_webhook_signature_failures_total": lambda b, a: (
        increase(b, a, "ghbot_webhook_signature_failures_total") >= 1
    ),
    "ghbot_webhook_parse_errors_total": lambda b, a: (
        increase(b, a, "ghbot_webhook_parse_errors_total", reason="malformed") >= 1
    ),
    "ghbot_webhook_processing_seconds": lambda b, a: (
        increase(b, a, "ghbot_webhook_processing_seconds_count", event="issues") >= GOOD
        and increase(b, a, "ghbot_webhook_processing_seconds_sum", event="issues") > 0
        and _histograms_consistent(a, "ghbot_webhook_processing_seconds")
    ),
    "ghbot_api_requests_total": lambda b, a: (
        increase(b, a, "ghbot_api_requests_total", method="POST", status_class="2xx") >= GOOD
        and increase(b, a, "ghbot_api_requests_total", method="POST", status_class="5xx") >= 1
        and increase(b, a, "ghbot_api_requests_total", method="POST", status_class="4xx") >= 3
    ),
    "ghbot_api_request_duration_seconds": lambda b, a: (
        increase(b, a, "ghbot_api_request_duration_seconds_count", method="POST") >= GOOD
        and _histograms_consistent(a, "ghbot_api_request_duration_seconds")
    ),
    "ghbot_jwt_generated_total": lambda b, a: increase(b, a, "ghbot_jwt_generated_total") >= 1,
    "ghbot_token_requests_total": lambda b, a: (
        increase(b, a, "ghbot_token_requests_total", outcome="ok") >= 1
        and increase(b, a, "ghbot_token_requests_total", outcome="error") >= 1
    ),
    "ghbot_token_cache_lookups_total": lambda b, a: (
        increase(b, a, "ghbot_token_cache_lookups_total") >= 1
    ),
    "ghbot_rate_limit_remaining_ratio": lambda b, a: (
        bool(_values(a, "ghbot_rate_limit_remaining_ratio", resource="core"))
        and all(0 <= v <= 1 for v in _values(a, "ghbot_rate_limit_remaining_ratio"))
    ),
    "ghbot_dead_letters_total": lambda b, a: increase(b, a, "ghbot_dead_letters_total") >= 1,
    # Every delivery accepted went in a call to its shard, and into a journal commit.
    "ghbot_shard_call_duration_seconds": lambda b, a: (
        increase(b, a, "ghbot_shard_call_duration_seconds_count", outcome="ok") >= 1
        and increase(b, a, "ghbot_shard_call_duration_seconds_sum", outcome="ok") > 0
        and _histograms_consistent(a, "ghbot_shard_call_duration_seconds")
    ),
    "ghbot_journal_append_duration_seconds": lambda b, a: (
        increase(b, a, "ghbot_journal_append_duration_seconds_count", outcome="ok") >= 2
        and _histograms_consistent(a, "ghbot_journal_append_duration_seconds")
    ),
    # What the faults below provoke: a refused JWT, a refused installation token,
    # a 502 and a secondary limit on a comment.
    "ghbot_jwt_failures_total": lambda b, a: (
        increase(b, a, "ghbot_jwt_failures_total", reason="refused") >= 1
    ),
    "ghbot_auth_failures_total": lambda b, a: (
        increase(b, a, "ghbot_auth_failures_total", type="bad_credentials") >= 2
    ),
    "ghbot_token_refreshes_total": lambda b, a: (
        increase(b, a, "ghbot_token_refreshes_total", kind="reactive") >= 1
    ),
    "ghbot_api_retries_total": lambda b, a: (
        increase(b, a, "ghbot_api_retries_total", reason="server_error") >= 1
        and increase(b, a, "ghbot_api_retries_total", reason="secondary_rate_limit") >= 1
        and increase(b, a, "ghbot_api_retries_total", reason="auth") >= 1
    ),
    "ghbot_secondary_rate_limits_total": lambda b, a: (
        increase(b, a, "ghbot_secondary_rate_limits_total") >= 1
    ),
    "ghbot_rate_limit_reset_seconds": lambda b, a: (
        bool(_values(a, "ghbot_rate_limit_reset_seconds", resource="core"))
        and all(0 < v <= 3600 for v in _values(a, "ghbot_rate_limit_reset_seconds"))
    ),
    "ghbot_token_request_duration_seconds": lambda b, a: (
        increase(b, a, "ghbot_token_request_duration_seconds_count") >= 3
        and _histograms_consistent(a, "ghbot_token_request_duration_seconds")
    ),
    "ghbot_pending_deliveries": lambda b, a: (
        bool(_values(a, "ghbot_pending_deliveries"))
        and all(v >= 0 for v in _values(a, "ghbot_pending_deliveries"))
    ),
}


def _histograms_consistent(scrape: Scrape, name: str) -> bool:
    """Each series' buckets grow with `le` and its +Inf bucket equals its count."""
    counts = {series_key(got): v for got, v in series(scrape, f"{name}_count", {})}
    by_series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for labels, v in series(scrape, f"{name}_bucket", {}):
        got = dict(labels)
        le = got.pop("le")
        by_series.setdefault(series_key(got), []).append((float(le), v))
    for key, buckets in by_series.items():
        ordered = [v for _, v in sorted(buckets)]
        if ordered != sorted(ordered) or ordered[-1] != counts.get(key):
            return False
    return bool(by_series)


async def test_ghbots_metrics_reach_rays_metrics_export(deploy: Any, fake: Any) -> None:
    defined = _defined_metrics()
    if defined is None:
        pytest.skip("ghbot.metrics does not exist yet: no ghbot instruments to look for")
    assert not EXPECTED.keys() - defined, "the issue's metrics ghbot.metrics lacks"
    before = await asyncio.to_thread(scrape_metrics)

    install(fake, 1401, "metrics/export", issues=GOOD)
    app = deploy("tests.cluster.bots:Greeter")
    for number in range(1, GOOD + 1):
        data = payload(
            "issues.opened", installation=1401, repo="metrics/export", issue__number=number
        )
        assert (await send(app.url, "issues", data))[0] == 202
    data = payload("issues.opened", installation=1401, repo="metrics/export", issue__number=1)
    status, _ = await send(app.url, "issues", data, secret="forged", guid=str(uuid.uuid4()))
    assert status == 401
    status, _ = await send(app.url, "issues", b"{not json")
    assert status == 400
    # A body its handler cannot take: dead-lettered.
    data = payload("issues.opened", installation=1401, repo="metrics/export", issue__title=7)
    assert (await send(app.url, "issues", data))[0] == 202

    # Installation 1402's first token exchange is refused (the app's JWT: a handler
    # attempt fails, the next one gets a token); then its comment meets a 502 (retried)
    # and a secondary limit (waited out), and lands.
    install(fake, 1402, "metrics/faults")
    faults = fake.fake.faults
    comment = r"^/repos/metrics/faults/issues/1/comments$"
    faults.add(r"^/app/installations/1402/access_tokens$", "unauthorized", method="POST")
    faults.add(comment, "server_error", method="POST")
    faults.add(comment, "secondary", method="POST", retry_after=1)
    data = payload("issues.opened", installation=1402, repo="metrics/faults", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202
    # 1401's token, no longer fresh, refused once: replaced (a reactive refresh).
    await _comments(fake, "metrics/export", GOOD)
    await asyncio.sleep(FRESH + 1)
    faults.add(r"^/repos/metrics/export/issues/1/comments$", "unauthorized", method="POST")
    data = payload("issues.opened", installation=1401, repo="metrics/export", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202

    def check(after: Scrape) -> list[str]:
        return [name for name, holds in EXPECTED.items() if not holds(before, after)]

    # Every fault met before the metrics are judged: a scrape that already holds
    # (another test's late counts) must not end the wait before they are.
    try:
        await eventually(lambda: not faults, within=60)
    except AssertionError as exc:
        raise AssertionError(f"{len(faults)} faults were never met") from exc
    await _until(check)
    await _comments(fake, "metrics/faults", 1)
    await _comments(fake, "metrics/export", GOOD + 1)
    assert len(comments(fake, "metrics/export")) == GOOD + 1
    assert len(comments(fake, "metrics/faults")) == 1


async def _comments(fake: Any, repo: str, count: int, within: float = 60.0) -> None:
    """Wait until the fake holds `count` comments on `repo`."""
    deadline = time.monotonic() + within
    while len(comments(fake, repo)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{repo} has {len(comments(fake, repo))} of {count} comments")
        await asyncio.sleep(0.2)
