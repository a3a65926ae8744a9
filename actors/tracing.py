"""Tracing in the runtime's Ray processes, turned on by the standard `OTEL_*` variables.

Every ghbot Ray process (the ingress replicas, the shard actors, the app-auth actor)
calls `install_tracing()` at start, next to `install_ray_metrics()`. With none of the
variables below set it does nothing, and ghbot's spans stay the API's no-ops. Otherwise
it sets an OpenTelemetry SDK `TracerProvider` that batches spans to the exporters
named:

- ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``console`` and ``otlp``
  (``none`` turns tracing off); ``otlp`` when unset but an OTLP endpoint is set;
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_HEADERS``...: read by the OTLP exporter itself;
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``:
  ``http/protobuf`` (the default) or ``grpc``;
- ``OTEL_SERVICE_NAME`` (default ``ghbot``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: read by the SDK.

The OTLP exporters are not dependencies of ghbot: install
``opentelemetry-exporter-otlp-proto-http`` (or ``-grpc``, or
``opentelemetry-exporter-otlp`` for both) where the workers run. When the package is
missing, the process logs an error saying so and goes on without that exporter.
Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

__all__ = ["install_tracing"]

log = logging.getLogger("ghbot.tracing")

_OTLP_MODULES: Final = {
    "http/protobuf": (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "grpc": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
}


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """Return the exporters the environment asks for ([] for none)."""
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    chosen = [name.strip().lower() for name in names.split(",") if name.strip()]
    return [] if "none" in chosen else chosen


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        log.error("OTEL_TRACES_EXPORTER names %r; ghbot knows console and otlp", name)
        return None
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in _OTLP_MODULES:
        log.error("OTLP protocol %r for traces; ghbot knows http/protobuf and grpc", protocol)
        return None
    module_name, package = _OTLP_MODULES[protocol]
    try:
        module = __import__(module_name, fromlist=["OTLPSpanExporter"])
    except ImportError:
        log.error(
            "traces go nowhere: the OTLP exporter (%s) is not installed in this process's "
            "environment; pip install %s (or opentelemetry-exporter-otlp) where the Ray "
            "workers run",
            protocol,
            package,
        )
        return None
    exporter: SpanExporter = module.OTLPSpanExporter()
    return exporter


def install_tracing(environ: Mapping[str, str] | None = None) -> bool:
    """Set an SDK tracer provider from the `OTEL_*` variables; return whether it did.

    A no-op (False) when no exporter is asked for, when none could be made, or when the
    process already has an SDK tracer provider (the application set its own).
    """
    env = os.environ if environ is None else environ
    names = exporter_names(env)
    if not names:
        return False
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return False
    exporters = [e for e in (_exporter(name, env) for name in names) if e is not None]
    if not exporters:
        return False
    service = env.get("OTEL_SERVICE_NAME") or "ghbot"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans go to %s", ", ".join(names))
    return True
