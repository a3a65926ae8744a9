"""Traces from a running deployment: the `OTEL_*` variables in Ray's workers, one trace
per delivery across the ingress, the shard and the app-auth actor.

The deployment gets the variables close to the way docs/operations.md tells an operator
to give them on a running cluster: in a `runtime_env`, here the ingress deployment's
(Serve merges an application's into each deployment's: by reading Serve's
`application_state.py`, not tested), which the actors the ingress creates inherit. The
collector is a real HTTP server in this process that decodes what the OTLP exporter
posts (`http/protobuf`), as a collector would.
"""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

from tests.cluster.conftest import (
    SECRET,
    comments,
    eventually,
    install,
    payload,
    send,
    session_worker_log_lines,
)


class Collector:
    """An OTLP/HTTP traces endpoint: keeps every span it is sent, with its service."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        export = otlp.ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "service": resource.get("service.name"),
                            "attributes": {a.key: a.value for a in span.attributes},
                        }
                    )
        answer = otlp.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def named(self, name: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"] == name]


@pytest.fixture
async def collector() -> Any:
    from tests.net import free_port

    found = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_one_delivery_is_one_trace_across_the_deployments_processes(
    deploy: Any, fake: Any, collector: Any, pem_pkcs8: bytes
) -> None:
    found, endpoint = collector
    service = f"ghbot-traced-{uuid.uuid4().hex[:6]}"
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's batches, every 0.1 s, not 5 s
    }
    install(fake, 1701, "traced/repo")
    app = deploy(
        "tests.cluster.bots:Greeter",
        serve_options={"ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": env}}},
    )
    guid = str(uuid.uuid4())
    data = payload("issues.opened", installation=1701, repo="traced/repo", issue__number=1)
    status, _ = await send(app.url, "issues", data, guid=guid)
    assert status == 202
    await eventually(lambda: any(guid in c["body"] for c in comments(fake, "traced/repo")))

    def whole() -> bool:  # each process sends its spans when they end, in batches
        names = [span["name"] for span in found.spans]
        every = {"webhook issues", "issues.opened", "handler welcome", "jwt sign"}
        lookup = "GitHub installation token"
        return every | {lookup} <= set(names) and names.count("GitHub POST") >= 2

    await eventually(whole, within=30)
    [root] = found.named("webhook issues")
    assert root["parent"] == ""  # GitHub sends no trace context: the ingress starts it
    assert root["attributes"]["github.delivery_id"].string_value == guid
    same = [span for span in found.spans if span["trace"] == root["trace"]]
    by_id = {span["id"]: span for span in same}

    def ancestors(span: dict[str, Any]) -> list[str]:
        names = []
        while span["parent"]:
            span = by_id[span["parent"]]  # a missing parent: the trace is broken
            names.append(span["name"])
        return names

    [delivery] = [s for s in same if s["name"] == "issues.opened"]
    assert ancestors(delivery) == ["webhook issues"]  # ingress → shard, over the channel
    [handler] = [s for s in same if s["name"] == "handler welcome"]
    assert ancestors(handler) == ["issues.opened", "webhook issues"]
    posts = [s for s in same if s["name"] == "GitHub POST"]
    [comment] = [s for s in posts if "GitHub installation token" not in ancestors(s)]
    assert "handler welcome" in ancestors(comment)
    # The installation token the comment needed: asked of the shard's cache, minted by
    # the app-auth actor (its JWT signed and exchanged there), all in the same trace.
    [lookup] = [s for s in same if s["name"] == "GitHub installation token"]
    assert ancestors(lookup)[-3:] == ["handler welcome", "issues.opened", "webhook issues"]
    [signed] = [s for s in same if s["name"] == "jwt sign"]
    assert "GitHub installation token" in ancestors(signed)
    exchange = [s for s in posts if "GitHub installation token" in ancestors(s)]
    assert len(exchange) == 1
    assert {span["service"] for span in found.spans} == {service}

    # No span carries a secret: the webhook secret, the key, a signature, a token, a JWT.
    everything = b"".join(found.bodies)
    for secret in [SECRET.encode(), pem_pkcs8[40:80], b"sha256=", b"ghs_", b"eyJ"]:
        assert secret not in everything

    # `console` too: the same spans as JSON in the workers' stdout (their .out logs).
    assert session_worker_log_lines(f'"trace_id": "0x{root["trace"]}"', stream="out")
