"""Hostile input against the running ingress: Serve's HTTP proxy, the replica, the shards.

Requests go over a plain socket, so that headers come exactly as drawn (twice, in any
order) and a body without `Content-Length` goes chunked. The generated ones come from
`tests.hostile` (as in the Ray-free layer, with header values an HTTP server takes);
the named ones are the cases issue 15 lists. Afterwards the journal holds exactly the
deliveries answered 202, and the ingress still answers.
"""

from __future__ import annotations

import json
import select
import socket
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, Phase, event, given, settings

from actors.ray.admin import stats
from actors.runtime_events import installation_of
from ghbot.events import decode_envelope
from ghbot.journal import open_journal
from ghbot.webhooks import MAX_PAYLOAD_BYTES, sign
from tests.cluster.conftest import SECRET, eventually, payload, scrape_metrics
from tests.hostile import Generated, examples, printable, requests

#: Generated requests in one run (`GHBOT_FUZZ_EXAMPLES` for more).
EXAMPLES = examples(150)
BOT = "tests.cluster.bots:Echo"  # no handler for `issues`: journaled and completed at once
Answer = tuple[int, dict[str, Any]]


def real(installation: int) -> bytes:
    data = payload("issues.opened", installation=installation, repo="fuzz/target")
    return json.dumps(data).encode()


def exchange(
    port: int,
    headers: Sequence[tuple[str, str]],
    chunks: Sequence[bytes],
    *,
    disconnect: bool = False,
    timeout: float = 30.0,
) -> Answer | None:
    """Send one request over its own connection and return (status, JSON body).

    Without a `Content-Length` among `headers` the body goes chunked. `disconnect`:
    the body stops short and the socket is half-closed; None when no answer came.
    """
    chunked = "content-length" not in {name.lower() for name, _ in headers}
    head = "POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else ""
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head.encode("latin-1"))
            for chunk in chunks:
                if not chunked:
                    sock.sendall(chunk)
                elif chunk:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if disconnect:
                sock.shutdown(socket.SHUT_WR)
            elif chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed; the answer may still be there
        return parse(read_all(sock))


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while part := sock.recv(65536):
            data += part
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def parse(raw: bytes) -> Answer | None:
    """Return (status, JSON body) of an HTTP/1.1 answer; None for no answer at all."""
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert fields.get("content-type") == "application/json", (status_line, fields, body[:200])
    return int(status_line.split()[1]), json.loads(body[: int(fields["content-length"])])


def signed(body: bytes, guid: str, **changes: str | None) -> list[tuple[str, str]]:
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "User-Agent": "GitHub-Hookshot/fuzz",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": guid,
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": sign(body, SECRET),
        **{k.replace("_", "-"): v for k, v in changes.items()},
    }
    return [(k, v) for k, v in headers.items() if v is not None]


async def journaled(app: Any) -> set[tuple[int, str]]:
    """Return (installation, GUID) of every delivery the deployment's journal holds."""
    journal = await open_journal(app.runtime.settings.journal_url, shard_count=4)
    found: set[tuple[int, str]] = set()
    try:
        for vshard in range(4):
            for stream in await journal.list_streams(shard=vshard):
                for record in await journal.read(stream, shard=vshard):
                    if record.type == "DeliveryReceived" and record.delivery_guid:
                        found.add((installation_of(stream) or 0, record.delivery_guid))
    finally:
        await journal.close()
    return found


async def test_generated_and_named_hostile_requests_journal_only_what_was_validly_signed(
    deploy: Any,
) -> None:
    app = deploy(BOT)
    port = urlsplit(app.url).port or 80
    before = served()
    accepted: set[tuple[int, str]] = set()
    tally: dict[str, int] = {}

    def answered(kind: str, answer: Answer | None, body: bytes) -> int | None:
        status = None if answer is None else answer[0]
        tally[f"{kind} {status}"] = tally.get(f"{kind} {status}", 0) + 1
        if answer is None:
            return None
        assert status is not None and status < 500, answer
        if status in (200, 202):
            key = (decode_envelope(body).installation_id or 0, answer[1]["delivery"])
            assert (status == 200) == (key in accepted)
            accepted.add(key)
        else:
            assert status in {400, 401, 413, 415} and answer[1]["error"], answer
        return status

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),  # no shrinking against a live cluster
        suppress_health_check=list(HealthCheck),
    )
    @given(generated=requests(SECRET, real, text=printable, odd_lengths=False))
    def fuzz(generated: Generated) -> None:
        disconnect = generated.disconnect
        answer = exchange(port, generated.headers, generated.chunks, disconnect=disconnect)
        status = answered("generated", answer, generated.body)
        event(f"answered {status}")
        if status in (200, 202):
            assert generated.valid, generated
        if generated.wellformed:
            assert status in (200, 202), (answer, generated)
        if answer is None:  # only a sender that went away may get no answer
            assert generated.disconnect
        if status in (200, 202) and generated.replay:  # GitHub's redelivery: same GUID, body
            again = exchange(port, generated.headers, generated.chunks)
            assert answered("redelivered", again, generated.body) == 200

    fuzz()  # a blocking client in the test's loop: the cluster answers from its own processes

    # A replayed delivery: 202, then 200 duplicate, journaled once (checked below).
    body, guid = real(31), str(uuid.uuid4())
    assert answered("replay", exchange(port, signed(body, guid), [body]), body) == 202
    assert answered("replay", exchange(port, signed(body, guid), [body]), body) == 200

    # Two signatures (one valid, in either order), two events: 400.
    for name, other in [("X-Hub-Signature-256", "sha256=" + "0" * 64), ("X-GitHub-Event", "push")]:
        for valid_first in (True, False):
            headers = signed(body, str(uuid.uuid4()))
            headers = [*headers, (name, other)] if valid_first else [(name, other), *headers]
            assert answered("doubled", exchange(port, headers, [body]), body) == 400

    # GitHub's form encoding, signed as GitHub signs it: 415 with the fix in the reason.
    form = b"payload=" + body
    headers = signed(form, str(uuid.uuid4()), Content_Type="application/x-www-form-urlencoded")
    answer = exchange(port, headers, [form])
    assert answered("form", answer, form) == 415 and answer is not None
    assert "set the webhook's content type to application/json" in answer[1]["error"]

    # A signature over another body, a wrong prefix, a wrong length, none at all: 401.
    for signature in [
        sign(body + b" ", SECRET),
        "SHA256=" + sign(body, SECRET)[7:],
        sign(body, SECRET)[:-2],
        None,
    ]:
        headers = signed(body, str(uuid.uuid4()), X_Hub_Signature_256=signature)
        assert answered("signature", exchange(port, headers, [body]), body) == 401

    # Over the cap by Content-Length: 413 with no byte of the body sent.
    headers = signed(body, str(uuid.uuid4()), Content_Length=str(MAX_PAYLOAD_BYTES + 1))
    assert answered("declared", exchange(port, headers, [], timeout=15), body) == 413

    # Over the cap by a chunked body that never ends: 413 while it is still being sent.
    status = chunked_without_end(port, signed(body, str(uuid.uuid4()), Content_Length=None))
    tally[f"endless {status}"] = 1
    assert status == 413

    # The ingress still answers, and the journal holds exactly what was answered 202.
    body = real(32)
    assert answered("after", exchange(port, signed(body, str(uuid.uuid4())), [body]), body) == 202
    assert await journaled(app) == accepted
    # and the shards' own count (what `ghbot status` shows) agrees.
    assert sum(shard["received"] for shard in stats(app.runtime.namespace)) == len(accepted)
    print(f"ingress fuzz over HTTP: {sum(tally.values())} requests, {sorted(tally.items())}")

    # Serve's own count of what its proxy answered, once every request has reached it:
    # no 5xx, even for the senders that went away before an answer.
    sent = sum(tally.values())
    await eventually(lambda: sum(changed(before, served()).values()) >= sent, within=60)
    statuses = changed(before, served())
    print(f"Serve's proxy counted: {sorted(statuses.items())}")
    assert not [code for code in statuses if code.startswith("5")], statuses


def served() -> dict[str, float]:
    """Return Serve's HTTP requests to the `ghbot` application so far, by status code."""
    counts: dict[str, float] = {}
    for labels, value in scrape_metrics().get("ray_serve_num_http_requests_total", []):
        if labels.get("application") == "ghbot":
            code = labels.get("status_code", "?")
            counts[code] = counts.get(code, 0.0) + value
    return counts


def changed(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    grown = {code: n - before.get(code, 0.0) for code, n in after.items()}
    return {code: n for code, n in grown.items() if n > 0}


def chunked_without_end(port: int, headers: Sequence[tuple[str, str]]) -> int | None:
    """Send a chunked body of 1 MiB chunks without end; return the status answered.

    Fails if 64 MiB (over twice the cap) went out with no answer: the server would be
    reading the whole body first.
    """
    head = "POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    chunk = b"%x\r\n%s\r\n" % (2**20, b" " * 2**20)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1"))
        for _ in range(64):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            readable, _, _ = select.select([sock], [], [], 10)
            assert readable, "64 MiB sent and no answer: the body is read whole"
        answer = parse(read_all(sock))
    return None if answer is None else answer[0]
