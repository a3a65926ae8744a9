"""Tracing through the OpenTelemetry API: spans cost next to nothing until an SDK is set.

This module uses only `opentelemetry-api`; `opentelemetry-sdk` is a dependency of
ghbot as well (the Ray runtime's metrics bridge and tracing use it). To record the
spans, set an SDK tracer provider (``trace.set_tracer_provider``) with an exporter in
your process; the Ray runtime's processes set one from the standard ``OTEL_*``
variables (`actors.tracing.install_tracing`, docs/operations.md "Traces"):

- a root span per webhook at the ingress (``webhook issues``, kind SERVER) around the
  verification and the journal; its W3C ``traceparent`` travels with the delivery
  (`DeliveryReceived.trace`) to the shard;
- one span per delivery, named after the event (``issues.opened``), around its handlers
  (the runtime's installation actors open it), a child of the ingress's span;
- a span per handler run (``handler <name>``);
- a span per JWT signed (``jwt sign``, ``auth.token_type=jwt``);
- a child span per GitHub request (``GitHub POST``), with the endpoint, the status and
  the rate limit left;
- a child span per installation token asked of the cache, saying whether it was a hit.

Attribute names are the constants below: ``github.event_type``, ``github.delivery_id``,
``github.installation_id``, ``github.repository``, ``github.api.endpoint``,
``github.api.method``, ``github.rate_limit.remaining``, ``http.response.status_code``,
``auth.token_type``, ``auth.cache_hit``, ``ghbot.handler`` and ``error.type``
(docs/operations.md, "Traces", describes the spans). No span ever carries a token, a
key or a payload. A span an exception leaves says only the exception's type (its
status and ``error.type``): OpenTelemetry's default would add the message and the
traceback, which can hold a payload's text or a URL's query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["current_traceparent", "joined", "parent_context", "span", "traceparent", "tracer"]

#: ghbot's tracer; a proxy until the application sets a tracer provider.
tracer: Final = trace.get_tracer("ghbot")

EVENT_TYPE: Final = "github.event_type"
DELIVERY_ID: Final = "github.delivery_id"
INSTALLATION_ID: Final = "github.installation_id"
REPOSITORY: Final = "github.repository"
API_ENDPOINT: Final = "github.api.endpoint"
API_METHOD: Final = "github.api.method"
RATE_LIMIT_REMAINING: Final = "github.rate_limit.remaining"
STATUS_CODE: Final = "http.response.status_code"
TOKEN_TYPE: Final = "auth.token_type"  # noqa: S105 - an attribute name, not a token
CACHE_HIT: Final = "auth.cache_hit"
HANDLER: Final = "ghbot.handler"
ERROR_TYPE: Final = "error.type"

_W3C: Final = TraceContextTextMapPropagator()
_NO_SPAN: Final = nullcontext(trace.INVALID_SPAN)


def span(
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    context: Context | None = None,
) -> AbstractContextManager[trace.Span]:
    """Start a current span of ghbot's tracer; nothing at all while no provider is set.

    The API's no-op span still costs a context switch (microseconds); on the hot path
    (the ingress, each handler run, each GitHub request and token lookup) this skips
    even that until an SDK is installed.
    """
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return _NO_SPAN
    return _recorded(name, context, kind)


@contextmanager
def _recorded(name: str, context: Context | None, kind: trace.SpanKind) -> Iterator[trace.Span]:
    """A current span that an exception marks with its type only, not its text."""
    with tracer.start_as_current_span(
        name, context=context, kind=kind, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except Exception as exc:  # as OpenTelemetry's: a cancellation is not an error
            current.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def traceparent(span: trace.Span) -> str:
    """Return the W3C `traceparent` of `span` ("" with no SDK set): of a span the
    sampler dropped too, whose flags say so, so that what it leads to elsewhere is
    dropped as well rather than sampled again as a trace of its own."""
    return _header(span) if span.get_span_context().is_valid else ""


def parent_context(header: str) -> Context | None:
    """Return the context a `traceparent` header carries (None for "": a new trace)."""
    return _W3C.extract({"traceparent": header}) if header else None


def current_traceparent() -> str:
    """Return the `traceparent` of the current span ("" outside one, or with no SDK set):
    what a call to another process carries so that the spans it starts join the trace,
    or, for a span the sampler dropped, are dropped too (its flags say so)."""
    span = trace.get_current_span()
    return _header(span) if span.get_span_context().is_valid else ""


@contextmanager
def joined(header: str) -> Iterator[None]:
    """Make the span a `traceparent` names the current one inside (nothing for ""): the
    spans started there are its children, in its trace, though it lives elsewhere."""
    parent = parent_context(header)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def _header(span: trace.Span) -> str:
    """The W3C `traceparent` naming `span`."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")
