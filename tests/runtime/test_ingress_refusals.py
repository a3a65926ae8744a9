"""The ingress logs what it refuses: a forged signature (401), a malformed body (400).

`WebhookIngress.webhook` runs for real on a Starlette request, without Ray: a refusal
happens before any shard is reached, so the replica needs only its webhook secrets.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import actors.ray.ingress as ingress_module
from ghbot import logs
from ghbot.webhooks import sign
from tests.runtime.conftest import WEBHOOK_SECRET as SECRET
from tests.runtime.conftest import bare_ingress, webhook_request

BODY = json.dumps({"action": "opened", "installation": {"id": 7}}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fresh refusal limiter, with the deployed one's settings, on a clock of our own."""
    clock = Clock()
    deployed = ingress_module._REFUSALS_LOGGED
    limiter = logs.LogLimiter(burst=deployed.burst, per=deployed.per, clock=clock)
    monkeypatch.setattr(ingress_module, "_REFUSALS_LOGGED", limiter, raising=False)
    return clock


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The replica's logging (`logs.configure`, JSON) into a buffer; restored afterwards."""
    out = io.StringIO()
    ghbot = logging.getLogger("ghbot")
    root = logging.getLogger()
    before = (list(ghbot.handlers), ghbot.level, ghbot.propagate, list(root.handlers), root.level)
    logs.configure("INFO", "json", stream=out)
    yield out
    ghbot.handlers[:], ghbot.level, ghbot.propagate = before[0], before[1], before[2]
    root.handlers[:], root.level = before[3], before[4]


async def post(body: bytes, *, guid: str, secret: str = SECRET) -> tuple[int, str]:
    signature = sign(body, secret)
    request = webhook_request(body, x_github_delivery=guid, x_hub_signature_256=signature)
    answer = await bare_ingress().webhook(request)
    return answer.status_code, signature


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_forged_signature_is_logged_with_its_guid_never_its_signature(
    clock: Clock, captured: io.StringIO
) -> None:
    guid = str(uuid.uuid4())
    status, signature = await post(BODY, guid=guid, secret="not-the-secret")
    assert status == 401
    [line] = lines(captured)
    assert (line["level"], line["logger"]) == ("warning", "ghbot.ingress")
    assert (line["event_id"], line["error_type"], line["http_status"]) == (
        guid,
        "InvalidSignature",
        401,
    )
    assert line["message"] == (
        f"refused delivery {guid} with 401: X-Hub-Signature-256 matches no configured secret"
    )
    assert signature[7:] not in captured.getvalue() and SECRET not in captured.getvalue()


async def test_a_malformed_body_is_logged_with_the_reason(
    clock: Clock, captured: io.StringIO
) -> None:
    guid = str(uuid.uuid4())
    status, _ = await post(b"{not json", guid=guid)
    assert status == 400
    [line] = lines(captured)
    assert (line["event_id"], line["error_type"], line["http_status"]) == (
        guid,
        "MalformedPayload",
        400,
    )
    assert line["message"].startswith(f"refused delivery {guid} with 400: webhook body is not")


async def test_refusals_are_rate_limited_per_kind_and_the_held_back_counted(
    clock: Clock, captured: io.StringIO
) -> None:
    for n in range(15):
        assert (await post(BODY, guid=f"forged-{n}", secret="wrong"))[0] == 401
    assert (await post(b"{", guid="malformed-1"))[0] == 400  # its own budget
    got = lines(captured)
    assert [line["event_id"] for line in got] == [f"forged-{n}" for n in range(10)] + [
        "malformed-1"
    ]
    clock.now += 6.0  # one more line of a kind every 6 s
    assert (await post(BODY, guid="forged-15", secret="wrong"))[0] == 401
    last = lines(captured)[-1]
    assert (last["event_id"], last["suppressed"]) == ("forged-15", 5)
    assert last["message"].endswith("(5 more InvalidSignature refusals were not logged)")
    assert "suppressed" not in got[0]


async def test_a_guid_is_kept_short_and_printable(clock: Clock, captured: io.StringIO) -> None:
    claimed = "é" * 10 + "x" * 100
    assert (await post(BODY, guid=claimed, secret="wrong"))[0] == 401
    [line] = lines(captured)
    assert line["event_id"] == "?" * 20 + "x" * 43 + "…"


async def test_a_guid_as_long_as_the_limit_is_shown_whole_and_a_longer_one_cut(
    clock: Clock, captured: io.StringIO
) -> None:
    for claimed in ("g" * 64, "g" * 65):
        assert (await post(BODY, guid=claimed, secret="wrong"))[0] == 401
    assert [line["event_id"] for line in lines(captured)] == ["g" * 64, "g" * 63 + "…"]


async def test_received_webhooks_are_logged_at_info_through_the_replica_sampled(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GHBOT_LOG_RECEIVED_PER_SECOND through `webhook()`: the replica's limiter (2 a
    second, as `_received_limiter(2)` makes it, on a clock that stands still here)
    lets that many lines through."""
    from tests.runtime.conftest import payload
    from tests.runtime.test_metrics import Gated

    made = ingress_module._received_limiter(2)
    assert made is not None and (made.burst, made.per) == (2, 1.0)
    replica = bare_ingress(Gated)
    replica.received_logged = logs.LogLimiter(burst=2, per=1.0, clock=lambda: 0.0)
    monkeypatch.setattr(logging.getLogger("ghbot"), "propagate", True)
    body = payload("issues.opened")
    with caplog.at_level(logging.INFO, logger="ghbot.ingress"):
        for _ in range(3):
            assert (await replica.webhook(webhook_request(body))).status_code == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "ghbot.ingress"]
    assert lines == ["received issues.opened"] * 2  # the third held back: 2 a second
    replica.received_logged = ingress_module._received_limiter(0)  # 0: none logged
    with caplog.at_level(logging.INFO, logger="ghbot.ingress"):
        assert (await replica.webhook(webhook_request(body))).status_code == 202
    assert len([r for r in caplog.records if r.name == "ghbot.ingress"]) == 2
