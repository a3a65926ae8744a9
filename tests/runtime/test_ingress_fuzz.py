"""Hostile input at the ingress, without Ray: generated requests against a real shard.

`WebhookIngress.webhook` runs on Starlette requests built from raw ASGI messages (any
header bytes, duplicates, a body in chunks, a sender that goes away), and sends what it
accepts through the real `ShardBatcher` to a real `ShardCore` on a SQLite journal. For
every request: a 2xx only when it was validly signed, else a 4xx among those
`WebhookError` names with a JSON reason, never an exception (a 5xx); the shard's
`received` counter moves exactly when a 202 was answered, and the journal holds
exactly the GUIDs answered 2xx. The named cases below check the exact status of each
kind of hostile request. Issue 15, "Hostile input at the ingress".
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import textwrap
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from starlette.requests import Request

from actors.bot import InstallationActor
from actors.ray.batcher import ShardBatcher
from actors.ray.ingress import WebhookIngress
from actors.runtime_events import installation_of, stream_name
from actors.shard import ShardCore
from ghbot import webhooks
from ghbot.events import decode_envelope
from ghbot.journal import Journal, open_journal
from ghbot.webhooks import MAX_PAYLOAD_BYTES, sign
from tests.hostile import Generated, examples, requests
from tests.runtime.conftest import VSHARDS, WEBHOOK_SECRET, bare_ingress, payload

#: Statuses the ingress may answer a refusal with (`ghbot.errors.WebhookError`s).
REFUSALS = {400, 401, 413, 415}
FUZZ = settings(
    max_examples=examples(400),  # a few seconds; GHBOT_FUZZ_EXAMPLES for more
    deadline=None,
    derandomize=True,  # the same examples on every run and in CI
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Plain(InstallationActor):
    """A bot without handlers: what it accepts is journaled received and completed."""


class LocalShard:
    """A `ShardCore` behind the `actor.ingest.remote(...)` call the batcher makes."""

    def __init__(self, core: ShardCore) -> None:
        self.core = core
        self.ingest = self

    def remote(self, batch: bytes) -> Any:
        return self.core.ingest(batch)


@dataclass
class Rig:
    """An ingress replica, its shard and journal, on one event loop of their own."""

    runner: asyncio.Runner
    ingress: WebhookIngress
    core: ShardCore
    journal: Journal
    #: (installation, GUID) of every delivery answered 202.
    accepted: set[tuple[int, str]] = field(default_factory=set)
    #: Generated requests answered, by status.
    tally: Counter[int] = field(default_factory=Counter)

    def post(self, headers: Sequence[tuple[str, str]], chunks: Sequence[bytes], **kw: Any) -> Any:
        return self.runner.run(self.ingress.webhook(raw_request(headers, chunks, **kw)))

    def journaled(self, installation_id: int, guid: str) -> bool:
        stream = stream_name(installation_id)
        vshard = installation_id % VSHARDS
        found = self.runner.run(self.journal.delivered(stream, [guid], shard=vshard))
        return guid in found


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    directory: Path = tmp_path_factory.mktemp("fuzz-journal")
    with asyncio.Runner() as runner:
        journal = runner.run(open_journal(f"sqlite://{directory}", shard_count=VSHARDS))
        core = ShardCore(range(VSHARDS), VSHARDS, journal, Plain)
        runner.run(core.start())
        ingress = bare_ingress(Plain)
        ingress.batchers = [ShardBatcher(LocalShard(core), limit=64)]
        yield Rig(runner, ingress, core, journal)
        runner.run(core.close())
        runner.run(journal.close())


def raw_request(
    headers: Sequence[tuple[str, str]],
    chunks: Sequence[bytes],
    *,
    disconnect: bool = False,
    endless: bool = False,
) -> Request:
    """Return a request with exactly these headers (latin-1, duplicates kept) and chunks.

    `disconnect`: the sender goes away after the chunks. `endless`: after the chunks
    the body goes on in 1 MiB chunks without end (a test fails if more than twice the
    cap is read).
    """
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }
    sent = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    if disconnect:
        sent.append({"type": "http.disconnect"})
    elif not endless:
        sent.append({"type": "http.request", "body": b"", "more_body": False})
    messages = iter(sent)
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        message = next(messages, None)
        if message is None:  # only an endless body runs out of prepared messages
            message = {"type": "http.request", "body": b"x" * 2**20, "more_body": True}
        body = message.get("body", b"")
        assert isinstance(body, bytes)
        read += len(body)
        if read > 2 * MAX_PAYLOAD_BYTES:
            raise AssertionError("the ingress read on past twice the cap")
        return message

    return Request(scope, receive)


def signed_headers(body: bytes, guid: str, **changes: str | None) -> list[tuple[str, str]]:
    """GitHub's headers for `body` (event `issues`); a change of None drops a header."""
    headers = {
        "content-type": "application/json",
        "user-agent": "GitHub-Hookshot/fuzz",
        "x-github-event": "issues",
        "x-github-delivery": guid,
        "x-github-hook-id": "1",
        "x-hub-signature-256": sign(body, WEBHOOK_SECRET),
        **{k.replace("_", "-"): v for k, v in changes.items()},
    }
    return [(k, v) for k, v in headers.items() if v is not None]


def reason(answer: Any) -> str:
    """Return the `error` of a refusal's JSON body (and check it is JSON with one)."""
    assert answer.headers["content-type"] == "application/json"
    data = json.loads(answer.body)
    assert isinstance(data["error"], str) and data["error"]
    return data["error"]


@FUZZ
@given(generated=requests(WEBHOOK_SECRET, lambda n: payload("issues.opened", installation=n)))
def test_every_generated_request_is_answered_2xx_only_when_validly_signed(
    rig: Rig, generated: Generated
) -> None:
    received = rig.core.counters["received"]
    answer = rig.post(generated.headers, generated.chunks, disconnect=generated.disconnect)
    status = answer.status_code
    rig.tally[status] += 1
    assert (status in (200, 202)) >= generated.wellformed, (status, answer.body)
    if status in (200, 202):
        assert generated.valid, (status, generated)
        guid = json.loads(answer.body)["delivery"]
        installation_id = decode_envelope(generated.body).installation_id or 0
        key = (installation_id, guid)
        assert (status == 200) == (key in rig.accepted)  # 200 only for a GUID seen before
        rig.accepted.add(key)
        assert rig.journaled(installation_id, guid)
    else:
        assert status in REFUSALS, (status, answer.body)
        assert status != 415 or "content type" in reason(answer)
        reason(answer)
    # The shard journals exactly the 202s: nothing refused reaches it.
    assert rig.core.counters["received"] - received == (status == 202)
    if status in (200, 202) and generated.replay:  # GitHub's redelivery: same GUID, body
        again = rig.post(generated.headers, generated.chunks)
        rig.tally[again.status_code] += 1
        assert (again.status_code, json.loads(again.body)["status"]) == (200, "duplicate")
        assert rig.core.counters["received"] - received == (status == 202)


def test_the_fuzz_journaled_exactly_what_it_accepted(rig: Rig) -> None:
    """Every stream of the journal holds only GUIDs answered 202 (run after the fuzz)."""

    async def every_guid() -> set[tuple[int, str]]:
        found: set[tuple[int, str]] = set()
        for vshard in range(VSHARDS):
            for stream in await rig.journal.list_streams(shard=vshard):
                for record in await rig.journal.read(stream, shard=vshard):
                    if record.type == "DeliveryReceived":
                        assert record.delivery_guid is not None
                        found.add((installation_of(stream) or 0, record.delivery_guid))
        return found

    assert rig.accepted, "the fuzz accepted nothing: the generator lost its valid requests"
    assert rig.runner.run(every_guid()) == rig.accepted
    print(f"ingress fuzz without Ray: {rig.tally.total()} requests, {sorted(rig.tally.items())}")


# --- named cases -----------------------------------------------------------------------

BODY = payload("issues.opened", installation=42)


def post(rig: Rig, headers: Sequence[tuple[str, str]], body: bytes = BODY, **kw: Any) -> Any:
    return rig.post(headers, [body], **kw)


def test_a_replayed_delivery_is_a_200_duplicate_and_journaled_once(rig: Rig) -> None:
    guid = str(uuid.uuid4())
    received = rig.core.counters["received"]
    first = post(rig, signed_headers(BODY, guid))
    again = post(rig, signed_headers(BODY, guid))
    assert (first.status_code, again.status_code) == (202, 200)
    assert json.loads(again.body) == {"delivery": guid, "status": "duplicate"}
    assert rig.core.counters["received"] - received == 1


@pytest.mark.parametrize(
    ("changes", "status", "said"),
    [
        ({"x_hub_signature_256": None}, 401, "missing"),
        ({"x_hub_signature_256": sign(b"{}", WEBHOOK_SECRET)}, 401, "matches no"),
        ({"x_hub_signature_256": "SHA256=" + sign(BODY, WEBHOOK_SECRET)[7:]}, 401, "start"),
        ({"x_hub_signature_256": sign(BODY, WEBHOOK_SECRET)[:-1]}, 401, "64-digit"),
        ({"x_hub_signature_256": sign(BODY, WEBHOOK_SECRET) + "0"}, 401, "64-digit"),
        ({"x_github_event": None}, 400, "X-GitHub-Event"),
        ({"x_github_delivery": None}, 400, "X-GitHub-Delivery"),
        ({"content_type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        ({"content_type": "text/plain"}, 415, "application/json"),
        ({"content_length": str(MAX_PAYLOAD_BYTES + 1)}, 413, "cap"),
    ],
)
def test_each_kind_of_bad_request_gets_its_status_and_reason(
    rig: Rig, changes: dict[str, str | None], status: int, said: str
) -> None:
    received = rig.core.counters["received"]
    answer = post(rig, signed_headers(BODY, str(uuid.uuid4()), **changes))
    assert answer.status_code == status
    assert said in reason(answer)
    assert rig.core.counters["received"] == received


def test_a_form_encoded_delivery_is_refused_with_415_even_when_signed(rig: Rig) -> None:
    """GitHub's `payload=` form encoding, signed over the form body as GitHub does."""
    form = ("payload=" + urllib.parse.quote_plus(BODY.decode())).encode()
    headers = signed_headers(
        form, str(uuid.uuid4()), content_type="application/x-www-form-urlencoded"
    )
    answer = post(rig, headers, form)
    assert answer.status_code == 415
    assert "set the webhook's content type to application/json" in reason(answer)


@pytest.mark.parametrize(
    "name", ["x-hub-signature-256", "x-github-event", "x-github-delivery", "content-type"]
)
@pytest.mark.parametrize("valid_first", [True, False])
def test_a_header_github_sends_once_is_refused_when_doubled(
    rig: Rig, name: str, valid_first: bool
) -> None:
    """Two signatures (one valid), two events, two content types: 400, whichever
    comes first."""
    headers = signed_headers(BODY, str(uuid.uuid4()))
    other = {"x-hub-signature-256": "sha256=" + "0" * 64}.get(name, "other")
    doubled = (name, other)
    headers = [*headers, doubled] if valid_first else [doubled, *headers]
    answer = post(rig, headers)
    assert answer.status_code == 400
    assert "more than once" in reason(answer)


def test_a_body_cut_short_by_the_sender_is_a_400(rig: Rig) -> None:
    headers = signed_headers(BODY, str(uuid.uuid4()), content_length=str(len(BODY)))
    answer = rig.post(headers, [BODY[:100]], disconnect=True)
    assert answer.status_code == 400
    assert "closed before the body ended" in reason(answer)


def test_a_truncated_body_sent_whole_fails_its_signature(rig: Rig) -> None:
    answer = post(rig, signed_headers(BODY, str(uuid.uuid4())), BODY[:-10])
    assert answer.status_code == 401


def test_a_body_without_length_is_refused_once_it_passes_the_cap(rig: Rig) -> None:
    """Chunked, no Content-Length, and no end: 413 once 25 MiB are passed, not a hang."""
    headers = signed_headers(BODY, str(uuid.uuid4()))
    answer = rig.post(headers, [BODY], endless=True)
    assert answer.status_code == 413
    assert "while being read" in reason(answer)


def test_a_declared_length_over_the_cap_is_refused_before_a_byte_is_read(rig: Rig) -> None:
    headers = signed_headers(BODY, str(uuid.uuid4()), content_length=str(MAX_PAYLOAD_BYTES + 1))
    request = raw_request(headers, [])

    async def never() -> dict[str, Any]:
        raise AssertionError("the body was read")

    request._receive = never
    answer = rig.runner.run(rig.ingress.webhook(request))
    assert answer.status_code == 413


@pytest.mark.parametrize("length", ["\xb2", "\xb9", "-1", "1e3", " 12"])
def test_an_unparsable_content_length_is_left_to_the_body_read(rig: Rig, length: str) -> None:
    """`'²'.isdigit()` is true and `int('²')` fails: once a 500, now the body decides."""
    answer = post(rig, signed_headers(BODY, str(uuid.uuid4()), content_length=length))
    assert answer.status_code == 202


@pytest.mark.parametrize("target", ["\xb2", str(2**64), "9" * 5000])
def test_a_target_id_that_is_no_app_id_is_journaled_without_one(rig: Rig, target: str) -> None:
    """Once a 500 (`int("²")`) or a batch that would not encode: the header is not signed."""
    guid = str(uuid.uuid4())
    headers = signed_headers(
        BODY,
        guid,
        x_github_hook_installation_target_type="integration",
        x_github_hook_installation_target_id=target,
    )
    assert post(rig, headers).status_code == 202
    assert rig.journaled(42, guid)


@pytest.mark.parametrize("installation_id", [-1, 2**63, 2**64, 10**30])
def test_an_installation_id_the_journal_cannot_hold_is_a_400(
    rig: Rig, installation_id: int
) -> None:
    """Once a 503 for a valid signature (the batch would not encode): a poison delivery."""
    body = json.dumps({"action": "opened", "installation": {"id": installation_id}}).encode()
    answer = post(rig, signed_headers(body, str(uuid.uuid4())), body)
    assert answer.status_code == 400
    assert "installation.id" in reason(answer)


def test_the_signature_is_compared_in_constant_time() -> None:
    """`verify` compares digests only through `hmac.compare_digest`, never with `==`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(webhooks.verify)))
    calls = [ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert "hmac.compare_digest" in calls
    compared = [
        ast.unparse(side)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        for side in (node.left, *node.comparators)
    ]
    secret_bearing = {"given", "hex_digest", "signature", "body", "secret"}
    assert not [side for side in compared if side in secret_bearing or "digest(" in side]
