"""ghbot's OpenTelemetry metrics in Ray's own metrics export.

ghbot's core records its metrics through the OpenTelemetry metrics API (a no-op until
a meter provider is set). In every ghbot Ray process (shards, the app-auth actor, the
ingress replicas) `install_ray_metrics()` sets an OpenTelemetry SDK `MeterProvider`
whose reader hands every data point, every `EXPORT_INTERVAL_S` seconds, to
`ray.util.metrics` under the same name and labels. Ray's metrics agent then serves
them on each node's metrics export port (the Prometheus endpoint of Ray's monitoring
guide) beside Ray's own, prefixed ``ray_`` (``ghbot_api_requests_total`` is scraped as
``ray_ghbot_api_requests_total``) and labelled with the process (``WorkerId``...).

The mapping, per OpenTelemetry point kind:

- monotonic sum (``Counter``, ``ObservableCounter``) -> `ray.util.metrics.Counter`,
  incremented by each label set's increase since the last export;
- non-monotonic sum (``UpDownCounter``...) and gauge -> `ray.util.metrics.Gauge`, set;
- explicit-bucket histogram -> `ray.util.metrics.Histogram` with the instrument's
  positive bucket boundaries (Ray refuses others; lower ones fold into the first
  bucket): each bucket's new count is replayed as observations of a value inside
  that bucket. Bucket counts and ``_count`` are exact; ``_sum`` is Ray's usual
  approximation (Ray's agent sums bucket midpoints for every histogram, its own too).

Ray metric objects declare their label keys up front: each is made on its metric's
first data points, with the label keys seen then; a key missing later is sent empty,
and a key never declared is dropped (logged once).

Everything but `RaySink` and `install_ray_metrics` is free of Ray, for tests.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, Final, Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.export import (
    Histogram as HistogramData,
)
from opentelemetry.sdk.metrics.export import (
    Sum as SumData,
)

__all__ = [
    "EXPORT_INTERVAL_S",
    "RayBridgeExporter",
    "RaySink",
    "Sink",
    "bucket_values",
    "install_ray_metrics",
    "ray_boundaries",
    "ray_name",
]

log = logging.getLogger("ghbot.metrics")

#: How often each process pushes its metrics to Ray (Ray's agent scrapes its workers
#: about every 10 s too, so a value shows on the export port within ~15 s).
EXPORT_INTERVAL_S: Final = 5.0

_INVALID = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


class RayCounter(Protocol):
    def inc(self, value: float, tags: dict[str, str]) -> object: ...


class RayGauge(Protocol):
    def set(self, value: float, tags: dict[str, str]) -> object: ...


class RayHistogram(Protocol):
    def observe(self, value: float, tags: dict[str, str]) -> object: ...


class Sink(Protocol):
    """Makes the metric objects points go to (`RaySink`: `ray.util.metrics`'s)."""

    def counter(self, name: str, description: str, keys: tuple[str, ...]) -> RayCounter: ...

    def gauge(self, name: str, description: str, keys: tuple[str, ...]) -> RayGauge: ...

    def histogram(
        self, name: str, description: str, boundaries: list[float], keys: tuple[str, ...]
    ) -> RayHistogram: ...


def ray_name(name: str) -> str:
    """Return `name` as Ray (and Prometheus) take it: letters, digits and ``_``."""
    cleaned = _INVALID.sub("_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def ray_boundaries(bounds: Sequence[float]) -> list[float]:
    """Return the bucket boundaries Ray accepts of `bounds`: the positive ones."""
    return [float(b) for b in bounds if b > 0]


def bucket_values(bounds: Sequence[float]) -> list[float]:
    """Return one value inside each OpenTelemetry bucket of `bounds` (len(bounds) + 1).

    Bucket ``i`` holds ``(bounds[i-1], bounds[i]]``; a finite one gets its midpoint,
    the first ``bounds[0] / 2`` (or below it), the last twice the last boundary (or
    above it). Observed in Ray, with `ray_boundaries(bounds)`, each lands in the Ray
    bucket that contains the OpenTelemetry one.
    """
    if not bounds:
        return [1.0]
    first, last = float(bounds[0]), float(bounds[-1])
    values = [first / 2 if first > 0 else first - 1.0]
    values += [(float(lo) + float(hi)) / 2 for lo, hi in pairwise(bounds)]
    values.append(last * 2 if last > 0 else last + 1.0)
    return values


def _labels(attributes: Mapping[str, Any] | None) -> Labels:
    if not attributes:
        return ()
    return tuple(sorted((str(k), _label_value(v)) for k, v in attributes.items()))


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)
    return str(value)


class _Metric:
    """One Ray metric object and the label keys it was declared with."""

    def __init__(self, kind: str, target: Any, keys: tuple[str, ...]) -> None:
        self.kind = kind
        self.target = target
        self.keys = keys
        self.dropped_warned = False

    def tags(self, name: str, labels: Labels) -> dict[str, str]:
        given = dict(labels)
        if not self.dropped_warned and any(k not in self.keys for k in given):
            self.dropped_warned = True
            extra = sorted(set(given) - set(self.keys))
            log.warning(
                "metric %s: label keys %s came after its first export; dropped", name, extra
            )
        return {k: given.get(k, "") for k in self.keys}


class RayBridgeExporter(MetricExporter):
    """An OpenTelemetry `MetricExporter` that records every data point into a `Sink`.

    It asks the SDK for delta temporality on counters and histograms; cumulative
    points (another reader's view, say) are turned into deltas here, per label set.
    """

    def __init__(self, sink: Sink) -> None:
        super().__init__(
            preferred_temporality={
                Counter: AggregationTemporality.DELTA,
                ObservableCounter: AggregationTemporality.DELTA,
                Histogram: AggregationTemporality.DELTA,
            }
        )
        self._sink = sink
        self._metrics: dict[str, _Metric | None] = {}
        # Last cumulative value (counters, sums) or bucket counts (histograms) and the
        # start time they count from, per (metric, labels): for cumulative points.
        self._last: dict[tuple[str, Labels], tuple[int, Any]] = {}
        self._lock = threading.Lock()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        ok = True
        with self._lock:
            for resource in metrics_data.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        try:
                            self._record(metric.name, metric.description or "", metric.data)
                        except Exception:
                            ok = False
                            log.exception("metric %s: not recorded in Ray", metric.name)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None

    # -- one metric's points --------------------------------------------------------

    def _record(self, otel_name: str, description: str, data: Any) -> None:
        name = ray_name(otel_name)
        points = list(data.data_points)
        if not points:
            return
        if isinstance(data, SumData) and data.is_monotonic:
            counter = self._declare(name, "counter", description, points)
            if counter is None:
                return
            cumulative = data.aggregation_temporality == AggregationTemporality.CUMULATIVE
            for point in points:
                labels = _labels(point.attributes)
                delta = point.value
                if cumulative:
                    delta = self._delta(name, labels, point.start_time_unix_nano, point.value)
                if delta > 0:
                    counter.target.inc(delta, tags=counter.tags(name, labels))
        elif isinstance(data, SumData | Gauge):
            gauge = self._declare(name, "gauge", description, points)
            if gauge is None:
                return
            running = (
                isinstance(data, SumData)
                and data.aggregation_temporality == AggregationTemporality.DELTA
            )
            for point in points:
                labels = _labels(point.attributes)
                value = point.value
                if running:  # a delta up-down sum: keep the total here
                    value = self._total(name, labels, point.value)
                gauge.target.set(value, tags=gauge.tags(name, labels))
        elif isinstance(data, HistogramData):
            bounds = list(points[0].explicit_bounds)
            histogram = self._declare(name, "histogram", description, points, bounds)
            if histogram is None:
                return
            cumulative = data.aggregation_temporality == AggregationTemporality.CUMULATIVE
            values = bucket_values(bounds)
            for point in points:
                labels = _labels(point.attributes)
                counts = list(point.bucket_counts)
                if cumulative:
                    counts = self._bucket_deltas(name, labels, point.start_time_unix_nano, counts)
                tags = histogram.tags(name, labels)
                for value, count in zip(values, counts, strict=False):
                    for _ in range(count):
                        histogram.target.observe(value, tags=tags)
        elif name not in self._metrics:
            self._metrics[name] = None
            log.warning("metric %s: %s points are not sent to Ray", name, type(data).__name__)

    def _declare(
        self,
        name: str,
        kind: str,
        description: str,
        points: Iterable[Any],
        bounds: list[float] | None = None,
    ) -> _Metric | None:
        if name in self._metrics:
            known = self._metrics[name]
            return known if known is not None and known.kind == kind else None
        keys = tuple(sorted({str(k) for p in points for k in (p.attributes or {})}))
        made: _Metric | None = None
        if kind == "counter":
            made = _Metric(kind, self._sink.counter(name, description, keys), keys)
        elif kind == "gauge":
            made = _Metric(kind, self._sink.gauge(name, description, keys), keys)
        elif boundaries := ray_boundaries(bounds or []):
            made = _Metric(kind, self._sink.histogram(name, description, boundaries, keys), keys)
        else:
            log.warning("metric %s: no positive bucket boundary; not sent to Ray", name)
        self._metrics[name] = made
        return made

    def _delta(self, name: str, labels: Labels, start: int, value: float) -> float:
        """Return a cumulative point's increase since the last one of its series."""
        previous = self._last.get((name, labels))
        self._last[(name, labels)] = (start, value)
        if previous is None or previous[0] != start or value < previous[1]:
            return value  # a new series, or a reset: all of it is new
        return float(value - previous[1])

    def _total(self, name: str, labels: Labels, delta: float) -> float:
        _, total = self._last.get((name, labels), (0, 0.0))
        total += delta
        self._last[(name, labels)] = (0, total)
        return float(total)

    def _bucket_deltas(self, name: str, labels: Labels, start: int, counts: list[int]) -> list[int]:
        """Return a cumulative histogram point's new counts per bucket."""
        previous = self._last.get((name, labels))
        self._last[(name, labels)] = (start, counts)
        if previous is None or previous[0] != start or len(previous[1]) != len(counts):
            return counts
        deltas = [now - before for now, before in zip(counts, previous[1], strict=True)]
        return counts if any(d < 0 for d in deltas) else deltas


class RaySink:
    """Makes `ray.util.metrics` objects (in a Ray worker; needs Ray)."""

    def counter(self, name: str, description: str, keys: tuple[str, ...]) -> RayCounter:
        from ray.util.metrics import Counter as RayCounterMetric

        made: RayCounter = RayCounterMetric(name, description=description, tag_keys=keys)
        return made

    def gauge(self, name: str, description: str, keys: tuple[str, ...]) -> RayGauge:
        from ray.util.metrics import Gauge as RayGaugeMetric

        made: RayGauge = RayGaugeMetric(name, description=description, tag_keys=keys)
        return made

    def histogram(
        self, name: str, description: str, boundaries: list[float], keys: tuple[str, ...]
    ) -> RayHistogram:
        from ray.util.metrics import Histogram as RayHistogramMetric

        made: RayHistogram = RayHistogramMetric(
            name, description=description, boundaries=boundaries, tag_keys=keys
        )
        return made


_installed: MeterProvider | None = None
_install_lock = threading.Lock()


def install_ray_metrics(interval_s: float = EXPORT_INTERVAL_S) -> bool:
    """Send this process's OpenTelemetry metrics to Ray's metrics export; once per process.

    Sets the global meter provider to one whose reader pushes every `interval_s`
    seconds into `ray.util.metrics`. Later calls return at once. Returns whether
    ghbot's provider is in force: False if the process had set another one already
    (OpenTelemetry allows one per process), whose exporters then get the metrics.
    """
    global _installed
    if _installed is not None:
        return True
    with _install_lock:
        if _installed is not None:
            return True
        if isinstance(otel_metrics.get_meter_provider(), MeterProvider):
            log.warning("a meter provider is set already; ghbot's metrics go to it, not to Ray")
            return False
        reader = PeriodicExportingMetricReader(
            RayBridgeExporter(RaySink()), export_interval_millis=interval_s * 1000
        )
        # No export at exit: the process's Ray worker is going away with it.
        provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        otel_metrics.set_meter_provider(provider)
        if otel_metrics.get_meter_provider() is not provider:
            provider.shutdown()
            log.warning("a meter provider is set already; ghbot's metrics go to it, not to Ray")
            return False
        _installed = provider
        return True
