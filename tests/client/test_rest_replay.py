"""The typed REST methods against GitHub's recorded answers (tests/fixtures/api).

For each recorded exchange whose operation is in the description, the test calls the
generated method with the recorded request's parameters against a server replaying
that one exchange (`replay.Replay`, which checks the method, path, query, body, Accept
and authorization sent), then checks the decoded value against the recorded body.
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec
import pytest

from ghbot.client import ClientOptions, GitHub
from ghbot.rest import NAMESPACES, Namespace, Op
from ghbot.retry import RetryPolicy

from .replay import FIXTURES, JSON_TYPES, Replay, load

#: Recorded exchanges the typed surface does not cover, and why.
NOT_COVERED = {
    "GET /repos/octokit-fixture-org/git-refs/git/refs/": "listing /git/refs/ is no longer "
    "described (git/list-matching-refs took its place)",
    "GET /repos/octokit-fixture-org/hello-world/contents/README.md": "asks for the raw "
    "media type, which the typed method does not (use request() for it)",
}
#: Projects (classic) are gone from GitHub's API and from its description.
CLASSIC_PROJECTS = "/projects/columns/"


def _operations() -> list[tuple[str, str, Op, re.Pattern[str]]]:
    """Every generated operation: (namespace, method name, Op, path pattern)."""
    found = []
    for namespace in NAMESPACES:
        module = importlib.import_module(f"ghbot.rest.namespaces.{namespace}")
        for name, op in vars(module).items():
            if isinstance(op, Op):
                path = re.sub(r"^https://[^/]+", "", op.path)  # uploads: sent to the base
                pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]*)", re.escape(path))
                found.append((namespace, name[1:].lower(), op, re.compile(pattern + "$")))
    # A template with fewer parameters is the more specific match.
    return sorted(found, key=lambda f: f[2].path.count("{"))


OPERATIONS = _operations()


def _match(method: str, path: str) -> tuple[str, str, Op, dict[str, str]] | None:
    """The operation of a recorded request; a last parameter may hold `/` (`heads/x`)."""
    for slash in (False, True):
        # With `/` allowed, the longest template wins (not `/repos/{owner}/{repo}`).
        ordered = sorted(OPERATIONS, key=lambda o: -len(o[2].path)) if slash else OPERATIONS
        for namespace, name, op, pattern in ordered:
            if op.method != method:
                continue
            if slash:
                pattern = re.compile(pattern.pattern.replace("[^/]*)$", ".*)$"))
            found = pattern.match(path)
            if found:
                values = {k: unquote(v) for k, v in found.groupdict().items()}
                return namespace, name, op, values
    return None


def _exchanges() -> list[Any]:
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        for n, exchange in enumerate(load(path.name)):
            ident = f"{path.stem}-{n}"
            cases.append(pytest.param(exchange, id=ident))
    return cases


def _arguments(op: Op, exchange: dict[str, Any], in_path: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments that make the recorded request."""
    from_wire = {wire: name for name, wire in op.wire.items()}
    args: dict[str, Any] = {}
    for wire, value in in_path.items():
        args[from_wire.get(wire, wire)] = value
    for wire, value in parse_qsl(urlsplit(exchange["path"]).query):
        args[from_wire.get(wire, wire)] = value
    body = exchange.get("body", "")
    if op.whole_body and body not in ("", None):
        bytes_wanted = "octet" in (op.content_type or "")
        args[op.in_body[0]] = body.encode() if bytes_wanted else body
        args["content_type"] = exchange["reqheaders"]["content-type"]
    elif isinstance(body, dict):
        args.update({from_wire.get(k) or k: v for k, v in body.items()})
    return args


def _fits(decoded: Any, recorded: Any, where: str = "$") -> None:
    """Every value the typed answer holds is the recorded one (unknown fields dropped)."""
    if isinstance(decoded, dict):
        assert isinstance(recorded, dict), where
        for key, value in decoded.items():
            _fits(value, recorded.get(key), f"{where}.{key}")
    elif isinstance(decoded, list):
        assert isinstance(recorded, list) and len(recorded) == len(decoded), where
        for n, (a, b) in enumerate(zip(decoded, recorded, strict=True)):
            _fits(a, b, f"{where}[{n}]")
    else:
        assert decoded == recorded, f"{where}: {decoded!r} != {recorded!r}"


COVERED: list[str] = []


@pytest.mark.parametrize("exchange", _exchanges())
async def test_typed_method_replays_the_recorded_exchange(exchange: dict[str, Any]) -> None:
    method, path = exchange["method"].upper(), exchange["path"]
    label = f"{method} {urlsplit(path).path}"
    matched = _match(method, urlsplit(path).path)
    if CLASSIC_PROJECTS in label:
        assert matched is None
        pytest.skip("projects (classic) are no longer described")
    if label in NOT_COVERED or matched is None:
        assert label in NOT_COVERED, f"{label}: no operation matches and no reason is given"
        pytest.skip(NOT_COVERED[label])
    namespace, name, op, in_path = matched
    wanted = exchange["reqheaders"]
    if op.accept is None and wanted.get("accept") not in JSON_TYPES:
        pytest.fail(f"{label} asks for {wanted.get('accept')}: add it to NOT_COVERED")
    token = wanted["authorization"].split(" ", 1)[1]
    async with Replay([exchange]) as server:
        options = ClientOptions(
            base_url=server.url, etags=None, pace_writes=None, retry=RetryPolicy(max_retries=0)
        )
        gh = GitHub(token=token, options=options)
        space: Namespace = getattr(gh.rest, namespace)
        result = await getattr(space, name)(**_arguments(op, exchange, in_path))
        assert server.mismatches == []
        assert server.served == 1
    recorded = exchange["response"]
    COVERED.append(f"{namespace}.{name}")
    if op.returns is None or result is None:
        assert result is None and recorded in ("", None), "None only for an empty answer"
    elif op.returns is str:
        assert result == recorded
    else:
        _fits(msgspec.to_builtins(result), recorded)


def test_recorded_exchanges_cover_typed_methods() -> None:
    """The replays above reached this many distinct typed methods (run in one session)."""
    if not COVERED:
        pytest.skip("run with the replays")
    assert len(set(COVERED)) >= 20


def test_the_recorded_exchanges_replayed_are_36_of_48() -> None:
    """CHANGELOG's "36 of the 48": the exchanges of `tests/fixtures/api`, less those of
    projects (classic) and those `NOT_COVERED` names, which the replay test skips."""
    exchanges = [param.values[0] for param in _exchanges()]
    labels = [f"{e['method'].upper()} {urlsplit(e['path']).path}" for e in exchanges]
    replayed = [
        label for label in labels if CLASSIC_PROJECTS not in label and label not in NOT_COVERED
    ]
    assert (len(replayed), len(exchanges)) == (36, 48)
