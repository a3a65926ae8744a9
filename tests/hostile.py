"""Hostile requests to `POST /webhooks`, generated with hypothesis, for both fuzz layers.

`requests(secret, real)` draws a request as GitHub would send it, or with its body,
signature, content type, event, GUID, length or framing made hostile; each `Generated`
says whether it may be answered 2xx (`valid`) and whether it must be (`wellformed`).
The Ray-free layer (`tests/runtime/test_ingress_fuzz.py`) sends them as ASGI messages,
the cluster layer (`tests/cluster/test_ingress_fuzz.py`) over a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from ghbot.webhooks import MAX_PAYLOAD_BYTES, SINGLE_HEADERS, sign


def examples(default: int) -> int:
    """Return how many requests a fuzz test generates: `GHBOT_FUZZ_EXAMPLES`, else `default`.

    The defaults keep `make test` short; the full runs in docs/reliability.md set it.
    """
    return int(os.environ.get("GHBOT_FUZZ_EXAMPLES", default))


_guids = (f"fuzz-{n}-{uuid.uuid4()}" for n in itertools.count())
#: Header values: any latin-1 text (the ASGI layer takes any byte); `printable` for a
#: socket, where an HTTP server refuses control characters before ghbot sees them.
latin1 = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=80)
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=30)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
installation = st.integers(min_value=1, max_value=10_000)


BODY_KINDS = ("real", "json", "object", "binary", "latin1", "utf16", "form", "cut")


@st.composite
def bodies(draw: st.DrawFn, real: Callable[[int], bytes]) -> tuple[bool, bytes]:
    """A body: `real(installation)`, GitHub's payload (True); or JSON of any shape,
    garbage, not UTF-8, cut short, or form-encoded (False)."""
    kind = draw(st.sampled_from(BODY_KINDS))
    return kind == "real", _body(draw, kind, real(draw(installation)))


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
    if kind == "utf16":  # with its byte-order mark
        return real.decode().encode("utf-16")
    if kind == "form":  # what GitHub sends when the hook's content type is form
        return ("payload=" + urllib.parse.quote_plus(real.decode())).encode()
    return draw(st.binary(max_size=512))


@dataclass
class Generated:
    """One request: headers in order (duplicates kept), its body, and how it is sent."""

    headers: list[tuple[str, str]]
    body: bytes
    chunks: list[bytes]
    disconnect: bool
    #: Signed with the secret, once, over this very body, sent whole with the headers
    #: GitHub sends once each: what alone may be answered 2xx.
    valid: bool
    #: Valid, and a real payload with the headers GitHub sends: what must be a 2xx.
    wellformed: bool
    #: Send it a second time, as GitHub's redelivery does (same GUID, same body).
    replay: bool = False


SIGNATURE_KINDS = (
    *("good", "upper", "other-body", "other-secret", "sha1", "prefix"),
    *("short", "long", "text", "empty"),
)


def _signature(draw: st.DrawFn, body: bytes, secret: str, text: st.SearchStrategy[str]) -> str:
    good = sign(body, secret)
    kind = draw(st.sampled_from(SIGNATURE_KINDS))
    return {
        "good": good,
        "upper": "sha256=" + good[7:].upper(),  # the same digest: accepted
        "other-body": sign(body + b" ", secret),
        "other-secret": sign(body, "not-the-secret"),
        "sha1": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "prefix": draw(st.sampled_from(["SHA256=", "sha256:", "sha-256=", "", " sha256="]))
        + good[7:],
        "short": good[: draw(st.integers(0, len(good) - 1))],
        "long": good + draw(st.sampled_from(["0", "00", " x", "ab"])),
        "text": draw(text),
        "empty": "",
    }[kind]


def _same_signature(sent: str, good: str) -> bool:
    """Tell whether `sent` is `good`, but for the case of its hex digits (GitHub's prefix
    is lower-case and a case-changed prefix is refused; hex is hex in either case)."""
    return sent[:7] == good[:7] and sent[7:].lower() == good[7:]


CONTENT_TYPES = (
    *("application/json; charset=utf-8", "Application/JSON", None),
    *("application/x-www-form-urlencoded", "text/plain"),
)


@st.composite
def requests(
    draw: st.DrawFn,
    secret: str,
    real: Callable[[int], bytes],
    *,
    text: st.SearchStrategy[str] = latin1,
    odd_lengths: bool = True,
) -> Generated:
    """A request to `POST /webhooks`: GitHub's headers, each kept, changed, dropped or doubled.

    A third are calm (every header as GitHub sends it, only the body drawn); in the
    rest each header is hostile or not, at even odds. `text` draws hostile header
    values; `odd_lengths` adds a `Content-Length` that is not a number (a socket's
    HTTP server refuses those itself); a length over the cap is always drawn.
    """
    is_real, body = draw(bodies(real))
    calm = draw(st.integers(0, 2)) == 0

    def pick(good: Any, bad: st.SearchStrategy[Any]) -> Any:
        return good if calm or draw(st.booleans()) else draw(bad)

    content_types = st.sampled_from(CONTENT_TYPES)
    hostile_signature = not calm and draw(st.booleans())
    signature = _signature(draw, body, secret, text) if hostile_signature else sign(body, secret)
    lengths = [None, str(MAX_PAYLOAD_BYTES + 1)] + (["\xb2", "-1", "abc"] if odd_lengths else [])
    wanted = {
        "content-type": pick("application/json", content_types | text),
        "x-github-event": pick("issues", st.sampled_from(["push", "", " ", None]) | text),
        "x-github-delivery": pick(next(_guids), st.sampled_from(["", None]) | text),
        "x-hub-signature-256": pick(signature, st.none()),
        "content-length": pick(str(len(body)), st.sampled_from(lengths)),
    }
    headers = [(k, v) for k, v in wanted.items() if v is not None]
    doubled = pick([], st.lists(st.sampled_from(sorted(SINGLE_HEADERS)), max_size=2))
    for name in doubled:
        headers.append((name, draw(st.sampled_from([dict(headers).get(name, ""), "x"]))))
    headers += pick([], st.lists(st.tuples(token, text), max_size=3))
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
        and _same_signature(dict(headers)["x-hub-signature-256"], sign(body, secret))
        and all(names.count(name) <= 1 for name in SINGLE_HEADERS)
        and not (declared and declared.isdecimal() and int(declared) > MAX_PAYLOAD_BYTES)
    )
    sent = dict(headers)
    wellformed = (
        valid
        and is_real
        and sent.get("content-type", "application/json").startswith(("application/json", "Appl"))
        and sent.get("x-github-event") in ("issues", "push")
        and sent.get("x-github-delivery", "").startswith("fuzz-")
    )
    replay = draw(st.integers(0, 4)) == 0
    return Generated(list(headers), body, chunks, disconnect, valid, wellformed, replay)
