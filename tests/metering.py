"""An OpenTelemetry metrics SDK for tests: ghbot's instruments, read in memory.

`metered()` binds ghbot's instruments (proxies of the API's global meter) to a
provider of its own, without setting the global provider (which can be set once per
process, and which the Ray bridge's tests may want), and returns a `Metered` that
reports what changed since it was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics._internal import _PROXY_METER_PROVIDER
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)

import ghbot.metrics

_reader = InMemoryMetricReader()
_provider = MeterProvider(metric_readers=[_reader])

Labels = frozenset[tuple[str, Any]]
#: name → labels → (a counter's or gauge's value, or a histogram's count; its sum).
Points = dict[str, dict[Labels, tuple[float, float]]]


def collect() -> tuple[Points, dict[str, str]]:
    """Read every ghbot point now; also each metric's kind (`sum`, `histogram`, `gauge`)."""
    points: Points = {}
    kinds: dict[str, str] = {}
    data = _reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != "ghbot":
                continue
            for metric in scope.metrics:
                into = points.setdefault(metric.name, {})
                if isinstance(metric.data, Histogram):
                    kinds[metric.name] = "histogram"
                    for h in metric.data.data_points:
                        into[frozenset((h.attributes or {}).items())] = (h.count, h.sum)
                    continue
                kinds[metric.name] = "gauge" if isinstance(metric.data, Gauge) else "sum"
                assert isinstance(metric.data, Sum | Gauge)
                for p in metric.data.data_points:
                    assert isinstance(p, NumberDataPoint)
                    into[frozenset((p.attributes or {}).items())] = (p.value, p.value)
    return points, kinds


class Metered:
    """What ghbot's instruments recorded since this object was made."""

    def __init__(self) -> None:
        self.before, _ = collect()

    def delta(self, name: str) -> dict[Labels, float]:
        """Each label set's increase (a histogram's: its count); a gauge's value now."""
        now, kinds = collect()
        before = self.before.get(name, {})
        changed: dict[Labels, float] = {}
        for labels, (value, _) in now.get(name, {}).items():
            if kinds[name] == "gauge":
                changed[labels] = value
            elif value != before.get(labels, (0, 0))[0]:
                changed[labels] = value - before.get(labels, (0, 0))[0]
        return changed

    def count(self, name: str, **labels: str) -> float:
        """The increase (or gauge value) for exactly `labels`; 0 when there is none."""
        return self.delta(name).get(frozenset(labels.items()), 0)

    def seconds(self, name: str, **labels: str) -> float:
        """A histogram's increase in sum for `labels`."""
        now, _ = collect()
        key = frozenset(labels.items())
        return now.get(name, {}).get(key, (0, 0))[1] - self.before.get(name, {}).get(key, (0, 0))[1]


def metered() -> Metered:
    """Bind ghbot's instruments to the test provider; return what records from now on."""
    # A proxy meter binds its instruments to whichever provider it is told of last.
    _PROXY_METER_PROVIDER.on_set_meter_provider(_provider)
    ghbot.metrics._lowest.clear()
    return Metered()


def labels_of(points: Mapping[str, Mapping[Labels, Any]]) -> dict[str, set[str]]:
    """Each metric's label keys among `points`."""
    return {name: {key for labels in by for key, _ in labels} for name, by in points.items()}


#: The values each bounded label may take; `resource` and `event` are checked apart.
_VALUES: Mapping[str, frozenset[str]] = {
    "reason": frozenset(
        {
            *ghbot.metrics.JWT_FAILURE_REASONS,
            *ghbot.metrics.RETRY_REASONS,
            *ghbot.metrics.PARSE_ERROR_REASONS,
            *ghbot.metrics.UNAVAILABLE_REASONS,
        }
    ),
    "outcome": frozenset({*ghbot.metrics.OUTCOMES, *ghbot.metrics.HOLD_OUTCOMES}),
    "result": frozenset({"hit", "miss"}),
    "kind": frozenset({"proactive", "reactive"}),
    "type": frozenset(ghbot.metrics.AUTH_FAILURE_TYPES),
    "method": frozenset(ghbot.metrics.METHODS),
    "status_class": frozenset(ghbot.metrics.STATUS_CLASSES),
}
_RESOURCES = frozenset({"core", "search", "graphql", "code_search", "integration_manifest"})


def assert_bounded() -> None:
    """Check every point recorded so far: known metrics, allowed labels, bounded values."""
    from ghbot.models import KNOWN_EVENTS

    points, _ = collect()
    assert points, "nothing was recorded"
    for name, by_labels in points.items():
        assert name in ghbot.metrics.LABELS, f"{name} is not a declared metric"
        allowed = ghbot.metrics.LABELS[name]
        for labels in by_labels:
            keys = {key for key, _ in labels}
            assert keys <= allowed, f"{name} has labels {keys - allowed} beyond {allowed}"
            for key, value in labels:
                if key == "event":
                    assert value in KNOWN_EVENTS or value == "other", (name, value)
                elif key == "resource":
                    assert value in _RESOURCES or value.isidentifier(), (name, value)
                else:
                    assert value in _VALUES[key], (name, key, value)
