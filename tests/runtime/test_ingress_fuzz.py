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
import hashlib
import hmac
import inspect
import itertools
import json
import textwrap
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from actors.bot import InstallationActor
from actors.ingress import ShardBatcher, WebhookIngress
from actors.records import installation_of, stream_name
from actors.shard import ShardCore
from ghbot import webhooks
from ghbot.events import decode_envelope
from ghbot.journal import Journal, open_journal
from ghbot.webhooks import MAX_PAYLOAD_BYTES, sign
from tests.runtime.conftest import VSHARDS, WEBHOOK_SECRET, bare_ingress, payload

#: Statuses the ingress may answer a refusal with (`ghbot.errors.WebhookError`s).
REFUSALS = {400, 401, 413, 415}
FUZZ = settings(
    max_examples=400,
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
        read += len(message.get("body", b""))
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


# --- generated requests ----------------------------------------------------------------

_guids = (f"fuzz-{n}-{uuid.uuid4()}" for n in itertools.count())
latin1 = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=80)
token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=30)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
installation = st.integers(min_value=1, max_value=10_000)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bool, bytes]:
    """A body: a real payload (True), or JSON of any shape, garbage, not UTF-8, cut short,
    or form-encoded (False)."""
    kind = draw(st.sampled_from(["real", "json", "object", "binary", "latin1", "form", "cut"]))
    real = payload("issues.opened", installation=draw(installation))
    return kind == "real", _body(draw, kind, real)


def _body(draw: st.DrawFn, kind: str, real: bytes) -> bytes:
    if kind == "real":
        return real
    if kind == "cut":
        return real[: draw(st.integers(0, len(real) - 1))]
    if kind == "json":
        return json.dumps(draw(json_value)).encode()
    if kind == "object":
        data = draw(st.dictionaries(st.sampled_from(["action", "installation", "x"]), json_value))
        return json.dumps(data).encode()
    if kind == "latin1":
        return real.decode().replace("opened", "ouvert\xe9").encode("latin-1")
    if kind == "form":  # what GitHub sends when the hook's content type is form
        return ("payload=" + urllib.parse.quote_plus(real.decode())).encode()
    return draw(st.binary(max_size=512))


@dataclass
class Generated:
    headers: list[tuple[str, str]]
    body: bytes
    chunks: list[bytes]
    disconnect: bool
    #: Signed with the secret, once, over this very body, sent whole with the headers
    #: GitHub sends once each: what alone may be answered 2xx.
    valid: bool
    #: Valid, and a real payload with the headers GitHub sends: what must be a 2xx.
    wellformed: bool


SIGNATURE_KINDS = (
    *("good", "upper", "other-body", "other-secret", "sha1", "prefix"),
    *("short", "long", "text", "empty"),
)


def _signature(draw: st.DrawFn, body: bytes) -> str:
    good = sign(body, WEBHOOK_SECRET)
    kind = draw(st.sampled_from(SIGNATURE_KINDS))
    return {
        "good": good,
        "upper": "sha256=" + good[7:].upper(),  # the same digest: accepted
        "other-body": sign(body + b" ", WEBHOOK_SECRET),
        "other-secret": sign(body, "not-the-secret"),
        "sha1": "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest(),
        "prefix": draw(st.sampled_from(["SHA256=", "sha256:", "sha-256=", "", " sha256="]))
        + good[7:],
        "short": good[: draw(st.integers(0, len(good) - 1))],
        "long": good + draw(st.sampled_from(["0", "00", " x", "ab"])),
        "text": draw(latin1),
        "empty": "",
    }[kind]


CONTENT_TYPES = (
    *("application/json; charset=utf-8", "Application/JSON", None),
    *("application/x-www-form-urlencoded", "text/plain"),
)


@st.composite
def requests(draw: st.DrawFn) -> Generated:
    """A request to `POST /webhooks`: GitHub's headers, each kept, changed, dropped or doubled.

    A third are calm (every header as GitHub sends it, only the body drawn); in the
    rest each header is hostile or not, at even odds.
    """
    real, body = draw(bodies())
    calm = draw(st.integers(0, 2)) == 0

    def pick(good: Any, bad: st.SearchStrategy[Any]) -> Any:
        return good if calm or draw(st.booleans()) else draw(bad)

    content_types = st.sampled_from(CONTENT_TYPES)
    hostile_signature = not calm and draw(st.booleans())
    signature = _signature(draw, body) if hostile_signature else sign(body, WEBHOOK_SECRET)
    wanted = {
        "content-type": pick("application/json", content_types | latin1),
        "x-github-event": pick("issues", st.sampled_from(["push", "", " ", None]) | latin1),
        "x-github-delivery": pick(next(_guids), st.sampled_from(["", None]) | latin1),
        "x-hub-signature-256": pick(signature, st.none()),
        "content-length": pick(
            str(len(body)),
            st.sampled_from([None, str(MAX_PAYLOAD_BYTES + 1), "\xb2", "-1", "abc"]),
        ),
    }
    headers = [(k, v) for k, v in wanted.items() if v is not None]
    doubled = pick([], st.lists(st.sampled_from(sorted(webhooks.SINGLE_HEADERS)), max_size=2))
    for name in doubled:
        headers.append((name, draw(st.sampled_from([dict(headers).get(name, ""), "x"]))))
    headers += pick([], st.lists(st.tuples(token, latin1), max_size=3))
    headers = draw(st.permutations(headers))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]
    disconnect = pick(False, st.booleans())
    if disconnect:
        chunks = chunks[:-1]
    names = [name for name, _ in headers]
    declared = dict(headers).get("content-length")
    valid = (
        not disconnect
        and names.count("x-hub-signature-256") == 1
        and dict(headers)["x-hub-signature-256"].lower() == sign(body, WEBHOOK_SECRET)
        and all(names.count(name) <= 1 for name in webhooks.SINGLE_HEADERS)
        and not (declared and declared.isdecimal() and int(declared) > MAX_PAYLOAD_BYTES)
    )
    sent = dict(headers)
    wellformed = (
        valid
        and real
        and sent.get("content-type", "application/json").startswith(("application/json", "Appl"))
        and sent.get("x-github-event") in ("issues", "push")
        and sent.get("x-github-delivery", "").startswith("fuzz-")
    )
    return Generated(list(headers), body, chunks, disconnect, valid, wellformed)


@FUZZ
@given(generated=requests())
def test_every_generated_request_is_answered_2xx_only_when_validly_signed(
    rig: Rig, generated: Generated
) -> None:
    received = rig.core.counters["received"]
    answer = rig.post(generated.headers, generated.chunks, disconnect=generated.disconnect)
    status = answer.status_code
    event(f"answered {status}")  # --hypothesis-show-statistics gives the tally
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
        reason(answer)
        if generated.disconnect or dict(generated.headers).get("x-hub-signature-256") is None:
            assert status != 415 or "content type" in reason(answer)
    # The shard journals exactly the 202s: nothing refused reaches it.
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


@pytest.mark.parametrize("name", ["x-hub-signature-256", "x-github-event", "x-github-delivery"])
@pytest.mark.parametrize("valid_first", [True, False])
def test_a_header_github_sends_once_is_refused_when_doubled(
    rig: Rig, name: str, valid_first: bool
) -> None:
    """Two signatures (one valid) or two events: 400, whichever comes first."""
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
