"""An OpenTelemetry SDK for tests: ghbot's spans, recorded in memory.

The global tracer provider can be set once per process; `recorder()` sets it on first
use and clears what earlier tests recorded.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter = InMemorySpanExporter()


def recorder() -> InMemorySpanExporter:
    """Return the exporter every ghbot span ends in, emptied."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    return _exporter
