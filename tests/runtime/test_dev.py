"""`ghbot dev`: the bot on POST /webhooks in one process (no Ray), .env, reload, smee relay."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from actors import InstallationActor, on
from actors.dev import DevServer, load_env_file, relay
from actors.settings import dedup_window
from examples.greeter import Greeter
from ghbot import cli
from ghbot.config import Settings
from ghbot.errors import ConfigError, JournalUnavailable
from ghbot.events import Event
from ghbot.logs import TextFormatter
from ghbot.redelivery import GHES_WINDOW, GITHUB_WINDOW
from ghbot.testing import FakeGitHub, app_key_pair, example_payload
from ghbot.webhooks import RETRY_AFTER, sign
from tests.metering import assert_bounded, metered
from tests.net import free_port

SECRET = "dev-secret"
HELLO = "/repos/Codertocat/Hello-World"


def signed(body: bytes, guid: str, secret: str = SECRET) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": "issues",
        "x-github-delivery": guid,
        "x-hub-signature-256": sign(body, secret),
    }


def smee_event(number: int, guid: str) -> bytes:
    """A smee event's data for a signed `issues.opened` about issue `number`: the body
    as raw JSON, GitHub's headers beside it."""
    body = json.dumps(example_payload("issues.opened", issue__number=number)).encode()
    return b'{"body":' + body + b"," + json.dumps(signed(body, guid))[1:].encode()


def frames_then_silence(
    *frames: bytes, silence: float
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An event stream's handler: `frames` as written, then `silence` seconds of none."""

    async def stream(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        for frame in frames:
            await answer.write(frame)
        await asyncio.sleep(silence)
        return answer

    return stream


@contextlib.asynccontextmanager
async def channel(
    stream: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """Serve `stream` as a webhook proxy channel on 127.0.0.1; yield its URL."""
    app = web.Application()
    app.router.add_get("/channel", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/channel"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def dev_server(
    bot: type[InstallationActor], journal_dir: Path
) -> AsyncIterator[tuple[DevServer, FakeGitHub]]:
    """A dev server of `bot` on a free port, against a fake GitHub where the app is
    installed (installation 1) on Codertocat/Hello-World."""
    private, public = app_key_pair()
    async with FakeGitHub(app_id=5, public_key_pem=public) as fake:
        fake.add_installation(1, "Codertocat", ["Hello-World"])
        settings = Settings(
            app_id=5, private_key=private, webhook_secrets=(SECRET,), api_url=fake.url
        )
        dev = await DevServer(bot, settings, journal_dir=journal_dir, port=0).start()
        try:
            yield dev, fake
        finally:
            await dev.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[DevServer, FakeGitHub]]:
    async with dev_server(Greeter, tmp_path / "j") as (dev, fake):
        for n in range(3):
            fake.add_issue("Codertocat/Hello-World", f"issue {n + 1}")
        yield dev, fake


async def test_signed_deliveries_are_journaled_and_handled(
    server: tuple[DevServer, FakeGitHub],
) -> None:
    dev, fake = server
    body = json.dumps(example_payload("issues.opened", issue__number=2)).encode()
    async with aiohttp.ClientSession() as http:
        sent = [
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "g-1")),
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "g-1")),
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "g-2", "x")),
        ]
        answers = [(r.status, await r.json()) for r in sent]
        health = await (await http.get(f"{dev.url}/healthz")).json()
    assert answers[0] == (202, {"delivery": "g-1", "status": "accepted"})
    assert answers[1] == (200, {"delivery": "g-1", "status": "duplicate"})
    assert answers[2][0] == 401 and "Signature" in answers[2][1]["error"]
    assert health == {"status": "alive", "pid": os.getpid()}
    assert dev.shard is not None
    await dev.shard.wait_idle()
    [comment] = fake.requests_to(f"{HELLO}/issues/2/comments", "POST")
    assert comment.json["body"] == "Thanks for opening this issue, @Codertocat!"


async def test_a_delivery_the_journal_cannot_take_is_answered_503_to_send_again(
    server: tuple[DevServer, FakeGitHub],
) -> None:
    """As the deployment's ingress answers it: the journal gone (here, closed), the
    delivery is not known to be journaled (it was a 500 from aiohttp, a traceback)."""
    dev, _ = server
    assert dev._journal is not None
    await dev._journal.close()
    m = metered()
    body = json.dumps(example_payload("issues.opened", issue__number=2)).encode()
    async with aiohttp.ClientSession() as http:
        sent = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "g-9"))
        answer = await sent.json()
    assert sent.status == 503 and sent.headers["Retry-After"] == str(RETRY_AFTER)
    assert answer == {"error": "the journal could not take it (JournalUnavailable); retry"}
    assert m.count("ghbot_webhooks_unavailable_total", reason="shard_failed") == 1


async def test_the_dev_server_counts_webhooks_received_and_refused(
    server: tuple[DevServer, FakeGitHub],
) -> None:
    """Outside Ray the webhook metrics are recorded too (any OpenTelemetry reader reads
    them): only the Ray ingress counted them, and `ghbot dev` recorded none."""
    from ghbot.webhooks import MAX_PAYLOAD_BYTES

    dev, _ = server
    m = metered()
    body = json.dumps(example_payload("issues.opened", issue__number=2)).encode()
    big = b'{"pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    async with aiohttp.ClientSession() as http:
        sent = [
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "m-1")),
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "m-1")),
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "m-2", "x")),
            await http.post(f"{dev.url}/webhooks", data=big, headers=signed(big, "m-3")),
        ]
    assert [answer.status for answer in sent] == [202, 200, 401, 413]
    issues = frozenset({("event", "issues")})
    assert m.delta("ghbot_webhooks_received_total") == {issues: 2}  # the duplicate too
    assert m.count("ghbot_webhook_signature_failures_total") == 1
    too_large = frozenset({("reason", "too_large")})
    assert m.delta("ghbot_webhook_parse_errors_total") == {too_large: 1}
    assert_bounded()


async def test_the_dev_server_remembers_guids_for_githubs_window_of_its_api_url(
    server: tuple[DevServer, FakeGitHub], tmp_path: Path
) -> None:
    """Not GitHub's 3 days whatever the API: the fake's URL is another host, as GitHub
    Enterprise Server's is, which keeps deliveries 7 days (as a deployment does)."""
    dev, _fake = server
    assert dev.shard is not None and dev.shard.dedup_window == GHES_WINDOW == 7 * 86400
    github = Settings(app_id=5, private_key=None, webhook_secrets=(SECRET,))
    assert DevServer(Greeter, github, journal_dir=tmp_path / "g").dedup_window == GITHUB_WINDOW
    assert dedup_window(github.api_url, "90000") == 90000
    with pytest.raises(ConfigError, match=r"GHBOT_DEDUP_WINDOW='60' must be a number from 21600"):
        dedup_window(github.api_url, "60")


def test_the_command_refuses_a_dedup_window_shorter_than_the_sweepers_look_back(
    tmp_path: Path,
) -> None:
    private, _public = app_key_pair()
    env = _dev_project(tmp_path, private, "https://api.github.com")
    with (tmp_path / ".env").open("a") as env_file:
        env_file.write("GHBOT_DEDUP_WINDOW=60\n")
    command = [sys.executable, "-m", "ghbot.cli", "dev", "--no-reload", "--bot", "devbot:DevBot"]
    done = subprocess.run(
        [*command, "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ghbot: error: GHBOT_DEDUP_WINDOW='60' must be a number from 21600" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("pad", [0, 3_000_000])
async def test_the_relay_keeps_a_smee_body_byte_for_byte(
    server: tuple[DevServer, FakeGitHub], pad: int
) -> None:
    """Any size the ingress takes: a smee event is one `data:` line, which aiohttp's
    line reader refused past about 512 KiB (the relay reconnected for ever)."""
    dev, fake = server
    # A body whose bytes a JSON round trip would change: escapes, spacing, key order.
    data = example_payload("issues.opened", issue__number=3)
    data["issue"]["title"] = "caf\u00e9 \u2615 a/b"
    data["issue"]["body"] = "x" * pad
    text = json.dumps(data, ensure_ascii=True, separators=(", ", ": "))
    raw = text.replace("a/b", "a\\/b").encode()
    assert b"\\u00e9" in raw and b"a\\/b" in raw
    assert json.dumps(json.loads(raw), separators=(",", ":")).encode() != raw
    headers = {**signed(raw, "g-smee"), "host": "smee.io", "x-github-hook-id": "42"}
    event = b'{"body":' + raw + b',"query":{},"timestamp":1,' + json.dumps(headers)[1:].encode()

    stream = frames_then_silence(
        b"event: ready\ndata: {}\n\n",
        b"event: ping\ndata: {}\n\n",
        b"data: " + event + b"\n\n",
        silence=5,
    )
    async with channel(stream) as source:
        relayed = relay(source, f"{dev.url}/webhooks", max_events=1, retry_after=0.1)
        assert await asyncio.wait_for(relayed, 30) == 1
    assert dev.shard is not None
    await dev.shard.wait_idle()
    assert fake.requests_to(f"{HELLO}/issues/3/comments", "POST")
    # Journaled as sent: the very bytes GitHub signed.
    journal = dev.shard.journal
    records = await journal.read("inst-1", 1, shard=0)
    received = [r for r in records if r.type == "DeliveryReceived"]
    assert any(raw in r.data for r in received)


def test_the_reloader_watches_the_code_not_venvs_data_or_hidden_directories(
    tmp_path: Path,
) -> None:
    from actors.cli import _sources

    for path in (
        "bot.py",
        "pkg/handlers.py",
        "pkg/notes.txt",
        "env/lib/site.py",  # a virtual environment not called venv: pyvenv.cfg says so
        ".venv/lib/site.py",
        "data/dev-journal/x.py",
        ".git/hooks/h.py",
        "node_modules/m/x.py",
        "pkg/__pycache__/handlers.py",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    env_file = tmp_path / ".env"
    env_file.write_text("GHBOT_APP_ID=1\n")
    watched = _sources(tmp_path, env_file)
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in watched) == [
        ".env",
        "bot.py",
        "pkg/handlers.py",
    ]


def test_env_files_fill_only_what_the_environment_lacks(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# settings\nGITHUB_APP_ID=12\nexport GITHUB_WEBHOOK_SECRET='s e'\n"
        'GITHUB_PRIVATE_KEY="./key.pem" # the key\n\n'
        "LOG_LEVEL=DEBUG\nGITHUB_CLIENT_ID=Iv1 # the id\n"
        "GHBOT_NAMESPACE='a # b'\n"
    )
    assert load_env_file(env, {"LOG_LEVEL": "INFO"}) == {
        "GITHUB_APP_ID": "12",
        "GITHUB_WEBHOOK_SECRET": "s e",
        "GITHUB_PRIVATE_KEY": "./key.pem",  # the quotes went on with a comment after them
        "GITHUB_CLIENT_ID": "Iv1",
        "GHBOT_NAMESPACE": "a # b",
    }
    env.write_text("GITHUB_APP_ID 12\n")
    with pytest.raises(ConfigError, match=r"\.env:1: expected KEY=VALUE"):
        load_env_file(env, {})


BOT = """
from actors import InstallationActor, on
from ghbot.events import Event
from ghbot.models import IssuesOpened


class DevBot(InstallationActor):
    @on("issues.opened")
    async def hello(self, event: Event[IssuesOpened]) -> None:
        await self.github.rest.issues.create_comment(**event.issue(), body="{text}")
"""


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - a local URL
        return json.load(answer)


def _until(check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            found = check()
            if found:
                return found
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def _post(url: str, body: bytes, guid: str, secret: str = SECRET) -> int:
    request = urllib.request.Request(  # noqa: S310 - a local URL
        url, data=body, headers=signed(body, guid, secret), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def _dev_project(folder: Path, private: bytes, api_url: str) -> dict[str, str]:
    """Write a bot project for `ghbot dev` into `folder` (its key, `.env` and
    `devbot.py`); return the environment to run it in, without this one's GITHUB_*."""
    (folder / "key.pem").write_bytes(private)
    (folder / ".env").write_text(
        f"GITHUB_APP_ID=5\nGITHUB_PRIVATE_KEY=./key.pem\nGITHUB_WEBHOOK_SECRET={SECRET}\n"
        f"GITHUB_API_URL={api_url}\n"
    )
    (folder / "devbot.py").write_text(BOT.replace("{text}", "first"))
    return {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}


def test_the_command_loads_env_and_restarts_on_a_code_change(tmp_path: Path) -> None:
    private, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=5, public_key_pem=public)
    try:

        async def set_up() -> None:
            fake.fake.add_installation(1, "Codertocat", ["Hello-World"])
            for n in range(2):
                fake.fake.add_issue("Codertocat/Hello-World", f"issue {n + 1}")

        fake.run(set_up())
        env = _dev_project(tmp_path, private, fake.url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "ghbot.cli", "dev", "--bot", "devbot:DevBot"]
        command += ["--port", str(port)]
        process = subprocess.Popen(command, cwd=tmp_path, env=env)
        try:
            first = _until(lambda: _get(f"{url}/healthz"))["pid"]
            body = json.dumps(example_payload("issues.opened", issue__number=1)).encode()
            assert _post(f"{url}/webhooks", body, "d-1") == 202
            time.sleep(1.1)  # a new modification time, whatever the file system's precision
            (tmp_path / "devbot.py").write_text(BOT.replace("{text}", "second"))
            _until(lambda: _get(f"{url}/healthz")["pid"] != first)
            body = json.dumps(example_payload("issues.opened", issue__number=2)).encode()
            assert _post(f"{url}/webhooks", body, "d-2") == 202

            def comments() -> list[str]:
                got = fake.fake.requests
                return [r.json["body"] for r in got if r.path.endswith("/comments")]

            assert _until(lambda: len(comments()) == 2 and comments()) == ["first", "second"]

            # A new webhook secret in .env (as `ghbot register` writes one): restarted,
            # the server takes the new secret and no longer the old.
            second = _get(f"{url}/healthz")["pid"]
            time.sleep(1.1)
            env_file = tmp_path / ".env"
            env_file.write_text(env_file.read_text().replace(SECRET, "rotated-secret"))
            _until(lambda: _get(f"{url}/healthz")["pid"] != second)
            assert _post(f"{url}/webhooks", body, "d-3", "rotated-secret") == 202
            assert _post(f"{url}/webhooks", body, "d-4") == 401
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        with pytest.raises(OSError):
            _get(f"{url}/healthz")  # the child went with it
    finally:
        fake.stop()


TICKING_BOT = """
from actors import InstallationActor, every, on
from ghbot.events import Event


class DevBot(InstallationActor):
    @on("issues.opened")
    async def hello(self, event: Event) -> None:
        pass

    @every(1)
    async def tick(self, event: Event) -> None:
        path = "/repos/Codertocat/Hello-World/issues/1/comments"
        await self.github.request("POST", path, json={"body": f"tick {event.delivery_id}"})
"""


def test_the_dev_server_runs_every_handlers_and_logs_as_the_env_file_says(
    tmp_path: Path,
) -> None:
    """An `@every(1)` handler runs under `ghbot dev` (its shard's scheduler, not the
    harness's `advance`), and `LOG_LEVEL=DEBUG`, `LOG_FORMAT=json` in `.env` are
    taken: it logged text at INFO whatever they said."""
    private, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=5, public_key_pem=public)
    env = _dev_project(tmp_path, private, fake.url)
    env = {k: v for k, v in env.items() if not k.startswith("LOG_")}  # or they win
    (tmp_path / "devbot.py").write_text(TICKING_BOT)
    with (tmp_path / ".env").open("a") as dotenv:
        dotenv.write("LOG_LEVEL=DEBUG\nLOG_FORMAT=json\n")
    port = free_port()
    command = [sys.executable, "-m", "ghbot.cli", "dev", "--no-reload", "--bot", "devbot:DevBot"]
    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=tmp_path, env=env, stderr=stderr
        )
    try:
        fake.run(_an_installation(fake.fake))
        _until(lambda: _get(f"http://127.0.0.1:{port}/healthz"))
        body = json.dumps(example_payload("issues.opened", issue__number=1)).encode()
        assert _post(f"http://127.0.0.1:{port}/webhooks", body, "d-1") == 202

        def ticks() -> list[str]:
            got = fake.fake.requests
            return [r.json["body"] for r in got if r.path.endswith("/comments")]

        assert _until(lambda: len(ticks()) >= 2)  # two slots, a second apart
        assert all(tick.startswith("tick schedule:") for tick in ticks())
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        fake.stop()
    logged = (tmp_path / "stderr").read_text().splitlines()
    lines = [json.loads(line) for line in logged if line.startswith("{")]
    requests = [line for line in lines if line["message"].startswith("POST /repos/")]
    assert requests and {line["level"] for line in requests} == {"debug"}


async def _an_installation(fake: FakeGitHub) -> None:
    fake.add_installation(1, "Codertocat", ["Hello-World"])
    fake.add_issue("Codertocat/Hello-World", "issue 1")


def test_the_server_stops_on_a_sigterm_a_journal_thread_receives(tmp_path: Path) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads. Sent to another
    than the main one, the idle server (`ghbot dev --no-reload`, what the reloader runs)
    still stops, and cleanly."""
    import ctypes

    private, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=5, public_key_pem=public)
    env = _dev_project(tmp_path, private, fake.url)
    port = free_port()
    command = [sys.executable, "-m", "ghbot.cli", "dev", "--no-reload", "--bot", "devbot:DevBot"]
    process = subprocess.Popen([*command, "--port", str(port)], cwd=tmp_path, env=env)
    try:
        _until(lambda: _get(f"http://127.0.0.1:{port}/healthz"))

        # The server's other threads (the journal's writer and readers: Python does not
        # name them for the kernel), the main thread's id being the process's.
        tasks = Path(f"/proc/{process.pid}/task")
        (thread, *_) = [int(t.name) for t in tasks.iterdir() if int(t.name) != process.pid]
        tgkill = 234  # x86_64's syscall number: signal one thread of another process
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(tgkill, process.pid, thread, signal.SIGTERM) == 0
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        fake.stop()


async def test_the_relay_reconnects_after_a_refused_or_dropped_stream(
    server: tuple[DevServer, FakeGitHub],
) -> None:
    dev, fake = server
    event = smee_event(1, "g-again")
    connections = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        if connections == 1:
            return web.Response(status=503, text="busy")  # not an event stream
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        if connections == 2:
            await answer.write(b"event: ready\ndata: {}\n\n")
            return answer  # the stream ends without a delivery
        await answer.write(b"data: " + event + b"\n\n")
        await asyncio.sleep(5)
        return answer

    async with channel(stream) as source:
        relayed = relay(source, f"{dev.url}/webhooks", max_events=1, retry_after=0.05)
        assert await asyncio.wait_for(relayed, 10) == 1
    assert connections == 3
    assert dev.shard is not None
    await dev.shard.wait_idle()
    assert fake.requests_to(f"{HELLO}/issues/1/comments", "POST")


async def test_the_relay_reconnects_when_the_stream_stays_silent(
    server: tuple[DevServer, FakeGitHub],
) -> None:
    # A stream that says nothing for `idle_timeout` is a dead connection (a laptop
    # that slept): the relay drops it and connects again.
    dev, _ = server
    event = smee_event(1, "g-silent")
    connections = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(b"event: ready\ndata: {}\n\n")
        if connections > 1:
            await answer.write(b"data: " + event + b"\n\n")
        await asyncio.sleep(1.5)  # then silent, longer than `idle_timeout`
        return answer

    async with channel(stream) as source:
        relayed = relay(
            source, f"{dev.url}/webhooks", max_events=1, retry_after=0.05, idle_timeout=0.5
        )
        assert await asyncio.wait_for(relayed, 4) == 1
    assert connections == 2
    # `ghbot dev --proxy` keeps the default: two minutes of silence (docs/testing.md).
    assert inspect.signature(relay).parameters["idle_timeout"].default == 120


@pytest.mark.parametrize("first", ["dropped", "503"])
async def test_the_relay_posts_a_delivery_again_until_the_local_server_takes_it(
    server: tuple[DevServer, FakeGitHub], first: str
) -> None:
    # The local server dropped the first post (restarting, say) or answered it 503:
    # the relay posts the same delivery again before it reads the next.
    dev, fake = server
    event = smee_event(2, "g-retry")
    posts = connections = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        if connections == 1:  # sent once, as smee does: not fetched again
            await answer.write(b"data: " + event + b"\n\n")
        await asyncio.sleep(2)
        return answer

    async def flaky(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        data = await request.read()
        if posts == 1 and first == "503":
            return web.Response(status=503, text="the journal is not answering")
        if posts == 1:
            assert request.transport is not None
            request.transport.close()  # no answer
            return web.Response(status=500)
        async with aiohttp.ClientSession() as http:
            sent = await http.post(f"{dev.url}/webhooks", data=data, headers=request.headers)
            return web.Response(status=sent.status)

    local = web.Application()
    local.router.add_post("/webhooks", flaky)
    async with channel(stream) as source, _served(local) as target:
        relayed = relay(source, f"{target}/webhooks", max_events=1, retry_after=0.05)
        assert await asyncio.wait_for(relayed, 10) == 1
    assert (posts, connections) == (2, 1)
    assert dev.shard is not None
    await dev.shard.wait_idle()
    assert len(fake.requests_to(f"{HELLO}/issues/2/comments", "POST")) == 1


async def test_the_relay_does_not_post_again_a_delivery_the_local_server_refuses() -> None:
    # A 4xx (the channel's deliveries signed with another secret, say) would be
    # refused every time: logged, not posted again.
    stream = frames_then_silence(b"data: " + smee_event(2, "g-refused") + b"\n\n", silence=2)
    posts = 0

    async def refusing(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        return web.Response(status=401, text="invalid signature")

    local = web.Application()
    local.router.add_post("/webhooks", refusing)
    async with channel(stream) as source, _served(local) as target:
        relayed = relay(source, f"{target}/webhooks", max_events=1, retry_after=0.05)
        assert await asyncio.wait_for(relayed, 10) == 1
    assert posts == 1


async def test_a_delivery_over_the_size_cap_is_refused_with_413(
    server: tuple[DevServer, FakeGitHub],
) -> None:
    from ghbot.webhooks import MAX_PAYLOAD_BYTES

    dev, _ = server
    body = b'{"pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    async with aiohttp.ClientSession() as http:
        answer = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "g-big"))
        status, reason = answer.status, (await answer.json())["error"]
    assert status == 413 and "cap" in reason
    assert dev.shard is not None
    assert dev.shard.stats()["received"] == 0


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Broken(InstallationActor):
    max_attempts = 1

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        raise AttributeError("'Issue' object has no attribute 'nmber'")


async def test_a_handlers_failure_is_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`ghbot dev` logged `welcome dead-lettered ... after 1 attempts: AttributeError`,
    with no message and no traceback: the author could not find the line."""
    body = json.dumps(example_payload("issues.opened")).encode()
    async with dev_server(Broken, tmp_path / "j") as (dev, _):
        with caplog.at_level(logging.WARNING, logger="ghbot.installation"):
            async with aiohttp.ClientSession() as http:
                await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "g"))
            assert dev.shard is not None
            await dev.shard.wait_idle()
    [line] = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    text = TextFormatter().format(line)
    assert ", in welcome\n" in text and "has no attribute 'nmber'" in text


class FailsUntilFixed(InstallationActor):
    """A handler with a bug, one attempt, until the author "fixes" it."""

    max_attempts = 1
    fixed = False
    ran: list[str] = []

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        type(self).ran.append(event.delivery_id or "")
        if not type(self).fixed:
            raise RuntimeError("a bug")


async def test_a_redelivery_runs_its_dead_lettered_handlers_again(tmp_path: Path) -> None:
    """Fix, restart, press GitHub's "Redeliver": the handler runs again. It was answered
    200 duplicate and nothing ran (the journal had the GUID), so the habit Probot
    teaches did nothing under `ghbot dev`."""
    FailsUntilFixed.fixed, FailsUntilFixed.ran = False, []
    body = json.dumps(example_payload("issues.opened")).encode()
    async with (
        dev_server(FailsUntilFixed, tmp_path / "j") as (dev, _),
        aiohttp.ClientSession() as http,
    ):
        first = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "r"))
        assert first.status == 202
        assert dev.shard is not None
        await dev.shard.wait_idle()
        assert FailsUntilFixed.ran == ["r"]  # dead-lettered after its one attempt
        FailsUntilFixed.fixed = True
        again = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "r"))
        answer = (again.status, await again.json())
        await dev.shard.wait_idle()
        third = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "r"))
        assert (third.status, await third.json()) == (
            200,
            {"delivery": "r", "status": "duplicate"},
        )  # nothing left dead-lettered: a plain duplicate
        assert await dev.shard.dead_letters() == []
    assert answer == (202, {"delivery": "r", "status": "duplicate", "replayed": 1})
    assert FailsUntilFixed.ran == ["r", "r"]


async def test_a_redelivery_whose_replay_fails_is_still_answered_as_a_duplicate(
    server: tuple[DevServer, FakeGitHub],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The installation would not activate to replay (its journal gone, its state not
    decoding): a plain duplicate and a line saying why, not aiohttp's 500."""
    dev, _ = server
    assert dev.shard is not None
    body = json.dumps(example_payload("issues.opened", issue__number=2)).encode()

    async def replay(installation_id: int, delivery_id: str, handler: str | None) -> int:
        raise JournalUnavailable("sqlite: disk I/O error")

    async with aiohttp.ClientSession() as http:
        await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "d-1"))
        monkeypatch.setattr(dev.shard, "replay", replay)
        with caplog.at_level(logging.WARNING, logger="ghbot.dev"):
            again = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "d-1"))
            answer = (again.status, await again.json())
    assert answer == (200, {"delivery": "d-1", "status": "duplicate"})
    assert "its dead letters could not be replayed (JournalUnavailable)" in caplog.text


class Welcomed(msgspec.Struct, frozen=True):
    number: int


class Welcomes(InstallationActor):
    domain_events = (Welcomed,)

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        self.emit(Welcomed(number=1))


#: `Welcomed` as the bot's next edit has it: a field added, with no default.
WelcomedNow = msgspec.defstruct("Welcomed", [("number", int), ("greeting", str)], frozen=True)


class WelcomesNow(InstallationActor):
    domain_events = (WelcomedNow,)
    ran: list[str] = []

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        WelcomesNow.ran.append(event.delivery_id or "")


async def test_an_installation_whose_journal_the_code_cannot_read_back_is_said_to_be(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A required field added to a domain event: the dev journal's `Welcomed` no longer
    decodes. It logged "installation 1 could not be activated (ValidationError)",
    without the field or a way out, and answered the next deliveries 202: they never
    ran."""
    WelcomesNow.ran = []
    body = json.dumps(example_payload("issues.opened")).encode()
    async with dev_server(Welcomes, tmp_path / "j") as (dev, _), aiohttp.ClientSession() as http:
        assert (
            await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "w-1"))
        ).status == 202
        assert dev.shard is not None
        await dev.shard.wait_idle()
    with caplog.at_level(logging.ERROR, logger="ghbot.shard"):
        async with (
            dev_server(WelcomesNow, tmp_path / "j") as (dev, _),
            aiohttp.ClientSession() as http,
        ):
            answer = await http.post(f"{dev.url}/webhooks", data=body, headers=signed(body, "w-2"))
            said = (answer.status, await answer.json())
    assert said[0] == 500, said
    assert "installation 1 could not be activated" in said[1]["error"]
    assert WelcomesNow.ran == []
    lines = [r for r in caplog.records if "could not be activated" in r.getMessage()]
    assert lines  # at the start (recovery) and for the delivery
    text = TextFormatter().format(lines[-1])
    assert "ValidationError: Object missing required field `greeting`" in text
    assert f"delete {(tmp_path / 'j').resolve()}" in text and "another --journal" in text
    assert "Traceback (most recent call last)" in text


# --- `ghbot dev` in this process: `main([...])`, the test driving it as its relay -------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory for `main(["dev", ...])` run in this process; what the
    command changes (the environment it fills from `.env`, the logging it configures,
    the bot modules it imports) is put back afterwards."""
    environ = dict(os.environ)
    loggers = [logging.getLogger(), logging.getLogger("ghbot")]
    kept = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [k for k in os.environ if k.startswith(("GITHUB_", "GHBOT_", "LOG_"))]:
        del os.environ[name]
    try:
        yield tmp_path
    finally:
        os.environ.clear()
        os.environ.update(environ)
        for logger, (handlers, level, propagate) in zip(loggers, kept, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", "")).startswith(str(tmp_path)):
                del sys.modules[name]


def driving(
    monkeypatch: pytest.MonkeyPatch,
    script: Callable[[str], Awaitable[Any]],
    calls: list[inspect.BoundArguments] | None = None,
) -> list[Any]:
    """Stand in for `relay` under `ghbot dev --proxy`: run `script` with the dev server's
    webhook URL in the server's own loop, then stop the server as SIGTERM does. Return
    the list the script's result (or what it raised) is put in; `calls` gets the
    arguments `relay` was called with, its defaults filled in."""
    outcome: list[Any] = []
    real = relay

    async def stand_in(source: str, target: str, **options: Any) -> int:
        if calls is not None:
            called = inspect.signature(real).bind(source, target, **options)
            called.apply_defaults()
            calls.append(called)
        try:
            outcome.append(await script(target))
        except Exception as exc:
            outcome.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the server's loop handles it
        await asyncio.Event().wait()
        return 0

    monkeypatch.setattr("actors.dev.relay", stand_in)
    return outcome


def _comments(fake: Any) -> list[str]:
    return [r.json["body"] for r in fake.fake.requests if r.path.endswith("/comments")]


async def _deliver_and_wait(target: str, fake: Any) -> list[str]:
    """Post a signed `issues.opened` to `target`; return the comments once there are some."""
    body = json.dumps(example_payload("issues.opened", issue__number=1)).encode()
    async with aiohttp.ClientSession() as http:
        answer = await http.post(target, data=body, headers=signed(body, "in-process"))
        assert answer.status == 202, await answer.text()
    deadline = time.monotonic() + 30
    while not _comments(fake):
        assert time.monotonic() < deadline, "the handler did not comment"
        await asyncio.sleep(0.05)
    return _comments(fake)


SETTINGS_BOT = """
from actors import InstallationActor, on
from ghbot.events import Event


class DevBot(InstallationActor):
    @on("issues.opened")
    async def hello(self, event: Event) -> None:
        options = self.github.options
        assert options.pool is not None
        said = f"pace_writes={options.pace_writes} requests={options.pool.max_concurrency}"
        path = "/repos/Codertocat/Hello-World/issues/1/comments"
        await self.github.request("POST", path, json={"body": said})
"""


def test_the_command_takes_the_runtime_settings_it_can_honour_from_the_env_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`GHBOT_PACE_WRITES` and `GHBOT_MAX_CONCURRENT_REQUESTS` in `.env` are read as a
    deployment reads them: `ghbot dev` paced writes a second apart, and its clients
    shared 48 requests (two shards' worth of 100), whatever they said."""
    private, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=5, public_key_pem=public)
    try:
        fake.run(_an_installation(fake.fake))
        _dev_project(project, private, fake.url)
        (project / "settings_bot.py").write_text(SETTINGS_BOT)
        with (project / ".env").open("a") as dotenv:
            dotenv.write("GHBOT_PACE_WRITES=0\nGHBOT_MAX_CONCURRENT_REQUESTS=10\n")
        outcome = driving(monkeypatch, lambda target: _deliver_and_wait(target, fake))
        argv = ["dev", "--no-reload", "--bot", "settings_bot:DevBot", "--port", "0"]
        assert cli.main([*argv, "--proxy", "http://127.0.0.1:9/channel"]) == 0
        # Not paced; one shard's share of 10 (the app's own token requests keep 4).
        assert outcome == [["pace_writes=None requests=6"]]

        os.environ["GHBOT_PACE_WRITES"] = "fast"  # a variable set wins over .env
        assert cli.main(argv) == 2
        said = capsys.readouterr().err
        assert "GHBOT_PACE_WRITES='fast' must be a number from 0 to 60" in said
    finally:
        fake.stop()


def test_the_bot_can_be_named_in_the_env_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`GHBOT_BOT` in `.env` was ignored: `--bot`'s default was read from the
    environment before `.env` was, and the command asked "which bot? ... (or set
    GHBOT_BOT)" of a `.env` that set it."""
    assert cli.main(["dev", "--no-reload", "--port", "0"]) == 2
    assert "which bot? pass --bot package.module:ClassName (or set GHBOT_BOT, in .env too)" in (
        capsys.readouterr().err
    )
    private, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=5, public_key_pem=public)
    try:
        fake.run(_an_installation(fake.fake))
        _dev_project(project, private, fake.url)
        with (project / ".env").open("a") as dotenv:
            dotenv.write("GHBOT_BOT=devbot:DevBot\n")
        outcome = driving(monkeypatch, lambda target: _deliver_and_wait(target, fake))
        argv = ["dev", "--no-reload", "--port", "0", "--proxy", "http://127.0.0.1:9/channel"]
        assert cli.main(argv) == 0
        assert outcome == [["first"]]
    finally:
        fake.stop()


def test_the_reloader_leaves_the_bot_of_the_env_file_to_its_server(tmp_path: Path) -> None:
    """Under `ghbot dev` (reloading), the server is a child process: the bot named in
    `.env`, which the parent does not load, is found by the child."""
    private, public = app_key_pair()
    fake = FakeGitHub.start_in_thread(app_id=5, public_key_pem=public)
    try:
        fake.run(_an_installation(fake.fake))
        env = _dev_project(tmp_path, private, fake.url)
        env.pop("GHBOT_BOT", None)
        with (tmp_path / ".env").open("a") as dotenv:
            dotenv.write("GHBOT_BOT=devbot:DevBot\n")
        port = free_port()
        command = [sys.executable, "-m", "ghbot.cli", "dev", "--port", str(port)]
        process = subprocess.Popen(command, cwd=tmp_path, env=env)
        try:
            _until(lambda: _get(f"http://127.0.0.1:{port}/healthz"))
            body = json.dumps(example_payload("issues.opened", issue__number=1)).encode()
            assert _post(f"http://127.0.0.1:{port}/webhooks", body, "d-1") == 202
            assert _until(lambda: _comments(fake)) == ["first"]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    finally:
        fake.stop()


def test_the_relay_of_ghbot_dev_waits_two_minutes_of_silence(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/testing.md: the relay reconnects when the stream "stays silent for two
    minutes": `ghbot dev --proxy` starts it with no idle timeout of its own."""
    private, _ = app_key_pair()
    _dev_project(project, private, "http://127.0.0.1:9")
    calls: list[inspect.BoundArguments] = []

    async def nothing(target: str) -> None:
        return None

    outcome = driving(monkeypatch, nothing, calls)
    channel = "https://smee.io/channel"
    argv = ["dev", "--no-reload", "--bot", "devbot:DevBot", "--port", "0", "--proxy", channel]
    assert cli.main(argv) == 0 and outcome == [None]
    [called] = calls
    assert called.arguments["source"] == channel
    assert called.arguments["idle_timeout"] == 120
