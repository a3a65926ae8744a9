"""`telemetry.current_traceparent` and `joined`: a span's context carried to another
process (the app-auth actor) and its spans made children of it there.

The SDK's providers here are local (not set globally): each test makes its own tracer.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased

from ghbot import telemetry


def _tracer(sampler: Sampler | None = None) -> tuple[trace.Tracer, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider.get_tracer("test"), memory


def _sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)  # the flags' sampled bit


def test_a_span_elsewhere_joins_the_trace_its_traceparent_names() -> None:
    here, _ = _tracer()
    there, spans = _tracer()
    assert telemetry.current_traceparent() == ""  # outside any span
    with here.start_as_current_span("GitHub installation token") as lookup:
        header = telemetry.current_traceparent()
    assert _sampled(header)
    with telemetry.joined(header), there.start_as_current_span("jwt sign"):
        pass
    with telemetry.joined(""), there.start_as_current_span("alone"):
        pass
    signed, alone = spans.get_finished_spans()
    assert signed.context.trace_id == lookup.get_span_context().trace_id
    assert signed.parent is not None and signed.parent.span_id == lookup.get_span_context().span_id
    assert alone.parent is None and alone.context.trace_id != signed.context.trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # `joined` detached what it attached


def test_a_span_the_sampler_dropped_is_dropped_elsewhere_too() -> None:
    """Its context travels (its flags say not sampled): the other side's parent-based
    sampler drops the children, where "" would have started a new trace there, sampled
    on its own."""
    here, _ = _tracer(ALWAYS_OFF)
    there, spans = _tracer(ParentBased(TraceIdRatioBased(1.0)))
    with here.start_as_current_span("GitHub installation token"):
        header = telemetry.current_traceparent()
    assert header and not _sampled(header)
    with telemetry.joined(header), there.start_as_current_span("jwt sign"):
        pass
    assert spans.get_finished_spans() == ()


def test_a_delivery_whose_ingress_span_was_dropped_is_dropped_in_the_shard() -> None:
    """The ingress hands its `webhook` span's context to the shard with the delivery:
    for a span the sampler dropped it handed none, and the shard's spans started a
    trace of their own, sampled again (with `parentbased_traceidratio` at 0.1, about
    as many orphaned shard-side traces as whole ones)."""
    here, _ = _tracer(ALWAYS_OFF)
    there, spans = _tracer(ParentBased(TraceIdRatioBased(1.0)))
    with here.start_as_current_span("webhook") as span:
        header = telemetry.traceparent(span)
    assert header and not _sampled(header)
    with telemetry.joined(header), there.start_as_current_span("issues.opened"):
        pass
    assert spans.get_finished_spans() == ()
    assert telemetry.traceparent(trace.INVALID_SPAN) == ""  # no SDK set: nothing to hand


def test_the_docstring_names_every_span_attribute() -> None:
    """The module's docstring lists the attribute names its constants hold, all of them."""
    names = [
        telemetry.EVENT_TYPE,
        telemetry.DELIVERY_ID,
        telemetry.INSTALLATION_ID,
        telemetry.REPOSITORY,
        telemetry.API_ENDPOINT,
        telemetry.API_METHOD,
        telemetry.RATE_LIMIT_REMAINING,
        telemetry.STATUS_CODE,
        telemetry.TOKEN_TYPE,
        telemetry.CACHE_HIT,
        telemetry.HANDLER,
        telemetry.ERROR_TYPE,
    ]
    assert telemetry.__doc__ is not None
    assert [name for name in names if f"``{name}``" not in telemetry.__doc__] == []
