"""The app's webhook deliveries: read one, and ask for a redelivery that arrives signed."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp
from ghbot.errors import NotFound
from ghbot.testing import FakeClock, FakeGitHub

SECRET = "It's a Secret to Everybody"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A webhook endpoint that keeps what it receives."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/webhook", received
    await runner.cleanup()


async def test_get_one_delivery_with_its_payload(fake: FakeGitHub, app: GitHubApp) -> None:
    added = fake.add_delivery("issues", {"action": "opened", "number": 1}, installation_id=1)
    delivery = await app.hook_delivery(added["id"])
    assert delivery["guid"] == added["guid"] and delivery["action"] == "opened"
    assert delivery["request"]["payload"] == {"action": "opened", "number": 1}
    with pytest.raises(NotFound):
        await app.hook_delivery(1)


async def test_redelivery_is_recorded_with_the_same_guid(fake: FakeGitHub, app: GitHubApp) -> None:
    failed = fake.add_delivery("issues", {"action": "opened"}, status_code=503)
    await app.redeliver(failed["id"])
    assert fake.redeliveries[0]["guid"] == failed["guid"]
    assert fake.redeliveries[0]["status"] == "OK"
    with pytest.raises(NotFound):
        await app.redeliver(12345)


async def test_redelivery_posts_the_original_payload_signed(
    public_pem: bytes,
    clock: FakeClock,
    auth: AppAuth,
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = receiver
    fake = FakeGitHub(
        public_key_pem=public_pem, clock=clock, webhook_url=url, webhook_secret=SECRET
    )
    async with fake:
        first = await fake.send_delivery("issues", {"action": "opened", "issue": {"number": 7}})
        app = GitHubApp(auth, options=ClientOptions(base_url=fake.url, clock=clock))
        await app.redeliver(first["id"])
    (headers1, body1), (headers2, body2) = received
    assert body1 == body2
    assert headers2["X-GitHub-Delivery"] == headers1["X-GitHub-Delivery"] == first["guid"]
    assert headers2["X-GitHub-Event"] == "issues"
    expected = "sha256=" + hmac.new(SECRET.encode(), body2, hashlib.sha256).hexdigest()
    assert headers2["X-Hub-Signature-256"] == expected
    assert [d["status_code"] for d in fake.deliveries.attempts] == [202, 202]
    assert fake.redeliveries[0]["redelivery"] is True
