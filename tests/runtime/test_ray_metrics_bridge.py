"""The OpenTelemetry-to-Ray metrics bridge (`actors.ray.metrics`), without Ray.

An SDK `MeterProvider` of its own per test (never the global one) exports through
`RayBridgeExporter` into a fake sink standing for `ray.util.metrics`; the cluster test
`tests/cluster/test_metrics_export.py` checks the real thing on Ray's export port.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import Sum as SumData

from actors.ray.metrics import RayBridgeExporter, bucket_values, ray_boundaries, ray_name


class Fake:
    """Stands for one `ray.util.metrics` object: keeps what it was given."""

    def __init__(self, kind: str, name: str, keys: tuple[str, ...], bounds: list[float]) -> None:
        self.kind, self.name, self.keys, self.bounds = kind, name, keys, bounds
        self.calls: list[tuple[float, dict[str, str]]] = []

    def _call(self, value: float, tags: dict[str, str]) -> None:
        assert set(tags) == set(self.keys), "Ray needs every declared key, and only those"
        if self.kind == "counter":
            assert value > 0, "Ray's Counter.inc refuses values <= 0"
        self.calls.append((value, dict(tags)))

    inc = set = observe = _call

    def total(self, **tags: str) -> float:
        return sum(v for v, t in self.calls if t == tags)

    def last(self, **tags: str) -> float:
        return [v for v, t in self.calls if t == tags][-1]

    def buckets(self, **tags: str) -> list[int]:
        """Return the counts per Ray bucket (`le` = each bound, then +Inf)."""
        counts = [0] * (len(self.bounds) + 1)
        for value, t in self.calls:
            if t == tags:
                counts[bisect.bisect_left(self.bounds, value)] += 1
        return counts


class FakeSink:
    def __init__(self) -> None:
        self.made: dict[str, Fake] = {}

    def _make(self, kind: str, name: str, keys: tuple[str, ...], bounds: list[float]) -> Fake:
        assert name not in self.made, "one Ray metric object per name"
        self.made[name] = Fake(kind, name, keys, bounds)
        return self.made[name]

    def counter(self, name: str, description: str, keys: tuple[str, ...]) -> Fake:
        return self._make("counter", name, keys, [])

    def gauge(self, name: str, description: str, keys: tuple[str, ...]) -> Fake:
        return self._make("gauge", name, keys, [])

    def histogram(
        self, name: str, description: str, boundaries: list[float], keys: tuple[str, ...]
    ) -> Fake:
        assert boundaries and all(b > 0 for b in boundaries), "Ray takes positive bounds only"
        return self._make("histogram", name, keys, boundaries)


class Bridge:
    def __init__(self) -> None:
        self.sink = FakeSink()
        self.exporter = RayBridgeExporter(self.sink)
        reader = PeriodicExportingMetricReader(self.exporter, export_interval_millis=math.inf)
        self.provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        self.meter: Meter = self.provider.get_meter("ghbot-test")

    def export(self) -> None:
        assert self.provider.force_flush()

    def __getitem__(self, name: str) -> Fake:
        return self.sink.made[name]


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    made = Bridge()
    yield made
    made.provider.shutdown()


def test_a_counter_is_incremented_by_each_label_sets_increase(bridge: Bridge) -> None:
    counter = bridge.meter.create_counter("ghbot_api_requests_total")
    counter.add(3, {"method": "GET", "status_class": "2xx"})
    counter.add(1, {"method": "POST", "status_class": "4xx"})
    bridge.export()
    made = bridge["ghbot_api_requests_total"]
    assert made.kind == "counter" and made.keys == ("method", "status_class")
    assert made.total(method="GET", status_class="2xx") == 3
    counter.add(2, {"method": "GET", "status_class": "2xx"})
    bridge.export()
    bridge.export()  # nothing new: no call (Ray refuses inc(0))
    assert made.total(method="GET", status_class="2xx") == 5
    assert made.total(method="POST", status_class="4xx") == 1
    assert len(made.calls) == 3


def test_a_counter_without_labels(bridge: Bridge) -> None:
    counter = bridge.meter.create_counter("ghbot_jwt_generated_total")
    counter.add(1)
    counter.add(1)
    bridge.export()
    assert bridge["ghbot_jwt_generated_total"].keys == ()
    assert bridge["ghbot_jwt_generated_total"].calls == [(2, {})]


def test_an_observable_counter_sends_its_increases(bridge: Bridge) -> None:
    seen = [10]

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(seen[0], {"kind": "a"})]

    bridge.meter.create_observable_counter("ghbot_bytes_total", callbacks=[observe])
    bridge.export()
    seen[0] = 14
    bridge.export()
    assert [v for v, _ in bridge["ghbot_bytes_total"].calls] == [10, 4]


def test_up_down_counters_and_gauges_set_a_ray_gauge(bridge: Bridge) -> None:
    pending = bridge.meter.create_up_down_counter("ghbot_in_flight")
    gauge = bridge.meter.create_gauge("ghbot_level")
    ratio = [0.5]

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(ratio[0], {"resource": "core"})]

    bridge.meter.create_observable_gauge("ghbot_rate_limit_remaining_ratio", callbacks=[observe])
    pending.add(5)
    pending.add(-2)
    gauge.set(7, {"shard": "0"})
    bridge.export()
    ratio[0] = 0.25
    pending.add(-1)
    bridge.export()
    assert bridge["ghbot_in_flight"].kind == "gauge"
    assert [v for v, _ in bridge["ghbot_in_flight"].calls] == [3, 2]  # the level, not deltas
    assert bridge["ghbot_level"].last(shard="0") == 7
    assert bridge["ghbot_rate_limit_remaining_ratio"].last(resource="core") == 0.25


def test_a_histogram_keeps_its_buckets_and_counts(bridge: Bridge) -> None:
    bounds = (0.01, 0.1, 1.0, 10.0)
    histogram = bridge.meter.create_histogram(
        "ghbot_webhook_processing_seconds", unit="s", explicit_bucket_boundaries_advisory=bounds
    )
    for value in (0.005, 0.05, 0.1, 0.5, 0.7, 3.0, 42.0):
        histogram.record(value, {"event": "issues"})
    histogram.record(0.2, {"event": "push"})
    bridge.export()
    made = bridge["ghbot_webhook_processing_seconds"]
    assert made.kind == "histogram" and made.bounds == list(bounds) and made.keys == ("event",)
    # (-inf, .01], (.01, .1], (.1, 1], (1, 10], (10, +inf): 0.1 is in (.01, .1], as `le`
    assert made.buckets(event="issues") == [1, 2, 2, 1, 1]
    assert made.buckets(event="push") == [0, 0, 1, 0, 0]
    histogram.record(0.3, {"event": "issues"})
    bridge.export()
    assert made.buckets(event="issues") == [1, 2, 3, 1, 1]  # only the new one was replayed


def test_a_histogram_with_the_sdks_default_buckets_folds_zero_into_the_first(
    bridge: Bridge,
) -> None:
    histogram = bridge.meter.create_histogram("ghbot_sizes")  # bounds (0, 5, 10, ...)
    for value in (0.0, 3.0, 7.0, 20_000.0):
        histogram.record(value)
    bridge.export()
    made = bridge["ghbot_sizes"]
    assert made.bounds[0] == 5.0
    assert made.buckets()[:3] == [2, 1, 0]  # (-inf, 0] and (0, 5] are Ray's (-inf, 5]
    assert made.buckets()[-1] == 1
    assert sum(made.buckets()) == 4


def test_label_keys_are_those_of_the_first_points(bridge: Bridge) -> None:
    counter = bridge.meter.create_counter("ghbot_things_total")
    counter.add(1, {"a": "x"})
    counter.add(1, {"a": "y", "b": "z"})
    bridge.export()
    made = bridge["ghbot_things_total"]
    assert made.keys == ("a", "b")
    assert made.total(a="x", b="") == 1  # a key a point lacks is sent empty
    counter.add(1, {"a": "x", "c": "late"})  # a key never declared is dropped
    counter.add(1, {"a": True})
    bridge.export()
    assert made.total(a="x", b="") == 2
    assert made.total(a="true", b="") == 1


def test_cumulative_points_are_turned_into_increases() -> None:
    sink = FakeSink()
    exporter = RayBridgeExporter(sink)

    def counter(value: int, start: int = 1) -> Any:
        point = NumberDataPoint({"k": "v"}, start, 2, value)
        return SumData([point], AggregationTemporality.CUMULATIVE, is_monotonic=True)

    def histogram(counts: list[int], start: int = 1) -> Any:
        point = HistogramDataPoint(
            {}, start, 2, sum(counts), 0.0, counts, [1.0, 2.0], min=0.0, max=3.0
        )
        return HistogramData([point], AggregationTemporality.CUMULATIVE)

    for value, start in ((5, 1), (8, 1), (8, 1), (2, 1), (4, 9)):
        exporter._record("c_total", "", counter(value, start))
    # 5, +3, nothing, a reset (2 < 8): 2, a new start: 4
    assert [v for v, _ in sink.made["c_total"].calls] == [5, 3, 2, 4]

    exporter._record("h", "", histogram([1, 0, 2]))
    exporter._record("h", "", histogram([1, 1, 4]))
    assert sink.made["h"].buckets() == [1, 1, 4]


def test_names_bounds_and_bucket_values() -> None:
    assert ray_name("ghbot_api_requests_total") == "ghbot_api_requests_total"
    assert ray_name("ghbot.api-requests/x") == "ghbot_api_requests_x"
    assert ray_name("2xx") == "_2xx"
    assert ray_boundaries([0, 0.5, 1]) == [0.5, 1.0]
    assert bucket_values([1.0, 2.0, 4.0]) == [0.5, 1.5, 3.0, 8.0]
    assert bucket_values([0.0, 5.0]) == [-1.0, 2.5, 10.0]
    assert bucket_values([]) == [1.0]
    for bounds in ([0.01, 0.1, 1.0], [0.0, 5.0, 10.0], [-2.0, -1.0]):
        values = bucket_values(bounds)
        for i, value in enumerate(values):  # each value lies in its own bucket
            assert bisect.bisect_left(bounds, value) == i
