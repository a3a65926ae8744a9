"""One webhook through an ingress replica without Ray: what it sends the shard and logs.

`WebhookIngress.webhook` runs on Starlette requests; the shard is a stand-in that keeps
what it is sent and answers as a shard that journaled it (or had it already: GitHub's
redelivery).
"""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import pytest

from actors.ray.ingress import read_body
from actors.wire import Status
from ghbot import logs
from ghbot.errors import PayloadTooLarge
from tests.runtime.conftest import (
    VSHARDS,
    AcceptingBatcher,
    bare_ingress,
    payload,
    webhook_request,
)
from tests.runtime.test_ingress_fuzz import raw_request
from tests.runtime.test_metrics import Gated


async def test_each_delivery_is_stamped_with_its_arrival_and_the_deployments_version() -> None:
    """The shard measures a delivery's time to handled from `received_at`, and judges
    a delivery sent by a replica of another deployment by `version`."""
    batcher = AcceptingBatcher()
    replica = bare_ingress(Gated, batcher)
    replica.settings = SimpleNamespace(vshards=VSHARDS, shards=1, version="v2")  # type: ignore[assignment]
    before = time.time()
    answer = await replica.webhook(webhook_request(payload("issues.opened")))
    after = time.time()
    assert answer.status_code == 202
    [sent] = batcher.items
    assert before <= sent.received.received_at <= after
    assert sent.version == "v2"


async def test_a_redelivered_webhook_is_answered_200_and_logged_as_received(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = bare_ingress(Gated, AcceptingBatcher(Status.DUPLICATE))  # had it
    replica.received_logged = logs.LogLimiter(burst=2, per=1.0, clock=lambda: 0.0)
    monkeypatch.setattr(logging.getLogger("ghbot"), "propagate", True)
    request = webhook_request(payload("issues.opened"), x_github_delivery="redelivered-1")
    with caplog.at_level(logging.INFO, logger="ghbot.ingress"):
        answer = await replica.webhook(request)
    assert answer.status_code == 200
    assert json.loads(bytes(answer.body)) == {"delivery": "redelivered-1", "status": "duplicate"}
    assert [r.getMessage() for r in caplog.records if r.name == "ghbot.ingress"] == [
        "received issues.opened"
    ]


async def test_a_refusal_after_the_guid_was_read_names_the_delivery() -> None:
    """GitHub's delivery log shows the answer's body: it names the delivery refused."""
    body = json.dumps({"action": "opened", "installation": {"id": -1}}).encode()
    request = webhook_request(body, x_github_delivery="poison-1")
    answer = await bare_ingress(Gated, AcceptingBatcher()).webhook(request)
    assert answer.status_code == 400
    assert json.loads(bytes(answer.body))["delivery"] == "poison-1"


async def test_a_body_without_length_may_reach_the_cap_but_not_pass_it() -> None:
    assert await read_body(raw_request([], [b"12345", b"67890"]), limit=10) == b"1234567890"
    with pytest.raises(PayloadTooLarge, match="while being read"):
        await read_body(raw_request([], [b"12345", b"678901"]), limit=10)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/webhooks", "POST"), ("POST", "/healthz", "GET"), ("DELETE", "/readyz/", "GET")],
)
async def test_a_route_asked_with_the_wrong_method_is_405_naming_the_one_it_takes(
    method: str, path: str, allow: str
) -> None:
    """Someone opening the webhook URL in a browser learns it is there, and for POST."""
    request = webhook_request(b"")
    request.scope.update(method=method, path=path)
    answer = await bare_ingress(Gated, AcceptingBatcher()).__call__(request)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == allow
    assert json.loads(bytes(answer.body)) == {"error": f"{path.rstrip('/')} takes {allow} only"}


async def test_a_path_the_ingress_does_not_have_is_404() -> None:
    request = webhook_request(b"")
    request.scope.update(method="GET", path="/hooks")
    answer = await bare_ingress(Gated, AcceptingBatcher()).__call__(request)
    assert answer.status_code == 404
