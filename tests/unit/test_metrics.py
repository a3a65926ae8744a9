"""ghbot's instruments: no-ops until a provider is set, bound to one set after import,
and named as the Prometheus exporter shows them. Each runs in a process of its own,
since the global meter provider can be set once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import ghbot.metrics


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True
    )
    return done.stdout


def test_instruments_made_before_the_provider_record_through_it() -> None:
    out = run(
        """
        from ghbot import metrics as ghbot_metrics  # the instruments exist now
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        ghbot_metrics.api_request("GET", 200, 0.01)  # before the provider: dropped
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        ghbot_metrics.api_request("GET", 200, 0.02)
        ghbot_metrics.api_request("post", None, 0.5)
        ghbot_metrics.retry("network")
        ghbot_metrics.api_request("GET", 600, 0.1)  # past 5xx: counted as 5xx
        from ghbot import errors
        for refused in ("InvalidSignature", "UnsupportedContentType", "MissingHeader"):
            ghbot_metrics.parse_error(getattr(errors, refused)("refused"))
        ghbot_metrics.webhook_received("brand_new_event")
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        value = getattr(p, "value", None)
                        if value is None:
                            value = p.count
                        print(m.name, m.unit, sorted(dict(p.attributes).items()), value)
        """
    )
    lines = set(out.splitlines())
    assert "ghbot_api_requests_total 1 [('method', 'GET'), ('status_class', '2xx')] 1" in lines
    # A method ghbot does not know is OTHER (bounded); no answer is `network`.
    assert (
        "ghbot_api_requests_total 1 [('method', 'OTHER'), ('status_class', 'network')] 1" in lines
    )
    assert "ghbot_api_request_duration_seconds s [('method', 'GET')] 2" in lines
    assert "ghbot_api_retries_total 1 [('reason', 'network')] 1" in lines
    assert "ghbot_api_requests_total 1 [('method', 'GET'), ('status_class', '5xx')] 1" in lines
    # A bad signature is counted apart, not also as a parse error of its own.
    assert "ghbot_webhook_signature_failures_total 1 [] 1" in lines
    parse_errors = {line for line in lines if line.startswith("ghbot_webhook_parse_errors")}
    assert parse_errors == {
        "ghbot_webhook_parse_errors_total 1 [('reason', 'content_type')] 1",
        "ghbot_webhook_parse_errors_total 1 [('reason', 'missing_header')] 1",
    }
    # An event GitHub does not document is `other` (bounded).
    assert "ghbot_webhooks_received_total 1 [('event', 'other')] 1" in lines


def test_without_a_provider_every_call_is_a_no_op() -> None:
    run(
        """
        import ghbot.metrics as m
        m.api_request("GET", 503, 1.0)
        m.retry("server_error")
        m.webhook_received("issues")
        m.rate_limit_seen("core", 10, 5000, 2e9, 1e9)
        source = m.watch_pending(lambda: 3)
        m.jwt_generated.add(1)
        from opentelemetry import metrics
        assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
        """
    )


def test_the_prometheus_exporter_shows_the_names_as_they_are() -> None:
    out = run(
        """
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import REGISTRY, generate_latest

        import ghbot.metrics as m

        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
        m.api_request("GET", 200, 0.02)
        m.rate_limit_seen("core", 1000, 5000, 4e9, 1e9)
        m.dead_letters.add(1)
        print(generate_latest(REGISTRY).decode())
        """
    )
    names = {line.split()[2] for line in out.splitlines() if line.startswith("# TYPE ghbot")}
    assert names == {
        "ghbot_api_requests_total",
        "ghbot_api_request_duration_seconds",
        "ghbot_rate_limit_remaining_ratio",
        "ghbot_rate_limit_reset_seconds",
        "ghbot_dead_letters_total",
    }
    assert 'ghbot_rate_limit_remaining_ratio{otel_scope_name="ghbot"' in out


def test_a_rate_limit_resource_github_does_not_describe_is_other() -> None:
    """The `resource` label takes GitHub's described resources, and `other`."""
    from ghbot.rest.models import RateLimitOverviewResources

    assert set(RateLimitOverviewResources.__struct_fields__) == ghbot.metrics.RATE_LIMIT_RESOURCES
    ghbot.metrics._lowest.clear()
    try:
        for made_up in ("made-up-1", "made-up-2"):
            ghbot.metrics.rate_limit_seen(made_up, 5, 10, reset=2000.0, now=1000.0)
        ghbot.metrics.rate_limit_seen("code_search", 9, 10, reset=2000.0, now=1000.0)
        labels = [label for label, _, _ in ghbot.metrics._live(1500.0)]
        assert sorted(label["resource"] for label in labels) == ["code_search", "other"]
    finally:
        ghbot.metrics._lowest.clear()


def test_the_rate_limit_gauge_keeps_the_lowest_ratio_of_the_window() -> None:
    ghbot.metrics._lowest.clear()
    try:
        ghbot.metrics.rate_limit_seen("search", 20, 30, reset=1060.0, now=1000.0)
        ghbot.metrics.rate_limit_seen("search", 25, 30, reset=1060.0, now=1001.0)
        assert ghbot.metrics._lowest["search"] == (20 / 30, 1060.0)
        # The window is over: the next answer starts a new one, higher or not.
        ghbot.metrics.rate_limit_seen("search", 29, 30, reset=1120.0, now=1061.0)
        assert ghbot.metrics._lowest["search"] == (29 / 30, 1120.0)
        assert ghbot.metrics._live(1200.0) == []
        assert "search" not in ghbot.metrics._lowest
        ghbot.metrics.rate_limit_seen("search", 0, 0, reset=1300.0, now=1200.0)  # no limit
        assert "search" not in ghbot.metrics._lowest
        ghbot.metrics.rate_limit_seen("search", 1, 30, reset=1300.0, now=1200.0)
        assert ghbot.metrics._live(1300.0) == []  # the window ends at its reset
    finally:
        ghbot.metrics._lowest.clear()


def test_every_metric_of_the_issue_is_declared() -> None:
    assert set(ghbot.metrics.LABELS) == {
        "ghbot_jwt_generated_total",
        "ghbot_jwt_failures_total",
        "ghbot_token_requests_total",
        "ghbot_token_request_duration_seconds",
        "ghbot_token_cache_lookups_total",
        "ghbot_token_refreshes_total",
        "ghbot_auth_failures_total",
        "ghbot_api_requests_total",
        "ghbot_api_request_duration_seconds",
        "ghbot_rate_limit_remaining_ratio",
        "ghbot_rate_limit_reset_seconds",
        "ghbot_api_retries_total",
        "ghbot_secondary_rate_limits_total",
        "ghbot_webhooks_received_total",
        "ghbot_webhook_processing_seconds",
        "ghbot_webhook_signature_failures_total",
        "ghbot_webhook_parse_errors_total",
        "ghbot_shard_call_duration_seconds",
        "ghbot_webhooks_unavailable_total",
        "ghbot_held_deliveries_total",
        "ghbot_journal_append_duration_seconds",
        "ghbot_dead_letters_total",
        "ghbot_pending_deliveries",
    }
